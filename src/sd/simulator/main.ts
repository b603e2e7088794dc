/**
 * Runs the SD simulator as a process:
 *   tsx src/sd/simulator/main.ts --port 7860 --step-ms 50 [--host 127.0.0.1] [--auth user:pass] [--nowebui]
 * Only this entry listens and handles signals; `index.ts` is free of side effects.
 */
import { parseArgs } from 'node:util';
import { createSdSimulator } from './index';

function usage(problem: string): never {
  process.stderr.write(
    `${problem}\nusage: tsx src/sd/simulator/main.ts [--port 7860] [--host 127.0.0.1] [--step-ms 50] [--auth user:pass] [--nowebui]\n`,
  );
  process.exit(2);
}

function intArg(name: string, value: string | undefined, def: number, min: number, max: number): number {
  if (value === undefined) return def;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} must be an integer from ${min} to ${max}, got "${value}"`);
  return n;
}

const ARG_OPTIONS = {
  port: { type: 'string' },
  host: { type: 'string' },
  'step-ms': { type: 'string' },
  auth: { type: 'string' },
  nowebui: { type: 'boolean' },
} as const;

function readArgs() {
  try {
    return parseArgs({ options: ARG_OPTIONS }).values;
  } catch (err) {
    return usage(err instanceof Error ? err.message : String(err));
  }
}

async function main(): Promise<void> {
  const values = readArgs();
  const port = intArg('port', values.port, 7860, 0, 65535);
  const stepMs = intArg('step-ms', values['step-ms'], 50, 0, 60_000);
  let auth: { username: string; password: string } | undefined;
  if (values.auth !== undefined) {
    const sep = values.auth.indexOf(':');
    if (sep <= 0) usage('--auth must look like user:password');
    auth = { username: values.auth.slice(0, sep), password: values.auth.slice(sep + 1) };
  }

  const sim = createSdSimulator({ stepMs, auth, internalProgress: !values.nowebui });
  const url = await sim.listen(port, values.host ?? '127.0.0.1');
  process.stdout.write(`SD simulator listening on ${url} (step ${stepMs} ms${auth ? ', --api-auth' : ''}${values.nowebui ? ', --nowebui' : ''})\n`);

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    // A second signal means "now": don't wait for connections to drain.
    if (stopping) process.exit(1);
    stopping = true;
    process.stdout.write(`${signal}: closing the SD simulator\n`);
    sim.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`closing failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`SD simulator failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
