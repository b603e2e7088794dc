/**
 * SdFleet against real Redis and SD simulators over HTTP: leases keep two fleets (two workers) off
 * one server, a lease another holder took is noticed and aborts its user, a server that stops
 * answering is out until its check passes.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sdServerList } from '../../src/config';
import { createLogger } from '../../src/logger';
import { SdClient } from '../../src/sd/client';
import { durationKey, QueueInfo } from '../../src/generation/queueInfo';
import { sdUpKey } from '../../src/jobs/presence';
import { SdFleet, sdLeaseKey, type SdFleetOptions, type SdServerLease } from '../../src/sd/fleet';
import { createSdSimulator, type SdSimulator } from '../../src/sd/simulator/index';
import { REDIS_URL } from '../helpers/stack';
import { until } from '../helpers/wait';

const log = createLogger('silent');
const prefix = `t${randomBytes(5).toString('hex')}`;
let redis: Redis;
const sims: SdSimulator[] = [];
const urls: string[] = [];
const fleets: SdFleet[] = [];

beforeAll(async () => {
  redis = new Redis(REDIS_URL);
  for (let i = 0; i < 2; i++) {
    const sim = createSdSimulator({ stepMs: 5 });
    sims.push(sim);
    urls.push(await sim.listen(0));
  }
});
afterEach(async () => {
  await Promise.all(fleets.splice(0).map((f) => f.close()));
});
afterAll(async () => {
  await Promise.all(sims.map((s) => s.close()));
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

async function fleet(over: Partial<SdFleetOptions> = {}, list = urls.join(',')): Promise<SdFleet> {
  const f = new SdFleet({
    servers: sdServerList(list, undefined),
    redis,
    prefix,
    leaseTtlMs: 15_000,
    checkIntervalMs: 50,
    waitPollMs: 20,
    checkTimeoutMs: 2000,
    client: (s) => new SdClient({ baseUrl: s.url, auth: s.auth, progressIntervalMs: 20 }),
    log,
    ...over,
  });
  fleets.push(f);
  await f.start();
  return f;
}

describe('SdFleet', () => {
  it('two fleets sharing one list never hold one server at once; a waiting job gets the server freed', async () => {
    const a = await fleet();
    const b = await fleet();
    const first = await a.acquire(AbortSignal.timeout(10_000));
    const second = await b.acquire(AbortSignal.timeout(10_000));
    expect(new Set([first.url, second.url]).size).toBe(2);
    expect(await redis.get(sdLeaseKey(prefix, first.url))).not.toBeNull();

    // Both servers are leased: a third and a fourth acquire wait, in line, whichever fleet asks.
    let third: SdServerLease | undefined;
    let fourth: SdServerLease | undefined;
    const thirdAt: number[] = [];
    const fourthAt: number[] = [];
    const pending3 = b.acquire(AbortSignal.timeout(30_000), { onWait: (p) => thirdAt.push(p) }).then((l) => (third = l));
    await until(() => thirdAt.length > 0, 'the third acquire to wait');
    const pending4 = b.acquire(AbortSignal.timeout(30_000), { onWait: (p) => fourthAt.push(p) }).then((l) => (fourth = l));
    await until(() => fourthAt.length > 0, 'the fourth acquire to wait');
    expect([thirdAt, fourthAt]).toEqual([[1], [2]]);
    expect(third ?? fourth).toBeUndefined();
    await first.release();
    // First come, first served: the third gets the freed server, the fourth moves up.
    await pending3;
    expect(third!.url).toBe(first.url);
    await until(() => fourthAt.at(-1) === 1, 'the fourth to be next in line');
    expect(fourth).toBeUndefined();
    expect(b.status().filter((s) => s.busy).map((s) => s.url).sort()).toEqual(urls.slice().sort());
    await second.release();
    await pending4;
    expect(fourth!.url).toBe(second.url);
    await Promise.all([third!.release(), fourth!.release()]);
    expect(await redis.get(sdLeaseKey(prefix, first.url))).toBeNull();
  });

  it('a lease another holder took is lost at its next renewal: its signal aborts and release leaves the other holder alone', async () => {
    const f = await fleet({ leaseTtlMs: 300 });
    const lease = await f.acquire(AbortSignal.timeout(10_000));
    const key = sdLeaseKey(prefix, lease.url);
    await redis.set(key, 'someone-else', 'PX', 60_000);
    await until(() => lease.signal.aborted, 'the lease to be noticed as lost');
    expect(lease.lost).toBe(true);
    await lease.release();
    expect(await redis.get(key)).toBe('someone-else');
    await redis.del(key);
  });

  it('keeps a lease while renewing it past its TTL', async () => {
    const ttl = 1500;
    const f = await fleet({ leaseTtlMs: ttl });
    const lease = await f.acquire(AbortSignal.timeout(10_000));
    const key = sdLeaseKey(prefix, lease.url);
    const token = await redis.get(key);
    // Each renewal (every third of the TTL) sets the remaining time back up: count them.
    let renewals = 0;
    let last = Number(await redis.pttl(key));
    await until(async () => {
      const now = Number(await redis.pttl(key));
      if (now > last) renewals++;
      last = now;
      return renewals >= 4;
    }, 'four renewals');
    expect(lease.lost).toBe(false);
    expect(await redis.get(key)).toBe(token);
    await lease.release();
    expect(await redis.get(key)).toBeNull();
  });

  it('a server that stops answering is out until its check passes, then back in use', async () => {
    const extra = createSdSimulator({ stepMs: 5 });
    const url = await extra.listen(0);
    const port = Number(new URL(url).port);
    const f = await fleet({}, url);
    expect(f.status()).toMatchObject([{ url, state: 'up', busy: false }]);
    await extra.close();
    await until(() => f.status()[0]!.state === 'down', 'the check to take it out');
    expect(f.status()[0]!.error).toBeTruthy();
    expect(f.upCount()).toBe(0);
    const back = createSdSimulator({ stepMs: 5 });
    await back.listen(port);
    try {
      await until(() => f.status()[0]!.state === 'up', 'the check to put it back');
      const lease = await f.acquire(AbortSignal.timeout(10_000));
      expect(lease.url).toBe(url);
      await lease.release();
    } finally {
      await back.close();
    }
  });

  it('refuses a bad list with a clear error', () => {
    expect(() => sdServerList('http://a:1,ftp://b', undefined)).toThrow(/ftp:\/\/ is not http/);
    expect(() => sdServerList('http://a:1,http://a:1/', undefined)).toThrow(/listed twice/);
    expect(sdServerList(' http://u:p%40ss@a:1/ , http://b:2', { username: 'x', password: 'y' })).toEqual([
      { url: 'http://a:1', auth: { username: 'u', password: 'p@ss' } },
      { url: 'http://b:2', auth: { username: 'x', password: 'y' } },
    ]);
  });
});

describe('a lease after an abandoned call', () => {
  const request = { prompt: 'an abandoned cat', negativePrompt: '', width: 64, height: 64, steps: 40, cfgScale: 7, sampler: 'Euler a', seed: 1, batchSize: 1 };

  it('is handed on only once the server shows no job: a server whose job cannot be interrupted is not shared', async () => {
    // Like SD.Next: no task id is known, so the interrupt after the abort finds nothing to stop and
    // the server runs the abandoned job to its end (40 steps of 25 ms).
    const sim = createSdSimulator({ stepMs: 25, ignoreTaskId: true });
    const url = await sim.listen(0);
    try {
      const a = await fleet({}, url);
      const b = await fleet({}, url);
      const lease = await a.acquire(AbortSignal.timeout(10_000));
      const abort = new AbortController();
      const call = lease.client.txt2img(request, { taskId: 'abandoned', signal: abort.signal }).catch((err: unknown) => err);
      await until(async () => !(await lease.client.isIdle()), 'the server to run the job');
      abort.abort();
      expect(await call).toMatchObject({ code: 'SD_ABORTED' });
      const releasing = lease.releaseWhenIdle();
      const next = await b.acquire(AbortSignal.timeout(20_000));
      // The other worker got the server only when the abandoned job had ended there.
      expect(await next.client.isIdle()).toBe(true);
      expect(sim.stats.maxConcurrentRunning).toBe(1);
      await releasing;
      await next.release();
    } finally {
      await sim.close();
    }
  });

  it('runs out by itself, not released, when the server cannot be read after the call', async () => {
    const sim = createSdSimulator({ stepMs: 25, ignoreTaskId: true });
    const url = await sim.listen(0);
    const a = await fleet({ leaseTtlMs: 3000 }, url);
    const lease = await a.acquire(AbortSignal.timeout(10_000));
    const call = lease.client.txt2img(request, { taskId: 'cut' }).catch((err: unknown) => err);
    await until(async () => !(await lease.client.isIdle()), 'the server to run the job');
    await sim.close();
    expect(await call).toMatchObject({ code: expect.stringMatching(/^SD_/) });
    await lease.releaseWhenIdle();
    // Whether the server still runs it is unknown: the key stays until its TTL, and so does the mark here.
    expect(await redis.pttl(sdLeaseKey(prefix, url))).toBeGreaterThan(0);
    expect(a.status()[0]!.busy).toBe(true);
    await until(async () => (await redis.exists(sdLeaseKey(prefix, url))) === 0 && !a.status()[0]!.busy, 'the lease to run out');
  });
});

describe('the queue ETA with several SD servers', () => {
  it('moves the line as many generations at a time as servers are announced up', async () => {
    const waiting = `${prefix}:bq:high_priority:waiting`;
    // Bee-Queue LPUSHes: j1 was first, so it is next to start.
    await redis.lpush(waiting, 'j1', 'j2', 'j3', 'j4', 'j5', 'j6', 'j7');
    await redis.set(durationKey(prefix), '10');
    const info = new QueueInfo(redis, waiting, prefix);
    const ids = ['j1', 'j2', 'j3', 'j4', 'j7', 'gone'];
    const eta = async () => (await info.positions(ids)).map((p) => p && [p.position, p.etaSeconds]);
    // None announced: one at a time.
    expect(await eta()).toEqual([[1, 10], [2, 20], [3, 30], [4, 40], [7, 70], null]);
    const fresh = Date.now() + 60_000;
    await redis.zadd(sdUpKey(prefix), fresh, 'http://a', fresh, 'http://b', fresh, 'http://c', Date.now() - 1, 'http://expired');
    expect(await eta()).toEqual([[1, 10], [2, 10], [3, 10], [4, 20], [7, 30], null]);
  });
});
