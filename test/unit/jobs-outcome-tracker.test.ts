import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config';
import { JobError } from '../../src/jobs/errors';
import { estimatePercentile } from '../../src/jobs/metrics';
import { JobConsumer, type QueuedJob } from '../../src/jobs/consumer';
import { JobOutcomeTracker } from '../../src/jobs/outcomeTracker';
import { JobProducer } from '../../src/jobs/queues';
import { epochMinute, MINUTE_TTL_S, outcomeMinuteKey, outcomeTotalsKey, readQueueStats } from '../../src/jobs/queueStats';
import { JOB_QUEUES, jobId } from '../../src/jobs/registry';
import { createJobHandler, type Processor, type Processors } from '../../src/jobs/runner';
import { createLogger } from '../../src/logger';
import { REDIS_URL } from '../helpers/stack';
import { until } from '../helpers/wait';

const log = createLogger('silent');
const limits = { timeLimitMs: 10_000, softTimeLimitMs: 9_000 };
const HIGH = JOB_QUEUES.generateImage;

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

describe('job outcome counting against real Redis', () => {
  let redis: Redis;
  /** Each test counts under a prefix of its own. */
  let prefix = '';
  const prefixes: string[] = [];
  const opened: Array<{ close(): Promise<unknown> }> = [];

  beforeAll(() => {
    redis = new Redis(REDIS_URL);
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((o) => o.close()));
  });
  afterAll(async () => {
    for (const p of prefixes) {
      const keys = await redis.keys(`${p}:*`);
      if (keys.length) await redis.del(...keys);
    }
    redis.disconnect();
  });
  const fresh = () => {
    prefix = `t${randomBytes(5).toString('hex')}`;
    prefixes.push(prefix);
    return prefix;
  };

  const tracker = (opts: { flushIntervalMs?: number; redis?: Redis } = {}) => {
    const t = new JobOutcomeTracker({ redis: opts.redis ?? redis, prefix: fresh(), log, ...opts });
    opened.push(t);
    return t;
  };
  const totals = async (queue: string = HIGH) => redis.hgetall(outcomeTotalsKey(prefix, queue));

  it("counts each job's end (not its start) in its queue's totals and this minute's hash, which expires", async () => {
    const t = tracker({ flushIntervalMs: 1 });
    let release!: () => void;
    const running = new Promise<void>((resolve) => (release = resolve));
    const handler = createJobHandler(processorOf(() => running), limits, log, { sink: t });
    const done = handler.handle(fakeJob(randomUUID()));
    await t.flush();
    expect(await totals()).toEqual({}); // a start is not counted
    release();
    await done;
    await t.flush();
    expect(await totals()).toEqual({ succeeded: '1' });
    const minute = outcomeMinuteKey(prefix, HIGH, epochMinute(Date.now()));
    const ttl = await redis.ttl(minute);
    // The flush may have landed in the minute before this one: either hash holds the count.
    if (ttl > 0) {
      expect(ttl).toBeLessThanOrEqual(MINUTE_TTL_S);
      expect(ttl).toBeGreaterThan(3600);
    }
    const [high] = await readQueueStats(redis, prefix, [HIGH]);
    expect(high).toMatchObject({ name: HIGH, succeeded: 1, failed: 0, succeededLastHour: 1, failedLastHour: 0, waiting: 0, oldestWaitingSeconds: 0 });
  });

  it('counts retrying and failed tries apart, in the queue of their kind', async () => {
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
    expect(await handler.handle(fakeJob(id, { retries: 1 }))).toMatchObject({ end: 'retry', error: { code: 'SD_UNREACHABLE' } });
    expect(await handler.handle(fakeJob(id, { retries: 0, failedTries: 1 }))).toMatchObject({ end: 'failed', error: { code: 'SD_UNREACHABLE' } });
    await t.flush();
    expect(await totals()).toEqual({ retrying: '1', failed: '1' });
    expect(await totals(JOB_QUEUES.uploadToCloud)).toEqual({});
    const [high] = await readQueueStats(redis, prefix, [HIGH]);
    expect(high).toMatchObject({ succeeded: 0, failed: 1, failedLastHour: 1 });

    const m = handler.metrics.snapshot();
    expect(m.active).toBe(0);
    expect(m.byKind.generateImage?.outcomes).toEqual({ succeeded: 0, failed: 1, retrying: 1 });
    expect(m.byKind.generateImage?.durations.count).toBe(2);
    expect(estimatePercentile(m.byKind.generateImage!.durations, 50)).not.toBeNull();
  });

  it('adds many ends with one call, nothing on the jobs\' path', async () => {
    // No flush by time during the test (a busy machine could spread the jobs over two): only the explicit one.
    const t = tracker({ flushIntervalMs: 600_000 });
    const handler = createJobHandler(processorOf(async () => {}), limits, log, { sink: t });
    await Promise.all(Array.from({ length: 100 }, () => handler.handle(fakeJob(randomUUID()))));
    expect(t.stats.flushes).toBe(0);
    await t.flush();
    expect(t.stats).toEqual({ recorded: 100, flushes: 1, lost: 0 });
    expect(await totals()).toEqual({ succeeded: '100' });
  });

  it('the last hour is the last 60 minutes: an older minute counts in the totals only', async () => {
    fresh();
    const now = Date.now();
    await redis.hset(outcomeTotalsKey(prefix, HIGH), { succeeded: 5, failed: 2 });
    await redis.hset(outcomeMinuteKey(prefix, HIGH, epochMinute(now) - 61), { succeeded: 3, failed: 1 });
    await redis.hset(outcomeMinuteKey(prefix, HIGH, epochMinute(now) - 59), { succeeded: 2, failed: 1 });
    const [high] = await readQueueStats(redis, prefix, [HIGH], now);
    expect(high).toMatchObject({ succeeded: 5, failed: 2, succeededLastHour: 2, failedLastHour: 1 });
  });

  it('reads the depth and how long the next job has waited', async () => {
    const p = fresh();
    const config = loadConfig({ REDIS_URL, REDIS_PREFIX: p, LOG_LEVEL: 'silent' });
    const producer = new JobProducer(config, log);
    opened.push(producer);
    const first = randomUUID();
    await producer.enqueue('generateImage', first, { generationId: first });
    const second = randomUUID();
    await producer.enqueue('generateImage', second, { generationId: second });
    const record = JSON.parse((await redis.hget(`${p}:${HIGH}:jobs`, jobId('generateImage', first)))!) as { options: { timestamp: number } };
    const at = record.options.timestamp + 90_000;
    const [high, normal] = await readQueueStats(redis, p, [HIGH, JOB_QUEUES.uploadToCloud], at);
    expect(high).toMatchObject({ waiting: 2, active: 0, delayed: 0 });
    // The first one enqueued is next in line; ninety seconds "later" it has waited about that long.
    expect(high!.oldestWaitingSeconds).toBeGreaterThanOrEqual(89);
    expect(high!.oldestWaitingSeconds).toBeLessThanOrEqual(90);
    expect(normal).toMatchObject({ waiting: 0, oldestWaitingSeconds: 0 });
  });

  it('a Redis error or a broken sink never fails a job', async () => {
    const dead = new Redis('redis://127.0.0.1:1', { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    dead.on('error', () => {});
    const warnings: unknown[] = [];
    const spyLog = createLogger('warn');
    spyLog.warn = ((obj: unknown) => void warnings.push(obj)) as typeof spyLog.warn;
    const t = new JobOutcomeTracker({ redis: dead, prefix: fresh(), log: spyLog, flushIntervalMs: 1 });
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

  it('counts the tries of a real retry (producer, consumer, backoff)', async () => {
    const t = tracker({ flushIntervalMs: 1 });
    const config = loadConfig({ REDIS_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent', TASK_MAX_RETRIES: '2', TASK_RETRY_DELAY_S: '0' });
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
    const consumer = new JobConsumer({ redis, prefix, queue: HIGH, concurrency: 1, stallIntervalMs: 5000, log, handler: handler.handle });
    opened.push({ close: () => consumer.close(1000) });
    consumer.start();
    const producer = new JobProducer(config, log);
    opened.push(producer);
    await producer.enqueue('generateImage', id, { generationId: id });
    await until(() => consumer.stats.succeeded === 1, 'the second try to succeed');
    expect(consumer.stats.retried).toBe(1);
    await t.flush();
    expect(await totals()).toEqual({ retrying: '1', succeeded: '1' });
  });
});
