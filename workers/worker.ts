/**
 * Builds a worker: a job consumer (src/jobs/consumer.ts, on Bee-Queue's keys) for each chosen queue,
 * each with its own slots (that is how priority works: WORKER_CONCURRENCY generation slots,
 * NORMAL_PRIORITY_CONCURRENCY, LOW_PRIORITY_CONCURRENCY and WEBHOOKS_CONCURRENCY for the others), and, only when it
 * consumes high_priority, the Piscina pool and the SD client: an upload or mail-and-history worker
 * needs no Stable Diffusion server. Building opens the worker's Redis connection and starts the
 * pool's threads, nothing more; `close()` releases them even if `start()` was never called or
 * failed. `start()` begins taking jobs.
 * `close()` is ordered and safe to call twice: stop taking jobs and let running ones finish (up to
 * WORKER_SHUTDOWN_TIMEOUT_MS; unfinished ones are re-delivered to another worker), write the job
 * states still pending, close the pool, then Redis. The database belongs to the caller.
 */
import type { Knex } from 'knex';
import { sdServerList, type Config, type QueueName } from '../src/config';
import { sweepStrandedGenerations } from '../src/generation/orphans';
import { failGeneration } from '../src/generation/outcomes';
import { storeSamplers } from '../src/generation/samplers';
import { PostprocessPool } from '../src/imaging/pool';
import { JobConsumer } from '../src/jobs/consumer';
import { JobProducer } from '../src/jobs/queues';
import { JOB_QUEUES } from '../src/jobs/registry';
import type { JobMetrics } from '../src/jobs/metrics';
import { createJobHandler, type Processors } from '../src/jobs/runner';
import { JobOutcomeTracker } from '../src/jobs/outcomeTracker';
import { newWorkerId, WorkerHeartbeat } from '../src/jobs/presence';
import { coreChecks, type HealthCheck, type MetricsEndpoint } from '../src/health';
import { workerMetrics, type WorkerMetrics } from '../src/jobs/prometheus';
import type { Logger } from '../src/logger';
import { ProgressPublisher } from '../src/progress/publisher';
import { closeRedis, openRedis } from '../src/redis';
import { SdClient } from '../src/sd/client';
import { SdFleet } from '../src/sd/fleet';
import type { Redis } from 'ioredis';
import type { ObjectStorage } from '../src/storage/storage';
import { createMailer } from '../src/mail/mailer';
import { generateImageProcessor } from './processors/generateImage';
import { sendEmailProcessor } from './processors/sendEmail';
import { saveChatHistoryProcessor } from './processors/saveChatHistory';
import { uploadToCloudProcessor } from './processors/uploadToCloud';
import { deliverWebhookProcessor } from './processors/deliverWebhook';

export interface WorkerOptions {
  config: Config;
  db: Knex;
  log: Logger;
  storage: ObjectStorage;
  /**
   * The SD server's base URL (the simulator's in dev), or several comma-separated (APP_SD_API_URL's
   * form); needed only to consume high_priority.
   */
  sdUrl?: string;
  queues?: readonly QueueName[];
  /** Generation (high_priority) slots; default WORKER_CONCURRENCY, else one per SD server (2 with one). */
  concurrency?: number;
}

export interface Worker {
  start(): Promise<void>;
  /** What /readyz asks: Redis, Postgres with the schema current, and the SD server when it generates. */
  readonly healthChecks: HealthCheck[];
  /** Its Prometheus metrics (jobs, durations, SD calls, post-processing, credits, queues, the process). */
  readonly prometheus: MetricsEndpoint;
  /** How it announces itself in Redis (`<prefix>:worker:<id>`, see src/jobs/presence.ts). */
  readonly id: string;
  close(): Promise<void>;
  readonly counters: ReturnType<typeof createJobHandler>['counters'];
  /** Outcomes and durations per job kind, in this process. */
  readonly metrics: JobMetrics;
}

export function createWorker(opts: WorkerOptions): Worker {
  const { config, db, log } = opts;
  const queueNames = opts.queues ?? config.worker.queues;
  // Built first (no I/O): the SD client and the pool report into it.
  const prometheus: WorkerMetrics = workerMetrics({ prefix: config.redis.prefix, queues: queueNames });
  const sdServers = queueNames.includes(JOB_QUEUES.generateImage) ? sdServersOf(opts) : [];
  const slots: Record<QueueName, number> = { ...config.worker.slots, high_priority: opts.concurrency ?? generationSlots(config, sdServers.length) };
  const redis = openRedis(config.redis, 'worker', log, 'background');
  // Builds no I/O beyond the pool's threads; the fleet's checks begin at start().
  let generation: ReturnType<typeof generationParts> | null;
  try {
    generation = sdServers.length > 0 ? generationParts(opts, prometheus, redis, sdServers) : null;
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  const publisher = new ProgressPublisher(redis, config.redis.prefix, config.progress.expiresS);
  // On the process's own connection: the API's fails fast while Redis is away, the worker's waits.
  const producer = new JobProducer(config, log, redis);
  const mailer = createMailer(config);
  // Each retry and each re-delivery after a worker died is an attempt.
  const maxAttempts = config.worker.maxRetries + 1 + config.worker.maxStalls;
  const processors: Processors = {
    ...(generation && {
      generateImage: generateImageProcessor({
        db,
        redis,
        redisPrefix: config.redis.prefix,
        publisher,
        producer,
        sd: generation.sd,
        switchesMax: config.sd.switchesMax,
        pool: generation.pool,
        previewIntervalMs: config.sd.previewIntervalMs,
        previewSize: config.sd.previewSize,
        maxAttempts,
        log,
        credits: prometheus.credits,
      }),
    }),
    uploadToCloud: uploadToCloudProcessor({ db, publisher, producer, storage: opts.storage, credits: prometheus.credits }),
    saveChatHistory: saveChatHistoryProcessor({ db }),
    deliverWebhook: deliverWebhookProcessor({ db, settings: config.webhooks }),
    sendEmail: sendEmailProcessor({ db, mailer, publicUrl: config.http.publicUrl, tokenTtlS: config.accounts.emailTokenTtlS, log: log.child({ component: 'mail' }) }),
  };
  // Job outcomes counted per queue in Redis (the operators' figures); written in batches, off the jobs' path.
  const tracker = new JobOutcomeTracker({
    redis,
    prefix: config.redis.prefix,
    flushIntervalMs: config.worker.jobStateFlushMs,
    log: log.child({ component: 'job-outcomes' }),
  });
  const handler = createJobHandler(
    processors,
    { timeLimitMs: config.worker.timeLimitMs, softTimeLimitMs: config.worker.softTimeLimitMs, abortGraceMs: config.worker.abortGraceMs },
    log,
    { sink: tracker },
  );
  const consumers: JobConsumer[] = [];
  const id = newWorkerId();
  const heartbeat = new WorkerHeartbeat({
    redis,
    prefix: config.redis.prefix,
    id,
    queues: queueNames,
    slots: queueNames.reduce((n, q) => n + slots[q], 0),
    busy: () => handler.counters.active,
    intervalMs: config.worker.heartbeat.intervalMs,
    ttlMs: config.worker.heartbeat.ttlMs,
    sd: generation ? () => generation.sd.status() : undefined,
    log: log.child({ component: 'heartbeat' }),
  });
  let orphanTimer: NodeJS.Timeout | undefined;
  /** The sweep under way, if any: close() lets it finish before the producer and Redis close. */
  let sweeping: Promise<unknown> = Promise.resolve();
  let closing: Promise<void> | undefined;

  return {
    id,
    prometheus: prometheus.endpoint({ metrics: handler.metrics, redis, consumers: () => consumers }),
    healthChecks: [...coreChecks(redis, db), ...(generation ? [{ name: 'sd', run: (signal: AbortSignal) => generation.sd.checkAny(signal) }] : [])],
    counters: handler.counters,
    metrics: handler.metrics,

    async start() {
      if (generation) {
        // Checks every server once: a job is sent to one that answered.
        await generation.sd.start();
        try {
          const samplers = await generation.sd.first.samplers(AbortSignal.timeout(10_000));
          if (samplers.length > 0) await storeSamplers(redis, config.redis.prefix, samplers);
        } catch (err) {
          log.warn({ err: err instanceof Error ? err.message : err }, 'could not read the samplers of the Stable Diffusion server; the API keeps its list');
        }
      }
      for (const name of queueNames) {
        const consumer = new JobConsumer({
          redis,
          prefix: config.redis.prefix,
          queue: name,
          concurrency: slots[name],
          handler: handler.handle,
          stallIntervalMs: config.worker.stallIntervalMs,
          keep: config.worker.keep,
          log: log.child({ component: 'consumer', queue: name }),
        });
        // Each consumer also re-queues the jobs of workers that died (task_acks_late).
        consumer.start();
        consumers.push(consumer);
      }
      if (generation) {
        // Live generations without a job (an API died before enqueuing, or a job was lost).
        const sweep = () =>
          (sweeping = sweepStrandedGenerations({
            db,
            redis,
            prefix: config.redis.prefix,
            producer,
            maxAttempts,
            minAgeS: config.worker.strandedSweep.minAgeS,
            fail: (gid, failure) => failGeneration(db, publisher, gid, failure, { db, producer, log }, prometheus.credits),
          }).then(
            ({ requeued, failed, discardedStaged }) => {
              if (discardedStaged > 0) log.info({ generations: discardedStaged }, 'staged images of generations that ended without them were dropped');
              if (requeued.length > 0) log.warn({ generations: requeued }, 'live generations that had no job were enqueued again');
              if (failed.length > 0) log.warn({ generations: failed }, 'live generations that had no job and no attempts left were failed and refunded');
            },
            (err: unknown) => log.warn({ err }, 'stranded-generation sweep failed'),
          ));
        orphanTimer = setInterval(sweep, config.worker.strandedSweep.intervalMs);
        orphanTimer.unref();
      }
      // Announced once it consumes: from now on operators see it (and its SD server's state).
      await heartbeat.start();
      log.info({ worker: id, queues: queueNames, slots: Object.fromEntries(queueNames.map((q) => [q, slots[q]])), sd: sdServers.map((s) => s.url), mail: mailer.describe }, 'worker started');
    },

    close() {
      closing ??= (async () => {
        clearInterval(orphanTimer);
        const steps: Array<[string, () => Promise<unknown>]> = [
          ['sweep', () => sweeping],
          ['consumers', () => Promise.all(consumers.map((c) => c.close(config.worker.shutdownTimeoutMs)))],
          // Gone from the operators' list once it takes and runs nothing more.
          ['heartbeat', () => heartbeat.close()],
          // After the queues (the jobs that finished while draining are counted), before Redis closes.
          ['job outcome tracker', () => tracker.close()],
          ['pool', async () => generation?.pool.close()],
          ['sd client', async () => generation?.sd.close()],
          ['mailer', async () => mailer.close()],
          ['producer', () => producer.close()],
          ['redis', () => closeRedis(redis)],
        ];
        // Each step runs even if an earlier one failed.
        for (const [name, step] of steps) {
          await step().catch((err: unknown) => log.warn({ err, step: name }, 'worker shutdown step failed'));
        }
      })();
      return closing;
    },
  };
}

/** The SD servers of `sdUrl` (one or a comma-separated list); a worker that generates needs one. */
function sdServersOf(opts: WorkerOptions) {
  if (!opts.sdUrl) throw new Error(`a worker that consumes ${JOB_QUEUES.generateImage} needs the Stable Diffusion server's URL`);
  try {
    return sdServerList(opts.sdUrl, opts.config.sd.auth);
  } catch (err) {
    throw new Error(`the Stable Diffusion server list is invalid: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/**
 * Generation slots: WORKER_CONCURRENCY when set, else one per SD server (A1111 runs one job at a
 * time), but 2 with a single server, so one job's post-processing overlaps the next one's sampling.
 */
function generationSlots(config: Config, servers: number): number {
  if (config.worker.concurrencySet || servers === 0) return config.worker.concurrency;
  return servers > 1 ? servers : 2;
}

/** What only generations need: the post-processing threads and the SD servers. */
function generationParts(opts: WorkerOptions, metrics: WorkerMetrics, redis: Redis, servers: ReturnType<typeof sdServerList>) {
  const { config, log } = opts;
  // The fleet first: it only holds settings, so if it throws, no pool threads are left running.
  const sd = new SdFleet({
    servers,
    redis,
    prefix: config.redis.prefix,
    leaseTtlMs: config.sd.leaseTtlMs,
    checkIntervalMs: config.sd.checkIntervalMs,
    waitPollMs: config.sd.waitPollMs,
    checkTimeoutMs: config.health.timeoutMs,
    log: log.child({ component: 'sd' }),
    client: (server) =>
      new SdClient({
        baseUrl: server.url,
        auth: server.auth,
        progressIntervalMs: config.sd.progressIntervalMs,
        logger: log.child({ component: 'sd', sd: server.url }),
        observer: metrics.sd,
      }),
  });
  const pool = PostprocessPool.create({
    threads: config.worker.postprocessThreads,
    maxTasksPerThread: config.worker.maxTasksPerChild,
    threadHeapMb: config.worker.postprocessThreadHeapMb,
    nice: config.worker.postprocessNice,
    webpQuality: config.worker.webpQuality,
    thumbnailSize: config.worker.thumbnailSize,
    onTaskDone: metrics.postprocessDone,
    // A thread that died (its task is retried once on a fresh thread) or crashed while idle.
    onError: (err) => log.warn({ err, component: 'postprocess' }, 'post-processing thread error'),
  });
  return { pool, sd };
}
