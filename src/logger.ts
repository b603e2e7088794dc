import { pino, type Logger } from 'pino';

export type { Logger };

/** One structured logger per process; children carry the component name. */
export function createLogger(level: string, name = 'sd-jobs'): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}
