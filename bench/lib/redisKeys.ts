/** Key sweeps for bench scenarios: each measurement uses its own Redis prefix. */
import type { Redis } from 'ioredis';

/** Calls `each` with every batch of keys matching `pattern` (SCAN, so Redis is never blocked). */
async function scanKeys(redis: Redis, pattern: string, each: (keys: string[]) => Promise<unknown> | void): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await each(keys);
  } while (cursor !== '0');
}

export async function countKeys(redis: Redis, pattern: string): Promise<number> {
  let n = 0;
  await scanKeys(redis, pattern, (keys) => void (n += keys.length));
  return n;
}

export async function deleteKeys(redis: Redis, pattern: string): Promise<number> {
  let deleted = 0;
  await scanKeys(redis, pattern, async (keys) => (deleted += await redis.unlink(...keys)));
  return deleted;
}
