/**
 * The one place that opens Redis connections (every ioredis client of the API and the worker is made
 * here or duplicated from one made here), so each one honours REDIS_SENTINELS and behaves as its
 * process needs while Redis is away:
 * - `request` (the API): a command waits at most REDIS_COMMAND_TIMEOUT_MS, and is failed after one
 *   reconnect attempt, so a request answers SERVICE_UNAVAILABLE in a second or two instead of
 *   waiting for Redis to come back (ioredis would otherwise queue it through 20 reconnects);
 * - `background` (workers, the API's pub/sub listener): commands wait across an outage or a failover
 *   and the connection reconnects by itself; the job consumer bounds its own calls (src/jobs/consumer.ts).
 *
 * With Sentinel, ioredis asks the sentinels for the primary on every (re)connect, checks that the
 * server it reached is a primary, and reconnects when a demoted primary answers a write with READONLY.
 */
import { createHash } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import type { Config } from './config';
import type { Logger } from './logger';

export type RedisSettings = Config['redis'];
export type RedisRole = 'request' | 'background';

/** Whether an error is a Redis write refused by a replica (a primary demoted by a failover). */
const isReadOnly = (err: Error) => err.message.startsWith('READONLY');

/** ioredis options for a connection of `role`, on the server or the Sentinel-managed primary of `settings`. */
export function redisOptions(settings: RedisSettings, role: RedisRole): RedisOptions {
  const options: RedisOptions =
    role === 'request'
      ? { maxRetriesPerRequest: 1, commandTimeout: settings.commandTimeoutMs, enableAutoPipelining: true }
      : { maxRetriesPerRequest: 20, enableAutoPipelining: true };
  // 2: reconnect and send the command again, on the primary the sentinels name now.
  options.reconnectOnError = (err) => (isReadOnly(err) ? 2 : false);
  if (settings.sentinels.length > 0) {
    options.sentinels = settings.sentinels.map(({ host, port }) => ({ host, port }));
    options.name = settings.sentinelName;
    // Not ioredis's failoverDetector: when it fires while a reconnect is asking the sentinels, that
    // connect fails with "Connection is closed" and the connection ends for good (seen in
    // test/faults/redis-sentinel.test.ts). A killed primary closes its connections anyway, and a
    // demoted one is left on its first READONLY (reconnectOnError above).
    // Asking the sentinels again is cheap; give up on none of them (a failover takes seconds).
    options.sentinelRetryStrategy = (times) => Math.min(times * 100, 1000);
    // Each sentinel gets this long to answer "who is the primary?" before the next is asked.
    options.sentinelCommandTimeout = 1000;
  }
  return options;
}

/**
 * Opens an ioredis connection with an error listener attached (an unhandled 'error' event would
 * crash the process) and a name that shows in CLIENT LIST. REDIS_URL gives the server, or with
 * REDIS_SENTINELS only the password, user and database; `options` override the role's.
 */
export function openRedis(settings: RedisSettings, name: string, log: Logger, role: RedisRole, options: RedisOptions = {}): Redis {
  const redis = new Redis(settings.url, { ...redisOptions(settings, role), connectionName: name, ...options });
  redis.on('error', (err: Error) => log.warn({ err: err.message, connection: name }, 'redis connection error'));
  return redis;
}

/** Closes a connection, falling back to disconnect when QUIT cannot be sent. */
export async function closeRedis(redis: Redis): Promise<void> {
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}

/** Messages of the errors ioredis fails a command with when Redis cannot be reached or does not answer in time. */
const UNREACHABLE = [/^Command timed out/, /^Reached the max retries per request limit/, /^Connection is closed/, /^Stream isn't writeable/, /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EPIPE/, /^All sentinels are unreachable/, /^READONLY/, /^LOADING/, /^MASTERDOWN/];

/**
 * Whether `err` (or an error in its cause chain) says Redis is unreachable, rather than that a
 * command was wrong: the edge answers SERVICE_UNAVAILABLE for those.
 */
export function isRedisUnavailable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; depth++) {
    if (e.name === 'MaxRetriesPerRequestError' || UNREACHABLE.some((re) => re.test(e instanceof Error ? e.message : ''))) return true;
    e = (e as { originalError?: unknown }).originalError ?? e.cause;
  }
  return false;
}

/**
 * A Lua script, sent as EVAL on its first use on a connection's socket (which loads it on that
 * server) and as EVALSHA after that, as ioredis's defineCommand does; so a reconnect, a restarted
 * Redis or a failover's new primary get the script first, in the order the calls were made. Should
 * the server have lost it anyway (SCRIPT FLUSH), the call that hears NOSCRIPT is sent again as EVAL,
 * after whatever was sent meanwhile. With `numberOfKeys` a call gives the keys then the arguments;
 * without it, the count of keys comes first.
 *
 * Not defineCommand itself: a command defined on a connection is missing from any auto-pipeline the
 * connection had already started, and a call that lands in one throws inside it, which leaves the
 * pipeline with fewer replies than callers and crashes the process with "results[i] is not
 * iterable" (seen in CI when a first /metrics scrape defined its script on the worker's busy
 * connection; ioredis issue 1931 is the same with rate-limiter-flexible). EVAL and EVALSHA are
 * ordinary commands, there on every connection and pipeline from the start.
 */
export class RedisScript<T> {
  private readonly sha: string;
  /** Sockets this script was sent on as EVAL. */
  private readonly loadedOn = new WeakSet<object>();

  constructor(
    private readonly lua: string,
    private readonly numberOfKeys?: number,
  ) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async run(redis: Redis, ...keysThenArgs: Array<string | number>): Promise<T> {
    const args = this.numberOfKeys === undefined ? keysThenArgs : [this.numberOfKeys, ...keysThenArgs];
    const [numKeys = 0, ...rest] = args;
    const socket: object | undefined = redis.stream;
    if (socket && !this.loadedOn.has(socket)) {
      this.loadedOn.add(socket);
      return (await redis.eval(this.lua, numKeys, ...rest)) as T;
    }
    try {
      return (await redis.evalsha(this.sha, numKeys, ...rest)) as T;
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return (await redis.eval(this.lua, numKeys, ...rest)) as T;
    }
  }
}
