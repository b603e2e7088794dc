/**
 * The README says Bee-Queue's own `process()` and our consumer (src/jobs/consumer.ts) can share
 * queues. This holds them to it, on one queue in real Redis: jobs from the producer are taken by
 * either and run once; a job one of them retries is retried by the other with one retry less and
 * its failure recorded; a job held by a dead worker of either kind is re-queued by the other's stall
 * check and runs there. Our producer (src/jobs/queues.ts) writes the record Bee-Queue's own
 * createJob().save() writes, and Bee-Queue's process() runs what it adds.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config';
import { JobConsumer, type QueuedJob } from '../../src/jobs/consumer';
import { createQueue, JobProducer, type Queue } from '../../src/jobs/queues';
import { createLogger } from '../../src/logger';
import { REDIS_URL } from '../helpers/stack';
import { until } from '../helpers/wait';

const log = createLogger('silent');
const QUEUE = 'high_priority';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


interface Run {
  by: 'bee' | 'ours';
  id: string;
  retries: number | undefined;
  traces: number;
}

describe("Bee-Queue's process() and our consumer on one queue", () => {
  let prefix: string;
  let config: Config;
  let redis: Redis;
  let producer: JobProducer;
  let runs: Run[];
  const beeQueues: Queue[] = [];
  const ours: JobConsumer[] = [];

  beforeEach(() => {
    prefix = `t${randomBytes(5).toString('hex')}`;
    config = loadConfig({ REDIS_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent', TASK_MAX_RETRIES: '2', TASK_RETRY_DELAY_S: '0.2', STALL_INTERVAL_MS: '1000' });
    redis = new Redis(REDIS_URL);
    producer = new JobProducer(config, log);
    runs = [];
  });
  afterEach(async () => {
    await Promise.all(ours.splice(0).map((c) => c.close(500)));
    await Promise.all(beeQueues.splice(0).map((q) => q.close(500).catch(() => undefined)));
    await producer.close();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  });

  const record = (by: Run['by'], job: { id: string; options: QueuedJob['options'] }) =>
    runs.push({ by, id: job.id, retries: job.options.retries, traces: job.options.stacktraces?.length ?? 0 });

  /** Bee-Queue's own worker with `handler`. */
  async function bee(handler: (job: QueuedJob) => Promise<unknown>, concurrency = 1): Promise<Queue> {
    const q = createQueue(config, QUEUE, { worker: true });
    q.on('error', () => undefined);
    beeQueues.push(q);
    await q.ready();
    q.process(concurrency, async (job) => {
      record('bee', job as unknown as QueuedJob);
      return handler(job as unknown as QueuedJob);
    });
    return q;
  }

  function consumer(handler: (job: QueuedJob) => Promise<unknown>, concurrency = 1): JobConsumer {
    const c = new JobConsumer({
      redis,
      prefix,
      queue: QUEUE,
      concurrency,
      stallIntervalMs: config.worker.stallIntervalMs,
      log,
      handler: async (job) => {
        record('ours', job);
        return handler(job);
      },
    });
    ours.push(c);
    c.start();
    return c;
  }

  const enqueue = async (n: number) => {
    const ids = Array.from({ length: n }, () => randomUUID());
    for (const id of ids) await producer.enqueue('generateImage', id, { generationId: id });
    return ids;
  };

  it('runs every job of the producer once, whichever of the two takes it', async () => {
    await bee(() => sleep(15), 2);
    consumer(() => sleep(15), 2);
    const ids = await enqueue(40);
    await until(() => runs.length >= 40, 'every job');
    await sleep(300);
    expect(runs.map((r) => r.id).sort()).toEqual([...ids].sort());
    expect(new Set(runs.map((r) => r.by))).toEqual(new Set(['bee', 'ours']));
    await until(async () => (await redis.hlen(`${prefix}:${QUEUE}:jobs`)) === 0, 'no record left');
  });

  it("stores a job as Bee-Queue's own createJob().save() does, and Bee-Queue's process() runs it", async () => {
    const [ours] = await enqueue(1);
    // The same job made by Bee-Queue itself, with the options the producer sets.
    const beeSide = createQueue(config, QUEUE, { worker: false });
    beeSide.on('error', () => undefined);
    beeQueues.push(beeSide);
    const theirs = randomUUID();
    await beeSide
      .createJob({ kind: 'generateImage', payload: { generationId: theirs } })
      .setId(theirs)
      .timeout(config.worker.timeLimitMs + 30_000)
      .retries(config.worker.maxRetries)
      .backoff('fixed', config.worker.retryDelayMs)
      .save();
    const [mine, bees] = (await redis.hmget(`${prefix}:${QUEUE}:jobs`, ours!, theirs)).map((raw) => JSON.parse(raw!) as { options: { timestamp: number } });
    const withoutTime = (r: { options: { timestamp: number } }) => ({ ...r, options: { ...r.options, timestamp: typeof r.options.timestamp } });
    expect(withoutTime(mine!)).toEqual({ ...withoutTime(bees!), data: { kind: 'generateImage', payload: { generationId: ours } } });
    expect(await redis.lrange(`${prefix}:${QUEUE}:waiting`, 0, -1)).toEqual([theirs, ours]);
    // Bee-Queue's own worker takes both, with the data and options each was stored with.
    const seen = new Map<string, QueuedJob>();
    await bee(async (job) => {
      seen.set(job.id, job);
    });
    await until(() => seen.size === 2, "Bee-Queue's process() to run both jobs");
    expect(seen.get(ours!)!.data).toEqual({ kind: 'generateImage', payload: { generationId: ours } });
    expect(seen.get(ours!)!.options).toMatchObject({ retries: 2, backoff: { strategy: 'fixed', delay: 200 }, timeout: config.worker.timeLimitMs + 30_000 });
    await until(async () => (await redis.hlen(`${prefix}:${QUEUE}:jobs`)) === 0, 'no record left');
  });

  it('refuses a second job of an id that is still queued, and replaces one that ended and is only kept', async () => {
    const [id] = await enqueue(1);
    expect(await producer.enqueue('generateImage', id!, { generationId: id! })).toBe(false);
    expect(await redis.llen(`${prefix}:${QUEUE}:waiting`)).toBe(1);
    // What a consumer keeping ended jobs leaves (QUEUE_KEEP_SUCCEEDED): the record, in `succeeded`.
    await redis.multi().lrem(`${prefix}:${QUEUE}:waiting`, 0, id!).sadd(`${prefix}:${QUEUE}:succeeded`, id!).zadd(`${prefix}:${QUEUE}:succeededAt`, Date.now(), id!).exec();
    expect(await producer.enqueue('generateImage', id!, { generationId: id! })).toBe(true);
    expect(await redis.sismember(`${prefix}:${QUEUE}:succeeded`, id!)).toBe(0);
    expect(await redis.zcard(`${prefix}:${QUEUE}:succeededAt`)).toBe(0);
    expect(await redis.lrange(`${prefix}:${QUEUE}:waiting`, 0, -1)).toEqual([id]);
    expect(JSON.parse((await redis.hget(`${prefix}:${QUEUE}:jobs`, id!))!)).toMatchObject({ status: 'created', data: { payload: { generationId: id } } });
  });

  it.each([
    ['Bee-Queue fails it, our consumer retries it', 'bee', 'ours'],
    ['our consumer fails it, Bee-Queue retries it', 'ours', 'bee'],
  ] as const)('%s, with one retry less and the failure recorded', async (_name, first, second) => {
    const failOnce = async () => {
      throw new Error('transient');
    };
    if (first === 'bee') await bee(failOnce);
    else consumer(failOnce);
    const [id] = await enqueue(1);
    await until(() => runs.length === 1, 'the first try');
    // The first one stops; the retry waits in the delayed set for whoever takes it.
    if (first === 'bee') await beeQueues.splice(0)[0]!.close(1000);
    else await ours.splice(0)[0]!.close(1000);
    await until(async () => (await redis.zcard(`${prefix}:${QUEUE}:delayed`)) === 1 || (await redis.llen(`${prefix}:${QUEUE}:waiting`)) === 1, 'the retry to be stored');
    if (second === 'bee') await bee(async () => {});
    else consumer(async () => {});
    await until(() => runs.length === 2, 'the retry');
    expect(runs).toEqual([
      { by: first, id, retries: 2, traces: 0 },
      { by: second, id, retries: 1, traces: 1 },
    ]);
    await until(async () => (await redis.hlen(`${prefix}:${QUEUE}:jobs`)) === 0, 'the job to end');
  });

  it.each([
    ['a dead Bee-Queue worker is re-queued by our stall check', 'bee', 'ours'],
    ['a dead consumer of ours is re-queued by Bee-Queue\'s stall check', 'ours', 'bee'],
  ] as const)('the job of %s, and runs there', { timeout: 60_000 }, async (_name, dies, rescues) => {
    const forever = () => new Promise<void>(() => undefined);
    if (dies === 'bee') await bee(forever);
    else consumer(forever);
    const [id] = await enqueue(1);
    await until(() => runs.length === 1, 'the doomed worker to take the job');
    // "Dies": stops vouching for the job and never ends it (the close gives up on it at once).
    if (dies === 'bee') await beeQueues.splice(0)[0]!.close(1).catch(() => undefined);
    else await ours.splice(0)[0]!.close(0);
    if (rescues === 'bee') {
      const q = await bee(async () => {});
      // Bee-Queue checks for stalled jobs at start, and again whenever asked.
      const timer = setInterval(() => void q.checkStalledJobs().catch(() => undefined), 500);
      try {
        await until(() => runs.length === 2, 'the rescue');
      } finally {
        clearInterval(timer);
      }
    } else {
      consumer(async () => {});
      await until(() => runs.length === 2, 'the rescue');
    }
    expect(runs.map((r) => [r.by, r.id])).toEqual([
      [dies, id],
      [rescues, id],
    ]);
    await until(async () => (await redis.hlen(`${prefix}:${QUEUE}:jobs`)) === 0, 'the job to end');
  });
});
