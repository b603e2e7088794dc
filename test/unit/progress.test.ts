import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger';
import type { ProgressEvent } from '../../src/progress/event';
import { progressChannel, progressKey } from '../../src/progress/event';
import { ProgressHub } from '../../src/progress/hub';
import { ProgressPublisher } from '../../src/progress/publisher';
import { progressStream } from '../../src/progress/stream';
import { openProgressRedis, progressUpdate, type ProgressRedis } from '../helpers/progress';

const prefix = `t${randomBytes(5).toString('hex')}`;
const log = createLogger('silent');

const update = progressUpdate;

describe('progress publishing and streaming against real Redis', () => {
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

  it('assigns seq, keeps progress from falling, stores an expiring snapshot and refuses anything after a terminal state', async () => {
    const id = randomUUID();
    const a = await publisher.publish(update(id, 'GENERATING', 0.5, { step: 10 }));
    const b = await publisher.publish(update(id, 'RETRYING', 0.1));
    expect(a).toMatchObject({ seq: 1, progress: 0.5, step: 10, generationId: id });
    expect(b).toMatchObject({ seq: 2, progress: 0.5, status: 'RETRYING' });
    expect(await redis.ttl(progressKey(prefix, id))).toBeGreaterThan(3500);
    const done = await publisher.publish(update(id, 'FAILED', 0.2, { error: { code: 'X', message: 'x', retryable: false } }));
    expect(done).toMatchObject({ seq: 3, status: 'FAILED', progress: 0.5 });
    expect(await publisher.publish(update(id, 'GENERATING', 0.9))).toBeNull();
    expect(await publisher.isFinal(id)).toBe(true);
    expect(await publisher.read(id)).toEqual(done);
  });

  it('publishes a queue position only while queued, and only when it changed', async () => {
    const id = randomUUID();
    expect(await publisher.publish(update(id, 'QUEUED', 0, { queuePosition: 3 }), { onlyIfQueued: true, dedupe: 'q3' })).not.toBeNull();
    expect(await publisher.publish(update(id, 'QUEUED', 0, { queuePosition: 3 }), { onlyIfQueued: true, dedupe: 'q3' })).toBeNull();
    expect(await publisher.publish(update(id, 'STARTED', 0))).not.toBeNull();
    expect(await publisher.publish(update(id, 'QUEUED', 0, { queuePosition: 1 }), { onlyIfQueued: true, dedupe: 'q1' })).toBeNull();
    expect((await publisher.read(id))?.status).toBe('STARTED');
  });

  it('a stream starts with the current state, drops stale and duplicate events, and still ends when the terminal message is lost', async () => {
    const id = randomUUID();
    await publisher.publish(update(id, 'GENERATING', 0.3, { step: 6 }));
    const stream = progressStream(id, {
      hub,
      readCurrent: () => publisher.read(id),
      resyncMs: 200,
      queuedTickMs: 1000,
      onError: (err) => {
        throw err;
      },
    });
    const seen: ProgressEvent[] = [];
    const consumed = (async () => {
      for await (const e of stream) seen.push(e);
    })();
    await expect.poll(() => seen.length).toBe(1);
    expect(seen[0]).toMatchObject({ seq: 1, step: 6 });
    await publisher.publish(update(id, 'GENERATING', 0.6, { step: 12 }));
    await expect.poll(() => seen.length).toBe(2);
    // Late and repeated messages (a second publisher, a retried publish) reach the channel: a copy of
    // seq 2, a stale seq 1, then a newer state whose progress fell. The stream drops the first two
    // and keeps progress from falling.
    const channel = progressChannel(prefix, id);
    await redis.publish(channel, JSON.stringify({ ...update(id, 'GENERATING', 0.6, { step: 12 }), seq: 2 }));
    await redis.publish(channel, JSON.stringify({ ...update(id, 'GENERATING', 0.3, { step: 6 }), seq: 1 }));
    await redis.publish(channel, JSON.stringify({ ...update(id, 'RETRYING', 0.1), seq: 3 }));
    await expect.poll(() => seen.length).toBe(3);
    // The terminal state lands in the snapshot, but its pub/sub message never reaches anyone.
    await redis.hset(progressKey(prefix, id), 'data', JSON.stringify({ ...update(id, 'SUCCEEDED', 1), seq: 4 }), 'final', '1');
    await consumed;
    expect(seen.map((e) => [e.seq, e.status, e.progress])).toEqual([
      [1, 'GENERATING', 0.3],
      [2, 'GENERATING', 0.6],
      [3, 'RETRYING', 0.6],
      [4, 'SUCCEEDED', 1],
    ]);
    expect(hub.channelCount).toBe(0);
  });

  it('many streams on one generation share one channel and each gets every event', async () => {
    const id = randomUUID();
    await publisher.publish(update(id, 'STARTED', 0));
    const streams = Array.from({ length: 50 }, () =>
      progressStream(id, { hub, readCurrent: () => publisher.read(id), resyncMs: 10_000, queuedTickMs: 10_000, onError: () => undefined }),
    );
    const results = streams.map(async (s) => {
      const got: number[] = [];
      for await (const e of s) got.push(e.seq);
      return got;
    });
    await expect.poll(() => hub.channelCount).toBe(1);
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 1; i <= 5; i++) await publisher.publish(update(id, 'GENERATING', i / 10, { step: i }));
    await publisher.publish(update(id, 'SUCCEEDED', 1));
    for (const got of await Promise.all(results)) expect(got).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(hub.channelCount).toBe(0);
  });
});
