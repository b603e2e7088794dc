/**
 * The job consumer against real Redis, fed by the real producer (Bee-Queue's addJob): every job runs
 * once, concurrency holds, retries wait their backoff, a dead worker's job comes back and a live
 * one's does not, shutdown drains, and bad records cannot stop the loop.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config';
import { JobConsumer, queueKeys, type JobConsumerOptions, type JobEnd, type QueuedJob } from '../../src/jobs/consumer';
import type { JobSnapshot } from '../../src/jobs/jobState';
import { luaScript } from '../../src/jobs/luaScripts';
import { createJobHandler } from '../../src/jobs/runner';
import { JobProducer } from '../../src/jobs/queues';
import { createLogger } from '../../src/logger';
import { WAIT_MS } from '../helpers/budgets';
import { REDIS_URL } from '../helpers/stack';
import { until } from '../helpers/wait';

const log = createLogger('silent');
const QUEUE = 'high_priority';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


describe('job consumer on Bee-Queue keys, against real Redis', () => {
  let redis: Redis;
  let prefix: string;
  let config: Config;
  let producer: JobProducer;
  const opened: JobConsumer[] = [];
  const key = (name: string) => `${prefix}:${QUEUE}:${name}`;

  const consumer = (opts: Partial<JobConsumerOptions> & Pick<JobConsumerOptions, 'handler'>) => {
    const c = new JobConsumer({ redis, prefix, queue: QUEUE, concurrency: 1, stallIntervalMs: 5000, log, ...opts });
    opened.push(c);
    c.start();
    return c;
  };
  const enqueue = (generationId: string) => producer.enqueue('generateImage', generationId, { generationId });

  beforeAll(() => {
    redis = new Redis(REDIS_URL, { enableAutoPipelining: true });
  });
  beforeEach(() => {
    prefix = `t${randomBytes(5).toString('hex')}`;
    // 4 tries, 200 ms apart: short enough for a test, long enough to see the wait.
    config = loadConfig({ REDIS_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent', TASK_MAX_RETRIES: '3', TASK_RETRY_DELAY_S: '0.2' });
    producer = new JobProducer(config, log);
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((c) => c.close(1000)));
    await producer.close();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
  });
  afterAll(() => redis.disconnect());

  it('runs every job once, never more at a time than its concurrency, and leaves nothing behind', async () => {
    const ids = Array.from({ length: 300 }, () => randomUUID());
    for (const id of ids) await enqueue(id);
    const seen: string[] = [];
    const ends: JobEnd[] = [];
    let running = 0;
    let most = 0;
    const c = consumer({
      concurrency: 7,
      handler: async (job) => {
        running++;
        most = Math.max(most, running);
        seen.push((job.data.payload as { generationId: string }).generationId);
        await sleep(Math.random() * 3);
        running--;
      },
      onEnd: (_job, end) => ends.push(end),
    });
    await until(() => ends.length >= ids.length, 'every job to end');
    await sleep(50);
    expect(new Set(seen).size).toBe(ids.length);
    expect(seen).toHaveLength(ids.length);
    expect(most).toBe(7);
    expect(ends.every((e) => e === 'succeeded')).toBe(true);
    // Batched: far fewer calls than jobs.
    expect(c.stats.calls).toBeLessThan(ids.length);
    expect(await redis.hlen(key('jobs'))).toBe(0);
    expect(await redis.llen(key('active'))).toBe(0);
    expect(await redis.llen(key('waiting'))).toBe(0);
  });

  it('wakes up for a job added while it waits, without polling', async () => {
    let started = 0;
    await enqueue(randomUUID()); // connects the producer and loads its script
    // A blocking wait far longer than the test may take: the second job can only start if the
    // consumer wakes for it, and a consumer that polled instead would show in its call count.
    const c = consumer({ concurrency: 2, blockTimeoutS: 3600, handler: async () => void started++ });
    await until(() => started === 1, 'the first job');
    await sleep(100);
    const calls = c.stats.calls;
    await sleep(2500); // the queue is empty: the consumer is in its blocking wait
    expect(c.stats.calls).toBe(calls);
    await enqueue(randomUUID());
    await until(() => started === 2, 'the job to start', 60_000);
  });

  it('retries a failing job after its backoff with one retry less and the failure recorded, then succeeds', async () => {
    const id = randomUUID();
    await enqueue(id);
    const tries: Array<{ at: number; retries: number | undefined; traces: number }> = [];
    const ends: JobEnd[] = [];
    consumer({
      handler: async (job: QueuedJob) => {
        tries.push({ at: Date.now(), retries: job.options.retries, traces: job.options.stacktraces?.length ?? -1 });
        if (tries.length < 3) throw new Error(`flaky ${tries.length}`);
      },
      onEnd: (_job, end) => ends.push(end),
    });
    await until(() => ends.length === 3, 'three ends');
    expect(ends).toEqual(['retrying', 'retrying', 'succeeded']);
    expect(tries.map((t) => t.retries)).toEqual([3, 2, 1]);
    expect(tries.map((t) => t.traces)).toEqual([0, 1, 2]);
    // TASK_RETRY_DELAY_S=0.2, timers aside.
    expect(tries[1]!.at - tries[0]!.at).toBeGreaterThanOrEqual(190);
    expect(tries[2]!.at - tries[1]!.at).toBeGreaterThanOrEqual(190);
    expect(await redis.hlen(key('jobs'))).toBe(0);
    expect(await redis.zcard(key('delayed'))).toBe(0);
  });

  it("carries out the handler's verdict: failed means no retry, however many are left; retry means retry", async () => {
    const doomed = randomUUID();
    const flaky = randomUUID();
    await enqueue(doomed);
    await enqueue(flaky);
    const ends = new Map<string, JobEnd[]>();
    const runs = new Map<string, number>();
    const c = consumer({
      concurrency: 2,
      handler: async (job: QueuedJob) => {
        const id = (job.data.payload as { generationId: string }).generationId;
        runs.set(id, (runs.get(id) ?? 0) + 1);
        if (id === doomed) return { end: 'failed', error: new Error('permanent') };
        return runs.get(id) === 1 ? { end: 'retry', error: new Error('transient') } : undefined;
      },
      onEnd: (job, end) => ends.set(job.id, [...(ends.get(job.id) ?? []), end]),
    });
    await until(() => ends.get(doomed)?.length === 1 && ends.get(flaky)?.length === 2, 'both jobs to end');
    expect(ends.get(doomed)).toEqual(['failed']);
    expect(ends.get(flaky)).toEqual(['retrying', 'succeeded']);
    expect(runs.get(doomed)).toBe(1);
    expect(c.stats).toMatchObject({ failed: 1, retried: 1, succeeded: 1 });
    expect(await redis.hlen(key('jobs'))).toBe(0);
  });

  it('saves a running job\'s options to its record, and not once the job is over', async () => {
    const id = randomUUID();
    await enqueue(id);
    let saved: boolean | undefined;
    let stored: { options: { finalFailure?: unknown } } | undefined;
    let job: QueuedJob | undefined;
    consumer({
      handler: async (j: QueuedJob) => {
        job = j;
        j.options.finalFailure = { code: 'X', message: 'remembered', retryable: false };
        saved = await j.saveOptions?.();
        stored = JSON.parse((await redis.hget(key('jobs'), id))!) as typeof stored;
      },
    });
    await until(() => stored !== undefined, 'the save');
    expect(saved).toBe(true);
    expect(stored!.options.finalFailure).toEqual({ code: 'X', message: 'remembered', retryable: false });
    await until(async () => (await redis.hlen(key('jobs'))) === 0, 'the job to end');
    expect(await job!.saveOptions?.()).toBe(false);
    expect(await redis.hlen(key('jobs'))).toBe(0);
  });

  it('leaves an abandoned job in active without an end, for a stall check to re-deliver as stored', async () => {
    const id = randomUUID();
    await enqueue(id);
    const seen: Array<QueuedJob['options']> = [];
    const ends: JobEnd[] = [];
    consumer({
      stallIntervalMs: 300,
      handler: async (job: QueuedJob) => {
        seen.push(structuredClone(job.options));
        if (seen.length > 1) return undefined;
        job.options.finalFailure = { code: 'X', message: 'to record', retryable: false };
        await job.saveOptions?.();
        return { end: 'abandon', error: new Error('could not record') };
      },
      onEnd: (_job, end) => ends.push(end),
    });
    await until(() => ends.length === 1, 'the re-delivered copy to end');
    expect(ends).toEqual(['succeeded']);
    expect(seen).toHaveLength(2);
    expect(seen[1]!.finalFailure).toEqual({ code: 'X', message: 'to record', retryable: false });
    expect(await redis.hlen(key('jobs'))).toBe(0);
  });

  it('aborts the jobs\' stopping signal when close() stops waiting for them', async () => {
    const id = randomUUID();
    await enqueue(id);
    let signal: AbortSignal | undefined;
    const c = consumer({ handler: (job: QueuedJob) => ((signal = job.stopping), new Promise(() => {})) });
    await until(() => signal !== undefined, 'the job to start');
    expect(signal!.aborted).toBe(false);
    await c.close(50);
    expect(signal!.aborted).toBe(true);
  });

  it('fails a job for good when its retries are spent, and removes it', async () => {
    const id = randomUUID();
    await enqueue(id);
    const ends: JobEnd[] = [];
    consumer({ handler: async () => Promise.reject(new Error('always')), onEnd: (_job, end) => ends.push(end) });
    await until(() => ends.length === 4, 'four tries');
    expect(ends).toEqual(['retrying', 'retrying', 'retrying', 'failed']);
    await sleep(400);
    expect(ends).toHaveLength(4);
    expect(await redis.hexists(key('jobs'), id)).toBe(0);
  });

  it("re-delivers the job of a worker that died, but never the job of a live worker that runs long", async () => {
    // A "dead worker" took a job and vanished: it sits in active and nobody vouches for it.
    const dead = randomUUID();
    await enqueue(dead);
    expect(await redis.rpoplpush(key('waiting'), key('active'))).toBe(dead);
    // A live consumer runs a long job across several stall intervals.
    const live = randomUUID();
    const runs = new Map<string, number>();
    let release!: () => void;
    const longJob = new Promise<void>((resolve) => (release = resolve));
    const handler = async (job: QueuedJob) => {
      const gid = (job.data.payload as { generationId: string }).generationId;
      runs.set(gid, (runs.get(gid) ?? 0) + 1);
      if (gid === live) await longJob;
    };
    // 2 s: well above the event-loop pauses of a busy test machine, which must not look like death.
    consumer({ stallIntervalMs: 2000, handler });
    await enqueue(live);
    await until(() => runs.get(live) === 1, 'the long job to start');
    const other = consumer({ stallIntervalMs: 2000, handler });
    await until(() => runs.get(dead) === 1, 'the dead worker\'s job to be re-delivered', WAIT_MS);
    await sleep(6000); // three stall intervals
    expect(runs.get(live)).toBe(1);
    expect(runs.get(dead)).toBe(1);
    release();
    await until(async () => (await redis.hlen(key('jobs'))) === 0, 'both jobs to be done');
    expect(opened[0]!.stats.requeued + other.stats.requeued).toBe(1);
  });

  it('on close lets a running job finish and writes its end; past the timeout it leaves the job for another worker', async () => {
    const quick = randomUUID();
    await enqueue(quick);
    const ends: string[] = [];
    let started!: () => void;
    const isRunning = new Promise<void>((resolve) => (started = resolve));
    const c = consumer({
      stallIntervalMs: 200,
      handler: async () => {
        started();
        await sleep(300);
      },
      onEnd: (job) => ends.push(job.id),
    });
    await isRunning;
    await c.close(5000);
    expect(ends).toEqual([quick]);
    expect(await redis.hlen(key('jobs'))).toBe(0);

    // A job that outlives the shutdown timeout stays active; another worker's stall check runs it again.
    const stuck = randomUUID();
    await enqueue(stuck);
    const runs: string[] = [];
    let stuckStarted!: () => void;
    const stuckRunning = new Promise<void>((resolve) => (stuckStarted = resolve));
    const first = consumer({ stallIntervalMs: 200, handler: () => (stuckStarted(), new Promise(() => {})) });
    await stuckRunning;
    await first.close(100);
    expect(await redis.lrange(key('active'), 0, -1)).toEqual([stuck]);
    consumer({ stallIntervalMs: 200, handler: async (job) => void runs.push(job.id) });
    await until(() => runs.length === 1, 'the stuck job to run again', WAIT_MS);
    expect(runs).toEqual([stuck]);
  });

  it('fails a job that ignores its timeout (the safety net) for good, and keeps its slot until its handler returns', async () => {
    const stuck = randomUUID();
    const next = randomUUID();
    const record = (id: string, options: object) => JSON.stringify({ data: { kind: 'generateImage', payload: { generationId: id } }, options, status: 'created' });
    await redis.hset(key('jobs'), stuck, record(stuck, { retries: 3, timeout: 150, stacktraces: [] }));
    await redis.hset(key('jobs'), next, record(next, { retries: 0 }));
    await redis.lpush(key('waiting'), stuck, next);
    const ends: Array<[string, JobEnd]> = [];
    const started: string[] = [];
    let release!: () => void;
    const stuckHandler = new Promise<void>((resolve) => (release = resolve));
    consumer({
      stallIntervalMs: 200,
      handler: (job) => {
        started.push(job.id);
        return job.id === stuck ? stuckHandler : Promise.resolve();
      },
      onEnd: (job, end) => ends.push([job.id, end]),
    });
    await until(() => ends.length >= 1, 'the safety net', WAIT_MS);
    expect(ends).toEqual([[stuck, 'failed']]);
    expect(await redis.hexists(key('jobs'), stuck)).toBe(0);
    await sleep(300);
    expect(started).toEqual([stuck]); // concurrency 1: the stuck handler still holds the slot
    release();
    await until(() => ends.length >= 2, 'the next job');
    expect(ends).toEqual([[stuck, 'failed'], [next, 'succeeded']]);
  });

  it('gives up on a processor that ignores its abort past the hard limit: its final failure is recorded while it runs, and it keeps its slot until it returns', async () => {
    const stuck = randomUUID();
    const next = randomUUID();
    await enqueue(stuck);
    await enqueue(next);
    const recorded: Array<[string, string]> = [];
    const started: string[] = [];
    let release!: () => void;
    const ignoresAbort = new Promise<void>((resolve) => (release = resolve));
    const runner = createJobHandler(
      {
        generateImage: {
          run: async (ctx) => {
            started.push(ctx.payload.generationId);
            if (ctx.payload.generationId === stuck) await ignoresAbort; // never looks at ctx.signal
          },
          onFinalFailure: async (ctx, failure) => void recorded.push([ctx.payload.generationId, failure.code]),
        },
      },
      // TASK_TIME_LIMIT_S, TASK_SOFT_TIME_LIMIT_S, TASK_ABORT_GRACE_S in small.
      { timeLimitMs: 100, softTimeLimitMs: 50, abortGraceMs: 100 },
      log,
    );
    const ends: Array<[string, JobEnd]> = [];
    consumer({ handler: runner.handle, onEnd: (job, end) => ends.push([(job.data.payload as { generationId: string }).generationId, end]) });
    await until(() => ends.length === 1, 'the stuck job to be given up');
    // Failed for good (no retry, though retries were left), its end recorded (for a generation:
    // FAILED, credits back) while the processor still runs.
    expect(ends).toEqual([[stuck, 'failed']]);
    expect(recorded).toEqual([[stuck, 'TIME_LIMIT_EXCEEDED']]);
    expect(await redis.hexists(key('jobs'), stuck)).toBe(0);
    await sleep(300);
    expect(started).toEqual([stuck]); // concurrency 1: the stuck processor still holds the slot
    release();
    await until(() => ends.length === 2, 'the next job');
    expect(ends[1]).toEqual([next, 'succeeded']);
    expect(recorded).toHaveLength(1);
  });

  it('drops unusable records and a job removed while it waited, and goes on with the rest', async () => {
    const data = '"data":{"kind":"generateImage","payload":{"generationId":"g"}}';
    const bad = [
      '{not json',
      '"a string"',
      '{"options":1,"data":{}}',
      '{"options":{"stacktraces":"x","retries":2},"data":{}}',
      // A backoff the record cannot be retried by: refused before the job runs (and publishes
      // anything), not found out at its first failure after its watchers were told "retrying".
      `{"options":{"retries":3,"backoff":{"strategy":"fibonacci","delay":100}},${data}}`,
      `{"options":{"retries":3,"backoff":"fixed"},${data}}`,
    ].map((raw) => [randomUUID(), raw] as const);
    const removed = randomUUID();
    const good = randomUUID();
    for (const [id, raw] of bad) {
      await redis.hset(key('jobs'), id, raw);
      await redis.lpush(key('waiting'), id);
    }
    await enqueue(removed);
    await redis.hdel(key('jobs'), removed);
    await enqueue(good);
    const ran: string[] = [];
    const ends: Array<[string, JobEnd]> = [];
    consumer({ concurrency: 3, handler: async (job) => void ran.push(job.id), onEnd: (job, end) => ends.push([job.id, end]) });
    await until(() => ends.length >= bad.length + 1, 'every end');
    expect(ran).toEqual([good]);
    for (const [id] of bad) expect(ends).toContainEqual([id, 'failed']);
    expect(ends).toContainEqual([good, 'succeeded']);
    expect(ends).toHaveLength(bad.length + 1);
    expect(await redis.llen(key('active'))).toBe(0);
    expect(await redis.hlen(key('jobs'))).toBe(0);
  });

  it('survives its connections being killed mid-run: every job still runs and the queue ends empty', async () => {
    // A template connection with a name of its own, so only this test's consumer is cut off.
    const name = `kill-${prefix}`;
    const template = new Redis(REDIS_URL, { connectionName: name, lazyConnect: true });
    const ids = Array.from({ length: 400 }, () => randomUUID());
    for (const id of ids) await enqueue(id);
    const runs = new Map<string, number>();
    consumer({
      redis: template,
      concurrency: 4,
      stallIntervalMs: 300,
      handler: async (job) => {
        runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
        await sleep(5);
      },
    });
    // About half a second of work: cut the consumer's connections whenever they are up.
    let kills = 0;
    for (let i = 0; i < 40 && kills < 3 && runs.size < ids.length; i++) {
      await sleep(40);
      const clients = (await redis.client('LIST')) as string;
      for (const line of clients.split('\n')) {
        if (!line.includes(` name=${name}:`)) continue;
        const id = /\bid=(\d+)/.exec(line)?.[1];
        if (id) kills += (await redis.client('KILL', 'ID', id)) as number;
      }
    }
    expect(kills).toBeGreaterThanOrEqual(1);
    await until(
      async () => ids.every((id) => runs.has(id)) && (await redis.hlen(key('jobs'))) === 0 && (await redis.llen(key('active'))) === 0,
      'every job to run and the queue to empty',
      20_000,
    );
    expect(await redis.llen(key('waiting'))).toBe(0);
    // And it goes on working: a new job runs promptly.
    const late = randomUUID();
    await enqueue(late);
    await until(() => runs.has(late), 'a job enqueued after the outage', WAIT_MS);
    template.disconnect();
  });

  it('never runs more jobs than its concurrency while it drops unusable records from the same batch', async () => {
    const bad = randomUUID();
    await redis.hset(key('jobs'), bad, '{"options":{}}');
    await redis.lpush(key('waiting'), bad);
    const good = Array.from({ length: 6 }, () => randomUUID());
    for (const id of good) await enqueue(id);
    let running = 0;
    let most = 0;
    const ran: string[] = [];
    consumer({
      concurrency: 2,
      handler: async (job) => {
        most = Math.max(most, ++running);
        await sleep(30);
        running--;
        ran.push(job.id);
      },
    });
    await until(() => ran.length === good.length, 'every usable job');
    expect(most).toBe(2);
    expect(new Set(ran)).toEqual(new Set(good));
  });

  it('closes at once when it is idle in its blocking wait', async () => {
    // Its blocking wait would last an hour, and close() may wait as long: only ending the wait
    // itself lets this test finish.
    const c = consumer({ blockTimeoutS: 3600, handler: async () => {} });
    await sleep(200);
    await c.close(3_600_000);
    expect(c.stats.calls).toBeGreaterThan(0);
  });

  /**
   * What another worker's stall check does to a job whose worker stopped vouching for it (a long
   * event-loop pause, a network split: the worker did not die), with the real guard script: one
   * check marks the active jobs, the next puts back those nobody vouched for in between.
   */
  async function stallCheckWithoutVouching(): Promise<string[]> {
    const k = queueKeys(prefix, QUEUE);
    const check = () => redis.eval(luaScript('guard'), 5, k.stallBlock, k.stalling, k.waiting, k.active, k.stalls, 60_000) as Promise<string[]>;
    await redis.del(k.stallBlock);
    await check();
    await redis.del(k.stallBlock);
    return check();
  }

  it('a job put back by a stall check while it still ran: the copy is the next attempt and owns the job, the first run\'s end changes nothing', async () => {
    const id = randomUUID();
    await enqueue(id);
    const snapshots: JobSnapshot[] = [];
    const started = () => snapshots.filter((s) => s.state === 'active').length;
    let endFirstRun!: () => void;
    const firstRunMayEnd = new Promise<void>((resolve) => (endFirstRun = resolve));
    let endCopy!: () => void;
    const copyMayEnd = new Promise<void>((resolve) => (endCopy = resolve));
    const runner = createJobHandler(
      {
        generateImage: {
          run: async () => {
            const n = started();
            if (n === 1) await firstRunMayEnd; // the first run outlives its vouching
            if (n === 2) await copyMayEnd;
            if (n <= 2) throw Object.assign(new Error('SD is away'), { code: 'ECONNREFUSED' }); // transient: retried
          },
          onFinalFailure: async () => {},
        },
      },
      { timeLimitMs: 60_000, softTimeLimitMs: 59_000 },
      log,
      { sink: { record: (s) => snapshots.push(s) } },
    );
    const stallsSeen: Array<number | undefined> = [];
    const jobs: QueuedJob[] = [];
    const ends: JobEnd[] = [];
    const options = {
      stallIntervalMs: 600_000,
      handler: (job: QueuedJob) => (stallsSeen.push(job.stalls), jobs.push(job), runner.handle(job)),
      onEnd: (_job: QueuedJob, end: JobEnd) => ends.push(end),
    };
    // Long stall intervals: neither consumer's own guard runs a stall check during the test.
    const first = consumer(options);
    await until(() => started() === 1, 'the first run to start');
    expect(await stallCheckWithoutVouching()).toEqual([id]);
    const second = consumer(options);
    await until(() => started() === 2, 'the copy to start');
    // The first run can no longer write the record either; the copy can.
    const before = await redis.hget(key('jobs'), id);
    jobs[0]!.options.finalFailure = { code: 'X', message: 'stale', retryable: false };
    expect(await jobs[0]!.saveOptions?.()).toBe(false);
    expect(await redis.hget(key('jobs'), id)).toBe(before);
    delete jobs[0]!.options.finalFailure;
    expect(await jobs[1]!.saveOptions?.()).toBe(true);
    const stored = await redis.hget(key('jobs'), id);
    endFirstRun();
    await until(() => first.stats.superseded === 1, 'the first run to end');
    // The copy's entry and the record are as they were: the first run's retry was not written.
    expect(await redis.lrange(key('active'), 0, -1)).toEqual([id]);
    expect(await redis.hget(key('jobs'), id)).toBe(stored);
    expect(await redis.zcard(key('delayed'))).toBe(0);
    expect(ends).toEqual([]);
    // The copy's retry is stored as usual, and the try after it succeeds.
    endCopy();
    await until(() => ends.length === 2, 'the copy\'s retry and the third try');
    expect(ends).toEqual(['retrying', 'succeeded']);
    // Either consumer may take the third try; only the copy's retry and that try were written.
    expect(first.stats.superseded + second.stats.superseded).toBe(1);
    expect(first.stats.retried + second.stats.retried).toBe(1);
    expect(first.stats.succeeded + second.stats.succeeded).toBe(1);
    expect(first.stats.failed + second.stats.failed).toBe(0);
    expect(stallsSeen).toEqual([0, 1, 1]);
    // Attempts: 1, the copy (a stall) 2, the copy's retry 3.
    expect(snapshots.filter((s) => s.state === 'active').map((s) => s.attempt)).toEqual([1, 2, 3]);
    await until(async () => (await redis.hlen(key('jobs'))) === 0, 'the job to be gone');
    expect(await redis.llen(key('active'))).toBe(0);
    expect(await redis.exists(key('stalls'))).toBe(0);
  });

  it('the first run\'s success still drops a copy put back but not taken yet, unrun', async () => {
    const id = randomUUID();
    await enqueue(id);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let runs = 0;
    const ends: JobEnd[] = [];
    const c = consumer({ stallIntervalMs: 600_000, handler: async () => (++runs === 1 ? held : undefined), onEnd: (_job, end) => ends.push(end) });
    await until(() => runs === 1, 'the run to start');
    expect(await stallCheckWithoutVouching()).toEqual([id]);
    expect(await redis.lrange(key('waiting'), 0, -1)).toEqual([id]);
    // Only this consumer, with its one slot taken: the copy waits until the run ends.
    release();
    await until(() => ends.length === 1, 'the end');
    await until(async () => (await redis.llen(key('waiting'))) === 0, 'the copy to be taken');
    await sleep(200);
    expect(runs).toBe(1);
    expect(ends).toEqual(['succeeded']);
    expect(c.stats.superseded).toBe(0);
    expect(await redis.hlen(key('jobs'))).toBe(0);
    expect(await redis.exists(key('stalls'))).toBe(0);
  });

  it('refuses a concurrency that is not a positive integer', () => {
    for (const concurrency of [0, -1, 1.5, Number.NaN]) {
      expect(() => new JobConsumer({ redis, prefix, queue: QUEUE, concurrency, stallIntervalMs: 1000, log, handler: async () => {} })).toThrow(/concurrency/);
    }
  });
});
