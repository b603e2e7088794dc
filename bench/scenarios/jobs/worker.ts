/**
 * Child process of the job-throughput scenario: a worker for one system (`--system=`). It says `up`
 * once loaded; then, as often as the parent likes: `prepare` (connect to a fresh queue, answer
 * `ready`), `start` (drain it with the given concurrency, answer `done` with the time from the first
 * job's start to the last job's end), `release` (close the queue and connections, answer
 * `released`). `close` ends the process.
 *
 * - own: the project's job consumer (src/jobs/consumer.ts) and job wrapper (createJobHandler) with
 *   the job-outcome tracker, built as workers/worker.ts builds them, and a no-op processor registered
 *   as generateImage. Per job: the time-limit timer, metrics, a start and an end state handed to the
 *   tracker, which counts the ends in memory and adds them to Redis once per flush interval; the
 *   consumer finishes ended jobs and takes new ones in one Lua call per batch. The end time is taken
 *   after the tracker has written every count, so the figure includes the tracking; then the
 *   succeeded count in Redis is read.
 * - own-bee: the same wrapper and tracker on Bee-Queue's own `queue.process()` loop: what the worker
 *   ran before the consumer, kept to show what the consumer buys.
 * - bee: the project's queue settings (createQueue), a no-op handler straight on `queue.process`.
 * - bullmq: a BullMQ Worker with a no-op processor and the same stall interval; the jobs carry
 *   removeOnComplete / removeOnFail.
 * Each child imports only its system's libraries, before it says `up`.
 * BENCH_CPU_PROFILE_<SYSTEM>=<file> (OWN, BEE, BULLMQ, OWN_BEE) profiles that system's worker from
 * start to close (bench/lib/profile.ts).
 */
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import type { QueuedJob } from '../../../src/jobs/consumer';
import type { Processor } from '../../../src/jobs/runner';
import { report } from '../../lib/processes';
import { benchConfig, isMessage, isSystemId, QUEUE, type FromWorker, type SystemId, type ToWorker } from './systems';

type Done = Extract<FromWorker, { type: 'done' }>;
type Prepare = Extract<ToWorker, { type: 'prepare' }>;

/** One system, connected to one queue. */
interface Running {
  /** Starts taking jobs; `onJob` is called at each job's start, `onDone` after each job's end. */
  start(onJob: () => void, onDone: () => void): void;
  /** After the last job, timed: anything the system still owes (the tracker's last batch). */
  settle(): Promise<Partial<Done>>;
  /** After the timing: checks of what the system left in Redis. */
  check(): Promise<Partial<Done>>;
  close(): Promise<void>;
}

const { values } = parseArgs({ options: { system: { type: 'string' } }, strict: true });
if (!values.system || !isSystemId(values.system)) throw new Error('usage: worker.ts --system=own|bee|bullmq|own-bee');
const system: SystemId = values.system;
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const send = (m: FromWorker) => report(m);

const loadBeeQueueLibs = () =>
  Promise.all([
    import('../../../src/jobs/queues'),
    import('../../../src/jobs/runner'),
    import('../../../src/jobs/outcomeTracker'),
    import('../../../src/jobs/queueStats'),
    import('../../../src/jobs/consumer'),
    import('../../../src/logger'),
    import('../../../src/redis'),
  ]);
const loadBullmqLibs = () => Promise.all([import('bullmq'), import('ioredis')]);

/** Loaded before the child says `up`: module loading is start-up, not part of any measurement. */
const libs = system === 'bullmq' ? { bullmq: await loadBullmqLibs() } : { beeQueue: await loadBeeQueueLibs() };
const stopProfile = await (await import('../../lib/profile')).startCpuProfile(process.env[`BENCH_CPU_PROFILE_${system.toUpperCase().replace('-', '_')}`]);

async function setupBeeQueue(p: Prepare): Promise<Running> {
  const [{ createQueue }, { createJobHandler }, { JobOutcomeTracker }, queueStats, { JobConsumer }, { createLogger }, { closeRedis, openRedis }] =
    libs.beeQueue ?? (await loadBeeQueueLibs());
  const config = benchConfig(redisUrl, p.prefix);
  const log = createLogger('silent');
  const limits = { timeLimitMs: config.worker.timeLimitMs, softTimeLimitMs: config.worker.softTimeLimitMs };
  const noop: Processor<'generateImage'> = { run: async () => {}, onFinalFailure: async () => {} };
  // Raw Bee-Queue: no wrapper, no tracker, no connection of ours.
  const redis = system === 'bee' ? undefined : openRedis(config.redis, 'bench-worker', log, 'background');
  const tracker = redis && new JobOutcomeTracker({ redis, prefix: p.prefix, flushIntervalMs: config.worker.jobStateFlushMs, log });
  const handler: (job: QueuedJob) => Promise<unknown> = tracker ? createJobHandler({ generateImage: noop }, limits, log, { sink: tracker }).handle : async () => {};
  const settle = async (): Promise<Partial<Done>> => {
    if (!tracker) return {};
    await tracker.flush();
    return { flushes: tracker.stats.flushes, lost: tracker.stats.lost };
  };
  // Every job must have been counted (the no-op processor runs as generateImage, on high_priority's counts).
  const check = async (): Promise<Partial<Done>> =>
    redis ? { counted: Number((await redis.hget(queueStats.outcomeTotalsKey(p.prefix, 'high_priority'), 'succeeded')) ?? 0) } : {};

  if (system === 'own' && redis) {
    let consumer: InstanceType<typeof JobConsumer> | undefined;
    return {
      start(onJob, onDone) {
        consumer = new JobConsumer({
          redis,
          prefix: p.prefix,
          queue: QUEUE,
          concurrency: p.concurrency,
          stallIntervalMs: config.worker.stallIntervalMs,
          log,
          handler: (job) => {
            onJob();
            return handler(job);
          },
          onEnd: (_job, end) => end === 'succeeded' && onDone(),
        });
        consumer.start();
      },
      settle: async () => ({ ...(await settle()), calls: consumer?.stats.calls }),
      check,
      async close() {
        await consumer?.close(5000);
        await tracker?.close();
        await closeRedis(redis);
      },
    };
  }

  const queue = createQueue(config, QUEUE, { worker: true });
  queue.on('error', (err: Error) => process.stderr.write(`bench worker: ${err.message}\n`));
  await queue.ready();
  return {
    start(onJob, onDone) {
      queue.on('succeeded', onDone);
      queue.process(p.concurrency, (job) => {
        onJob();
        return handler(job);
      });
    },
    settle,
    check,
    async close() {
      await queue.close(5000);
      await tracker?.close();
      if (redis) await closeRedis(redis);
    },
  };
}

async function setupBullmq(p: Prepare): Promise<Running> {
  const [{ Worker }, { Redis: IORedis }] = libs.bullmq ?? (await loadBullmqLibs());
  const config = benchConfig(redisUrl, p.prefix);
  const connection = new IORedis(redisUrl, { maxRetriesPerRequest: null });
  let onJob = () => {};
  const worker = new Worker(
    QUEUE,
    async () => {
      onJob();
    },
    { connection, prefix: p.prefix, concurrency: p.concurrency, autorun: false, stalledInterval: config.worker.stallIntervalMs },
  );
  worker.on('error', (err: Error) => process.stderr.write(`bench worker: ${err.message}\n`));
  await worker.waitUntilReady();
  return {
    start(job, done) {
      onJob = job;
      worker.on('completed', done);
      void worker.run();
    },
    settle: async () => ({}),
    check: async () => ({}),
    async close() {
      await worker.close();
      await connection.quit();
    },
  };
}

let running: Running | undefined;
let prepared: Prepare | undefined;

async function handle(m: ToWorker): Promise<void> {
  switch (m.type) {
    case 'prepare':
      prepared = m;
      running = system === 'bullmq' ? await setupBullmq(m) : await setupBeeQueue(m);
      send({ type: 'ready' });
      return;
    case 'start': {
      if (!running || !prepared) throw new Error('start before prepare');
      const expected = prepared.jobs;
      const r = running;
      let first = 0;
      let cpuAtFirst: NodeJS.CpuUsage | undefined;
      let ended = 0;
      const allDone = new Promise<void>((resolve) => {
        r.start(
          () => {
            if (first === 0) {
              first = performance.now();
              cpuAtFirst = process.cpuUsage();
            }
          },
          () => {
            if (++ended === expected) resolve();
          },
        );
      });
      await allDone;
      const flushed = await r.settle();
      const seconds = (performance.now() - first) / 1000;
      const cpu = process.cpuUsage(cpuAtFirst);
      const checked = await r.check();
      send({ type: 'done', jobs: ended, seconds, cpuUsPerJob: (cpu.user + cpu.system) / ended, ...flushed, ...checked });
      return;
    }
    case 'release':
      await running?.close();
      running = undefined;
      prepared = undefined;
      send({ type: 'released' });
      return;
    case 'close':
      await running?.close();
      await stopProfile?.();
      if (process.send) process.send({ type: 'closed' } satisfies FromWorker, () => process.exit(0));
      else process.exit(0);
      return;
  }
}

const COMMANDS: ReadonlyArray<ToWorker['type']> = ['prepare', 'start', 'release', 'close'];
const isCommand = (m: unknown): m is ToWorker => COMMANDS.some((type) => isMessage<ToWorker>(type)(m));
// Messages are handled one at a time, in order.
let chain = Promise.resolve();
process.on('message', (m: unknown) => {
  if (!isCommand(m)) return;
  chain = chain.then(() => handle(m)).catch((err: unknown) => {
    process.stderr.write(`bench worker (${system}) failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
});
send({ type: 'up' });
