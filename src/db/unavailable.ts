/**
 * Which errors mean "Postgres cannot be reached right now" rather than "this request or this code is
 * wrong": the one list, read by the API's edges (SERVICE_UNAVAILABLE instead of a masked 500,
 * src/api/graphqlErrors.ts) and by the worker (its writes wait for Postgres to come back instead of
 * failing the job, and the job loop retries what was not waited for, src/jobs/errors.ts).
 *
 * An unavailable database shows up in several shapes, depending on where the connection broke:
 * - Node's own socket errors while connecting or on a live connection (ECONNREFUSED, ECONNRESET, …),
 *   sometimes as an AggregateError of one per address tried;
 * - node-postgres' plain Errors when the socket ends under a client ("Connection terminated
 *   unexpectedly", "Connection terminated due to connection timeout", "Client has encountered a
 *   connection error and is not queryable") or a connect gets no answer in time ("timeout expired");
 * - knex's KnexTimeoutError when no pooled connection could be had within DATABASE_ACQUIRE_TIMEOUT_MS;
 * - a server that answers but will not serve: SQLSTATE class 08 (connection exception), 53300
 *   (too many connections), 57P01–57P03 (shutting down, crashed, starting up).
 * A bug (a syntax error, a violated constraint, a TypeError) is none of these.
 */
import type { Logger } from '../logger';
import { sleep } from '../sleep';

const SOCKET_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
]);

/** SQLSTATEs of a server that is there but will not serve now. */
const UNAVAILABLE_SQLSTATE = /^(08[0-9A-Z]{3}|53300|57P0[123])$/;

/**
 * node-postgres' messages for a connection that broke or never came up (it gives them no code). knex
 * puts the statement before a query's error ("select 1 - Connection terminated unexpectedly"), so
 * each is matched at the start or after that " - ", never inside a statement's text.
 */
const CONNECTION_MESSAGE =
  /(?:^| - )(?:Connection terminated\b|Client has encountered a connection error and is not queryable|Client was closed and is not queryable|Query read timeout|timeout expired$)/;

/** How far down `cause` (and the wrappers' own fields) to look: errors are wrapped a few times at most. */
const MAX_DEPTH = 6;

/** True when `err` (or what it wraps) says Postgres cannot be reached or will not serve right now. */
export function isDatabaseUnavailable(err: unknown, depth = 0): boolean {
  if (!err || typeof err !== 'object' || depth > MAX_DEPTH) return false;
  const e = err as { name?: unknown; code?: unknown; message?: unknown; errors?: unknown; cause?: unknown; nativeError?: unknown; originalError?: unknown };
  // knex: no connection could be had from the pool in time.
  if (e.name === 'KnexTimeoutError') return true;
  if (typeof e.code === 'string' && (SOCKET_CODES.has(e.code) || UNAVAILABLE_SQLSTATE.test(e.code))) return true;
  if (typeof e.message === 'string' && CONNECTION_MESSAGE.test(e.message)) return true;
  // One socket error per address tried (localhost: ::1 and 127.0.0.1).
  if (Array.isArray(e.errors) && e.errors.length > 0 && e.errors.every((inner) => isDatabaseUnavailable(inner, depth + 1))) return true;
  // Objection's DBError keeps the driver's error as nativeError; graphql-js keeps a resolver's as originalError.
  return [e.cause, e.nativeError, e.originalError].some((inner) => inner !== undefined && isDatabaseUnavailable(inner, depth + 1));
}

export interface DatabaseRetryOptions {
  /** Stops the waiting (the job's hard limit, a cancel): the last error is thrown then. */
  signal?: AbortSignal;
  log: Logger;
  /** What is being written, for the log line ("stage the images"). */
  what: string;
  /** The pause before try `n + 1` (n from 0). Default 200 ms doubling to 5 s. */
  delayMs?: (n: number) => number;
}

const defaultDelayMs = (n: number) => Math.min(5000, 200 * 2 ** n);

/**
 * Runs `write` until Postgres answers it: a try that fails because the database is unavailable is
 * tried again after a growing pause (logged once when the outage begins and once when it ends), for
 * as long as `signal` allows; any other error is thrown at once. For the worker's steps that must not
 * be redone from the start (after the GPU has run, a job retry would call it again): `write` must be
 * safe to run twice, since a connection that drops as a commit goes through leaves its outcome
 * unknown to the caller.
 */
export async function untilDatabaseAnswers<T>(write: () => Promise<T>, opts: DatabaseRetryOptions): Promise<T> {
  const delayMs = opts.delayMs ?? defaultDelayMs;
  for (let n = 0; ; n++) {
    try {
      const result = await write();
      if (n > 0) opts.log.info({ tries: n + 1 }, `database answered again; ${opts.what}: done`);
      return result;
    } catch (err) {
      if (!isDatabaseUnavailable(err) || opts.signal?.aborted) throw err;
      if (n === 0) opts.log.warn({ err }, `database unavailable; ${opts.what}: waiting for it to come back`);
      await sleep(delayMs(n), opts.signal);
      if (opts.signal?.aborted) throw err;
    }
  }
}
