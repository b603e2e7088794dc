/**
 * Flags of the command-line entries (`npm run dev`, `api`, `worker`, the scripts): every entry
 * answers `--help` with its usage and exit code 0, and an unknown or malformed flag with the problem,
 * the usage and exit code 2, before it touches Redis, Postgres or the network.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;
const HELP = { help: { type: 'boolean', short: 'h' } } as const;

export function parseFlags<O extends Options>(usage: string, options: O, args: string[] = process.argv.slice(2)) {
  const text = usage.endsWith('\n') ? usage : `${usage}\n`;
  const config = { args, options: { ...options, ...HELP }, strict: true, allowPositionals: false } as const;
  let parsed: ReturnType<typeof parseArgs<typeof config>>;
  try {
    parsed = parseArgs(config);
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n\n${text}`);
    process.exit(2);
  }
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(text);
    process.exit(0);
  }
  return parsed.values;
}
