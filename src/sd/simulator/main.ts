/**
 * Runs the SD simulator as a process:
 *   npm run sd:simulator -- --port 7860 [--step-ms 500] [--host 127.0.0.1] [--auth user:pass] [--nowebui] [--ignore-task-id]
 * Only this entry listens and handles signals (like the service's entries); `index.ts` is free of side effects.
 */
import { createLogger } from '../../logger';
import { parseFlags } from '../../main/cli';
import { closeOnSignals } from '../../main/lifecycle';
import { createSdSimulator, DEFAULT_STEP_MS } from './index';

const USAGE = `usage: npm run sd:simulator -- [--port 7860] [--host 127.0.0.1] [--step-ms ${DEFAULT_STEP_MS}] [--auth user:pass] [--nowebui]

An AUTOMATIC1111-compatible server (txt2img, progress, interrupt, samplers) that draws test patterns.
--step-ms is the time per sampling step (${DEFAULT_STEP_MS} ms: a 20-step image takes ${(DEFAULT_STEP_MS * 20) / 1000} s, like a GPU).
--auth behaves like --api-auth; --nowebui hides /internal/progress like A1111's --nowebui.
--ignore-task-id (or SD_SIMULATOR_IGNORE_TASK_ID=true) behaves like SD.Next: /internal/progress never
knows a task id, only the global /sdapi/v1/progress shows the running job.`;

function usage(problem: string): never {
  process.stderr.write(`${problem}\n\n${USAGE}\n`);
  process.exit(2);
}

function intArg(name: string, value: string | undefined, def: number, min: number, max: number): number {
  if (value === undefined) return def;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} must be an integer from ${min} to ${max}, got "${value}"`);
  return n;
}

async function main(): Promise<void> {
  const values = parseFlags(USAGE, {
    port: { type: 'string' },
    host: { type: 'string' },
    'step-ms': { type: 'string' },
    auth: { type: 'string' },
    nowebui: { type: 'boolean' },
    'ignore-task-id': { type: 'boolean' },
  });
  const port = intArg('port', values.port, 7860, 0, 65535);
  const stepMs = intArg('step-ms', values['step-ms'], DEFAULT_STEP_MS, 0, 60_000);
  let auth: { username: string; password: string } | undefined;
  if (values.auth !== undefined) {
    const sep = values.auth.indexOf(':');
    if (sep <= 0) usage('--auth must look like user:password');
    auth = { username: values.auth.slice(0, sep), password: values.auth.slice(sep + 1) };
  }

  const envIgnore = process.env.SD_SIMULATOR_IGNORE_TASK_ID?.trim().toLowerCase() ?? '';
  if (envIgnore !== '' && !['true', 'false', '1', '0', 'yes', 'no'].includes(envIgnore)) usage('SD_SIMULATOR_IGNORE_TASK_ID must be true or false');
  const ignoreTaskId = values['ignore-task-id'] === true || ['true', '1', 'yes'].includes(envIgnore);
  const sim = createSdSimulator({ stepMs, auth, internalProgress: !values.nowebui, ignoreTaskId });
  const url = await sim.listen(port, values.host ?? '127.0.0.1');
  process.stdout.write(
    `SD simulator listening on ${url} (step ${stepMs} ms${auth ? ', --api-auth' : ''}${values.nowebui ? ', --nowebui' : ''}${ignoreTaskId ? ', ignores task ids' : ''})\n`,
  );

  closeOnSignals(() => sim.close(), createLogger(process.env.LOG_LEVEL ?? 'info', 'sd-simulator'));
}

main().catch((err: unknown) => {
  process.stderr.write(`SD simulator failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
