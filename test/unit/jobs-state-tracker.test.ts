import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config';
import { JobError } from '../../src/jobs/errors';
import type { JobSnapshot } from '../../src/jobs/jobState';
import { jobEventsChannel, jobStateKey, parseJobEvents, readJobSnapshot } from '../../src/jobs/jobState';
import { estimatePercentile } from '../../src/jobs/metrics';
import { JobConsumer, type QueuedJob } from '../../src/jobs/consumer';
import { JobProducer } from '../../src/jobs/queues';
import { JOB_QUEUES } from '../../src/jobs/registry';
import { createJobHandler, type Processor, type Processors } from '../../src/jobs/runner';
import { JobStateTracker } from '../../src/jobs/stateTracker';
import { createLogger } from '../../src/logger';
import { REDIS_URL } from '../helpers/stack';

const prefix = `t${randomBytes(5).toString('hex')}`;
const log = createLogger('silent');
const limits = { timeLimitMs: 10_000, softTimeLimitMs: 9_000 };
const EXPIRES_S = 120;

/** A job as the consumer hands it to the wrapper. */
function fakeJob(id: string, opts: { retries?: number; failedTries?: number; kind?: string } = {}): QueuedJob {
  return {
    id,
    data: { kind: opts.kind ?? 'generateImage', payload: { generationId: id } },
    options: { retries: opts.retries ?? 0, stacktraces: Array.from({ length: opts.failedTries ?? 0 }, () => 'Error: earlier try') },
  } as QueuedJob;
}

const processorOf = (run: Processor<'generateImage'>['run']): Processors => ({
  generateImage: { run, onFinalFailure: async () => {} },
});

describe('job state tracking against real Redis', () => {
  let redis: Redis;
  let sub: Redis;
  const events: JobSnapshot[] = [];
  const messages: string[] = [];
  const opened: Array<{ close(): Promise<unknown> }> = [];

  beforeAll(async () => {
    redis = new Redis(REDIS_URL);
    sub = new Redis(REDIS_URL);
    sub.on('message', (_channel: string, message: string) => {
      messages.push(message);
      events.push(...parseJobEvents(message));
    });
    await sub.subscribe(jobEventsChannel(prefix));
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((o) => o.close()));
    events.length = 0;
    messages.length = 0;
  });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    sub.disconnect();
  });

  const tracker = (opts: { flushIntervalMs?: number; maxBatch?: number; redis?: Redis } = {}) => {
    const t = new JobStateTracker({ redis: opts.redis ?? redis, prefix, expiresS: EXPIRES_S, log, ...opts });
    opened.push(t);
    return t;
  };
  const eventsOf = (jobId: string) => events.filter((e) => e.jobId === jobId);
  const waitForEvents = async (jobId: string, n: number) => {
    for (let i = 0; i < 200 && eventsOf(jobId).length < n; i++) await new Promise((r) => setTimeout(r, 10));
    return eventsOf(jobId);
  };

  it('writes an expiring snapshot per job and publishes its states in order', async () => {
    const t = tracker({ flushIntervalMs: 1 });
    let release!: () => void;
    const running = new Promise<void>((resolve) => (release = resolve));
    const handler = createJobHandler(processorOf(() => running), limits, log, { sink: t, workerId: 'test:1' });
    const id = randomUUID();
    const done = handler.handle(fakeJob(id));

    // The start is written while the job is still running.
    await t.flush();
    const active = await readJobSnapshot(redis, prefix, id);
    expect(active).toMatchObject({ jobId: id, kind: 'generateImage', state: 'active', attempt: 1, finishedAt: null, worker: 'test:1' });
    release();
    await done;
    await t.flush();

    const final = await readJobSnapshot(redis, prefix, id);
    expect(final).toMatchObject({ jobId: id, state: 'succeeded', attempt: 1, errorCode: null, startedAt: active!.startedAt });
    expect(final!.finishedAt).toBeGreaterThanOrEqual(final!.startedAt);
    expect(final!.durationMs).toBeGreaterThanOrEqual(0);
    const ttl = await redis.ttl(jobStateKey(prefix, id));
    expect(ttl).toBeGreaterThan(EXPIRES_S - 5);
    expect(ttl).toBeLessThanOrEqual(EXPIRES_S);
    expect((await waitForEvents(id, 2)).map((e) => e.state)).toEqual(['active', 'succeeded']);
  });

  it('reads null for a job without a snapshot, or with something else under its key', async () => {
    expect(await readJobSnapshot(redis, prefix, randomUUID())).toBeNull();
    const id = randomUUID();
    await redis.set(jobStateKey(prefix, id), '{"not":"a snapshot"}', 'EX', 60);
    expect(await readJobSnapshot(redis, prefix, id)).toBeNull();
    expect(parseJobEvents('garbage')).toEqual([]);
  });

  it('records retrying and failed attempts with their error code and attempt number', async () => {
    const t = tracker({ flushIntervalMs: 1 });
    const handler = createJobHandler(
      processorOf(async () => {
        throw new JobError('SD_UNREACHABLE', 'down');
      }),
      limits,
      log,
      { sink: t },
    );
    const id = randomUUID();
    // A first try with a retry left: the consumer is told to retry it; recorded as retrying.
    expect(await handler.handle(fakeJob(id, { retries: 1 }))).toMatchObject({ end: 'retry', error: { code: 'SD_UNREACHABLE' } });
    await t.flush();
    expect(await readJobSnapshot(redis, prefix, id)).toMatchObject({ state: 'retrying', attempt: 1, errorCode: 'SD_UNREACHABLE' });
    // The second try, no retries left: failed for good.
    expect(await handler.handle(fakeJob(id, { retries: 0, failedTries: 1 }))).toMatchObject({ end: 'failed', error: { code: 'SD_UNREACHABLE' } });
    await t.flush();
    expect(await readJobSnapshot(redis, prefix, id)).toMatchObject({ state: 'failed', attempt: 2, errorCode: 'SD_UNREACHABLE' });
    // Each try failed at once, so its start and its end were written together, as the end.
    expect((await waitForEvents(id, 2)).map((e) => `${e.state}#${e.attempt}`)).toEqual(['retrying#1', 'failed#2']);

    const m = handler.metrics.snapshot();
    expect(m.active).toBe(0);
    expect(m.byKind.generateImage?.outcomes).toEqual({ succeeded: 0, failed: 1, retrying: 1 });
    expect(m.byKind.generateImage?.durations.count).toBe(2);
    expect(estimatePercentile(m.byKind.generateImage!.durations, 50)).not.toBeNull();
  });

  it('coalesces: a job that starts and ends within one batch is written once, many jobs in one pipeline', async () => {
    // No flush by time during the test (a busy machine could spread the jobs over two): only the explicit one.
    const t = tracker({ flushIntervalMs: 600_000 });
    const handler = createJobHandler(processorOf(async () => {}), limits, log, { sink: t });
    const ids = Array.from({ length: 100 }, () => randomUUID());
    await Promise.all(ids.map((id) => handler.handle(fakeJob(id))));
    expect(t.stats.written).toBe(0); // nothing is written on the jobs' path
    await t.flush();
    expect(t.stats).toMatchObject({ recorded: 200, written: 100, flushes: 1, lost: 0 });
    const stored = await redis.mget(ids.map((id) => jobStateKey(prefix, id)));
    expect(stored.every((s) => s !== null && (JSON.parse(s) as JobSnapshot).state === 'succeeded')).toBe(true);
    // One message for the whole batch, holding each job's last state only.
    await waitForEvents(ids[99]!, 1);
    expect(messages).toHaveLength(1);
    expect(events.map((e) => e.state)).toEqual(Array.from({ length: 100 }, () => 'succeeded'));
  });

  it('flushes at once when a batch is full, and by itself after the interval', async () => {
    const t = tracker({ flushIntervalMs: 60_000, maxBatch: 10 });
    const handler = createJobHandler(processorOf(async () => {}), limits, log, { sink: t });
    await Promise.all(Array.from({ length: 10 }, () => handler.handle(fakeJob(randomUUID()))));
    expect(t.stats.flushes).toBe(1);

    const timed = tracker({ flushIntervalMs: 5 });
    const id = randomUUID();
    await createJobHandler(processorOf(async () => {}), limits, log, { sink: timed }).handle(fakeJob(id));
    expect((await waitForEvents(id, 1)).map((e) => e.state)).toEqual(['succeeded']);
    expect(await readJobSnapshot(redis, prefix, id)).toMatchObject({ state: 'succeeded' });
  });

  it('a Redis error or a broken sink never fails a job', async () => {
    const dead = new Redis('redis://127.0.0.1:1', { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    dead.on('error', () => {});
    const warnings: unknown[] = [];
    const spyLog = createLogger('warn');
    spyLog.warn = ((obj: unknown) => void warnings.push(obj)) as typeof spyLog.warn;
    const t = new JobStateTracker({ redis: dead, prefix, expiresS: EXPIRES_S, log: spyLog, flushIntervalMs: 1 });
    const handler = createJobHandler(processorOf(async () => {}), limits, log, { sink: t });
    for (let i = 0; i < 3; i++) {
      await expect(handler.handle(fakeJob(randomUUID()))).resolves.toBeUndefined();
      await t.flush();
    }
    expect(handler.counters.succeeded).toBe(3);
    expect(t.stats.lost).toBe(3);
    expect(warnings).toHaveLength(1); // logged once per outage, not per flush
    await t.close();
    dead.disconnect();

    const throwing = createJobHandler(processorOf(async () => {}), limits, log, {
      sink: {
        record() {
          throw new Error('broken sink');
        },
      },
    });
    await expect(throwing.handle(fakeJob(randomUUID()))).resolves.toBeUndefined();
    expect(throwing.counters.succeeded).toBe(1);
  });

  it('counts tries through a real retry (producer, consumer, backoff)', async () => {
    const config = loadConfig({ REDIS_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent', TASK_MAX_RETRIES: '2', TASK_RETRY_DELAY_S: '0' });
    const t = tracker({ flushIntervalMs: 1 });
    let tries = 0;
    const handler = createJobHandler(
      processorOf(async () => {
        if (++tries === 1) throw new JobError('SD_SERVER_ERROR', 'flaky');
      }),
      limits,
      log,
      { sink: t },
    );
    const id = randomUUID();
    let succeeded!: () => void;
    const done = new Promise<void>((resolve) => (succeeded = resolve));
    const consumer = new JobConsumer({
      redis,
      prefix,
      queue: JOB_QUEUES.generateImage,
      concurrency: 1,
      stallIntervalMs: 5000,
      log,
      handler: handler.handle,
      onEnd: (_job, end) => end === 'succeeded' && succeeded(),
    });
    opened.push({ close: () => consumer.close(1000) });
    consumer.start();
    const producer = new JobProducer(config, log);
    opened.push(producer);
    await producer.enqueue('generateImage', id, { generationId: id });
    await done;
    await t.flush();
    expect(await readJobSnapshot(redis, prefix, id)).toMatchObject({ state: 'succeeded', attempt: 2 });
    // The retry may start within the flush window of the failure, replacing it: the states that
    // were published are in order, and the last one is the second try's success.
    for (let i = 0; i < 200 && eventsOf(id).at(-1)?.state !== 'succeeded'; i++) await new Promise((r) => setTimeout(r, 10));
    const seen = eventsOf(id).map((e) => `${e.state}#${e.attempt}`);
    const order = ['active#1', 'retrying#1', 'active#2', 'succeeded#2'];
    expect(seen.at(-1)).toBe('succeeded#2');
    expect(seen.map((s) => order.indexOf(s))).toEqual([...seen.map((s) => order.indexOf(s))].sort((a, b) => a - b));
    expect(seen.every((s) => order.includes(s))).toBe(true);
  });
});
