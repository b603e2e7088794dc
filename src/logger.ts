/**
 * One structured (JSON) logger per process; children carry the component name. Two things are
 * added to every line without the code that logs having to pass them:
 * - the request id of the API request the line was written for (`req`), from an async context the
 *   HTTP server opens per request (`withRequestId`), so a service's line names its request too;
 * - nothing secret: credentials in known places (headers, passwords, tokens, secrets, connection
 *   URLs with a password) are replaced before the line is written.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

const requestContext = new AsyncLocalStorage<{ requestId: string }>();

/** Runs `fn` with `requestId` on every log line written within it (and what it awaits). */
export const withRequestId = <T>(requestId: string, fn: () => T): T => requestContext.run({ requestId }, fn);

/** Paths whose values never reach a log line, wherever an object with them is logged. */
export const REDACTED_PATHS = [
  'authorization',
  'headers.authorization',
  '*.authorization',
  '*.headers.authorization',
  'password',
  '*.password',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'smtpUrl',
  '*.smtpUrl',
  'secretAccessKey',
  '*.secretAccessKey',
];

export function createLogger(level: string, name = 'sd-jobs', destination?: DestinationStream): Logger {
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      mixin: () => {
        const context = requestContext.getStore();
        return context ? { req: context.requestId } : {};
      },
    },
    destination,
  );
}
