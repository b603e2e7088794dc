/**
 * RedisScript over a private redis-server (its scripts are flushed here, which the shared one's other
 * users must not see): the first call on a server that has never seen the script, and the first after
 * SCRIPT FLUSH, load it and answer; a call sent in the same tick as other commands on an auto-pipelined
 * connection (the case that broke defineCommand: a command defined after the connection's pipeline had
 * started) answers in the order sent, and so do the commands beside it; an error of the script itself
 * reaches the caller.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisScript } from '../../src/redis';
import { startRedis, stopRedis } from '../helpers/redisServer';
import { freePort } from '../helpers/stack';

const INCR_LUA = `return redis.call('INCRBY', KEYS[1], ARGV[1])`;
const INCR_BY = new RedisScript<number>(INCR_LUA, 1);
const loaded = async (redis: Redis, lua: string) => (await redis.script('EXISTS', createHash('sha1').update(lua).digest('hex'))) as number[];
/** The count of keys comes first. */
const SUM_OF = new RedisScript<number>(`local n = 0 for _, k in ipairs(KEYS) do n = n + tonumber(redis.call('GET', k) or 0) end return n`);
const FAILS = new RedisScript<number>(`return redis.error_reply('ERR refused by the script')`, 0);

describe('RedisScript', () => {
  let server: ChildProcess;
  let redis: Redis;
  beforeAll(async () => {
    const port = await freePort();
    server = await startRedis(port);
    redis = new Redis({ port, host: '127.0.0.1', enableAutoPipelining: true });
  });
  afterAll(async () => {
    redis?.disconnect();
    if (server) await stopRedis(server);
  });

  it('loads itself on a server that does not know it, with fixed and counted keys', async () => {
    expect(await loaded(redis, INCR_LUA)).toEqual([0]);
    expect(await INCR_BY.run(redis, 'a', 2)).toBe(2);
    expect(await loaded(redis, INCR_LUA)).toEqual([1]);
    expect(await INCR_BY.run(redis, 'a', 3)).toBe(5);
    await redis.set('b', '10');
    expect(await SUM_OF.run(redis, 2, 'a', 'b')).toBe(15);
    await redis.script('FLUSH');
    expect(await INCR_BY.run(redis, 'a', 1)).toBe(6);
  });

  it('answers inside an auto-pipeline that other commands started in the same tick, in the order sent', async () => {
    // A new connection: the script's first use on its socket is an EVAL, sent where the call was made.
    const fresh = redis.duplicate();
    try {
      await fresh.set('c', '1');
      // The GET starts the connection's pipeline; the script call joins it before it is sent.
      const [before, counted, after] = await Promise.all([fresh.get('c'), INCR_BY.run(fresh, 'c', 4), fresh.incr('c')]);
      expect([before, counted, after]).toEqual(['1', 5, 6]);
      // A server that lost its scripts meanwhile: the call is sent again, and every command answers.
      await fresh.script('FLUSH');
      const [got, added, other] = await Promise.all([fresh.get('c'), INCR_BY.run(fresh, 'd', 4), fresh.incr('e')]);
      expect([got, added, other]).toEqual(['6', 4, 1]);
      expect(await loaded(fresh, INCR_LUA)).toEqual([1]);
    } finally {
      fresh.disconnect();
    }
  });

  it('answers on a connection that connects on its first command (lazyConnect, no socket yet)', async () => {
    await redis.script('FLUSH');
    const lazy = redis.duplicate({ lazyConnect: true });
    try {
      expect(await INCR_BY.run(lazy, 'f', 7)).toBe(7);
      expect(await INCR_BY.run(lazy, 'f', 1)).toBe(8);
      expect(await loaded(lazy, INCR_LUA)).toEqual([1]);
    } finally {
      lazy.disconnect();
    }
  });

  it("passes the script's own error to the caller", async () => {
    await expect(FAILS.run(redis)).rejects.toThrow('refused by the script');
    // Loaded meanwhile (it ran), and it still fails the same way.
    await expect(FAILS.run(redis)).rejects.toThrow('refused by the script');
  });
});
