/**
 * One structured (JSON) logger per process; children carry the component name. Lines are JSON
 * (`LOG_FORMAT=json`, the default: what log collectors read), or, with `LOG_FORMAT=pretty` (`npm run
 * dev`'s default), coloured lines for a person at a terminal, written by pino-pretty. Two things are
 * added to every line without the code that logs having to pass them:
 * - the request id of the API request the line was written for (`req`), from an async context the
 *   HTTP server opens per request (`withRequestId`), so a service's line names its request too;
 * - nothing secret: credentials in known places (headers, passwords, tokens, secrets, connection
 *   URLs with a password) are replaced before the line is written.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

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

/**
 * A destination that writes each JSON line as pino-pretty formats it, or undefined when pino-pretty
 * is not installed: it is a dev dependency, absent from a production install (`npm ci --omit=dev`,
 * the Docker image), where the caller falls back to JSON rather than fail to start.
 *
 * pino-pretty's formatter is used synchronously in this thread (`prettyFactory`), not as its
 * transport stream: a line is written before `log.info()` returns, so it keeps its place among the
 * lines dev prints itself and none is lost when the process exits right after logging.
 */
function prettyDestination(destination: DestinationStream | undefined): DestinationStream | undefined {
  let pretty: typeof import('pino-pretty');
  try {
    pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return undefined;
    throw err;
  }
  const format = pretty.prettyFactory({
    // Colour where the terminal shows it (colorette's test: a TTY, NO_COLOR and FORCE_COLOR respected).
    colorize: pretty.isColorSupported,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
  });
  const out = destination ?? process.stdout;
  return { write: (line: string) => void out.write(format(line)) };
}

export function createLogger(level: string, name = 'sd-jobs', destination?: DestinationStream, format: LogFormat = 'json'): Logger {
  const pretty = format === 'pretty' ? prettyDestination(destination) : undefined;
  const log = pino(
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
    pretty ?? destination,
  );
  if (format === 'pretty' && !pretty) {
    log.warn('LOG_FORMAT=pretty, but pino-pretty is not installed (an install without the dev dependencies): writing JSON lines');
  }
  return log;
}
