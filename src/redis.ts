import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from './logger';

/**
 * Opens an ioredis connection with an error listener attached (an unhandled 'error' event would
 * crash the process) and a name that shows in CLIENT LIST.
 */
export function openRedis(url: string, name: string, log: Logger, options: RedisOptions = {}): Redis {
  const redis = new Redis(url, { connectionName: name, maxRetriesPerRequest: 20, enableAutoPipelining: true, ...options });
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
