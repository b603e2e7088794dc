/**
 * The stream's machinery against real Redis: the shared resync scheduler (quiet streams checked in
 * one batch, queue ticks once per generation), the hub's flush barrier, and the iterator's edges.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger';
import type { ProgressEvent } from '../../src/progress/event';
import { progressChannel, progressKey } from '../../src/progress/event';
import { ProgressHub } from '../../src/progress/hub';
import { ProgressPublisher } from '../../src/progress/publisher';
import { progressStream, type ProgressStreamSource } from '../../src/progress/stream';
import { WAIT_MS } from '../helpers/budgets';
import { openProgressRedis, progressUpdate, type ProgressRedis } from '../helpers/progress';

const prefix = `t${randomBytes(5).toString('hex')}`;
const log = createLogger('silent');

const update = progressUpdate;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('progress stream machinery against real Redis', () => {
  let redis: Redis;
  let sub: Redis;
  let publisher: ProgressPublisher;
  let hub: ProgressHub;
  let fixture: ProgressRedis;
  beforeAll(() => {
    fixture = openProgressRedis(prefix, log);
    ({ redis, sub, publisher, hub } = fixture);
  });
  afterAll(() => fixture.close());

  /** A source that counts what the streams ask of it. */
  function countingSource(overrides: Partial<ProgressStreamSource> = {}) {
    const counts = { reads: 0, seqCalls: 0, seqKeys: 0, ticks: [] as string[] };
    const source: ProgressStreamSource = {
      hub,
      resyncMs: 150,
      queuedTickMs: 10_000,
      readCurrent: (id) => {
        counts.reads++;
        return publisher.read(id);
      },
      readSeqs: (ids) => {
        counts.seqCalls++;
        counts.seqKeys += ids.length;
        return publisher.readSeqs(ids);
      },
      onError: (err) => {
        throw err;
      },
      ...overrides,
    };
    return { source, counts };
  }

  function collect(stream: AsyncIterable<ProgressEvent>) {
    const seen: ProgressEvent[] = [];
    const done = (async () => {
      for await (const e of stream) seen.push(e);
    })();
    return { seen, done };
  }

  it('reads the seq of many snapshots in one call, null where there is none', async () => {
    const a = randomUUID();
    const b = randomUUID();
    await publisher.publish(update(a, 'STARTED', 0));
    await publisher.publish(update(a, 'GENERATING', 0.1));
    expect(await publisher.readSeqs([a, b, a])).toEqual([2, null, 2]);
    expect(await publisher.readSeqs([])).toEqual([]);
  });

  it('checks quiet streams with one batched seq read, re-reads only a newer snapshot, and sends it', async () => {
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    for (const id of ids) await publisher.publish(update(id, 'GENERATING', 0.2, { step: 4 }));
    const { source, counts } = countingSource();
    const streams = ids.map((id) => collect(progressStream(id, source)));
    await expect.poll(() => streams.every((s) => s.seen.length === 1)).toBe(true);
    expect(counts.reads).toBe(3); // the first state of each
    // Quiet: the scheduler checks all three in batched calls, without reading their state.
    await expect.poll(() => counts.seqKeys, { timeout: WAIT_MS }).toBeGreaterThanOrEqual(3);
    expect(counts.reads).toBe(3);
    // A state that lands in the snapshot without its message: found by the check, then sent.
    await redis.hset(progressKey(prefix, ids[1]!), 'seq', '2', 'data', JSON.stringify({ ...update(ids[1]!, 'SUCCEEDED', 1), seq: 2 }), 'final', '1');
    await streams[1]!.done;
    expect(streams[1]!.seen.map((e) => [e.seq, e.status])).toEqual([
      [1, 'GENERATING'],
      [2, 'SUCCEEDED'],
    ]);
    expect(counts.reads).toBe(4);
    for (const id of [ids[0]!, ids[2]!]) await publisher.publish(update(id, 'SUCCEEDED', 1));
    await Promise.all(streams.map((s) => s.done));
    expect(hub.channelCount).toBe(0);
  });

  it('a stream in steady traffic is never re-read', async () => {
    const id = randomUUID();
    await publisher.publish(update(id, 'GENERATING', 0.1, { step: 1 }));
    // Events every ~60 ms against a 2 s quiet threshold: wide enough for a loaded machine.
    const { source, counts } = countingSource({ resyncMs: 2000 });
    const { seen, done } = collect(progressStream(id, source));
    await expect.poll(() => seen.length).toBe(1);
    for (let step = 2; step <= 10; step++) {
      await sleep(60);
      await publisher.publish(update(id, 'GENERATING', step / 20, { step }));
    }
    await publisher.publish(update(id, 'SUCCEEDED', 1));
    await done;
    expect(seen.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(counts.reads).toBe(1);
    expect(counts.seqCalls).toBe(0);
  });

  it('ticks a queued generation once per period however many streams watch it, and stops once it started', async () => {
    const id = randomUUID();
    await publisher.publish(update(id, 'QUEUED', 0, { queuePosition: 2 }));
    const ticks: number[] = [];
    const { source } = countingSource({
      resyncMs: 10_000,
      queuedTickMs: 100,
      onQueuedTick: async (latest) => {
        expect(latest.generationId).toBe(id);
        ticks.push(performance.now());
      },
    });
    const opened = performance.now();
    const streams = Array.from({ length: 5 }, () => collect(progressStream(id, source)));
    await expect.poll(() => streams.every((s) => s.seen.length === 1), { timeout: WAIT_MS }).toBe(true);
    await expect.poll(() => ticks.length, { timeout: WAIT_MS }).toBeGreaterThanOrEqual(4);
    // At most one tick per 100 ms period since the streams opened (plus the first, shared), measured
    // against the time that really passed: a tick per stream would be five times as many.
    const periods = (performance.now() - opened) / 100;
    expect(ticks.length).toBeLessThanOrEqual(Math.ceil(periods) + 2);
    await publisher.publish(update(id, 'STARTED', 0));
    await expect.poll(() => streams.every((s) => s.seen.length === 2)).toBe(true);
    const atStart = ticks.length;
    await sleep(300);
    expect(ticks.length).toBe(atStart);
    await publisher.publish(update(id, 'CANCELLED', 0));
    await Promise.all(streams.map((s) => s.done));
  });

  it('flush resolves only after the messages Redis sent before it were dispatched', async () => {
    const id = randomUUID();
    const got: number[] = [];
    const listener = { generationId: id, onProgress: (e: ProgressEvent) => got.push(e.seq) };
    await hub.add(listener);
    for (let seq = 1; seq <= 50; seq++) {
      await redis.publish(progressChannel(prefix, id), JSON.stringify({ ...update(id, 'GENERATING', 0), seq }));
    }
    await hub.flush(5000);
    expect(got).toHaveLength(50);
    hub.remove(listener);
    expect(hub.channelCount).toBe(0);
  });

  it('return() before or while starting cleans up, and a failed first read rejects next()', async () => {
    const id = randomUUID();
    await publisher.publish(update(id, 'GENERATING', 0.1));
    const { source } = countingSource();
    const unused = progressStream(id, source);
    expect(await unused.return()).toEqual({ done: true, value: undefined });
    expect(await unused.next()).toEqual({ done: true, value: undefined });

    const early = progressStream(id, source);
    const pending = early.next();
    await early.return();
    expect(await pending).toEqual({ done: true, value: undefined });
    await sleep(50);
    expect(hub.channelCount).toBe(0);

    const broken = progressStream(id, { ...source, readCurrent: () => Promise.reject(new Error('read failed')) });
    await expect(broken.next()).rejects.toThrow('read failed');
    expect(await broken.next()).toEqual({ done: true, value: undefined });
    expect(hub.channelCount).toBe(0);
  });

  it('events a slow consumer has not pulled yet are kept in order, terminal last', async () => {
    const id = randomUUID();
    await publisher.publish(update(id, 'STARTED', 0));
    const { source } = countingSource();
    const stream = progressStream(id, source);
    expect((await stream.next()).value).toMatchObject({ seq: 1, status: 'STARTED' });
    for (let step = 1; step <= 3; step++) await publisher.publish(update(id, 'GENERATING', step / 10, { step }));
    await publisher.publish(update(id, 'SUCCEEDED', 1));
    await hub.flush(5000);
    const rest: Array<[number, string]> = [];
    for await (const e of stream) rest.push([e.seq, e.status]);
    expect(rest).toEqual([
      [2, 'GENERATING'],
      [3, 'GENERATING'],
      [4, 'GENERATING'],
      [5, 'SUCCEEDED'],
    ]);
    expect(hub.channelCount).toBe(0);
  });
});
