import BeeQueue from 'bee-queue';
import type { Redis } from 'ioredis';
import type { Config, QueueName } from '../config';
import type { Logger } from '../logger';
import { closeRedis, openRedis, type RedisRole } from '../redis';
import { queueKeys, type QueuedJobOptions } from './consumer';
import { JobError } from './errors';
import { jobScript } from './luaScripts';
import type { JobEnvelope, JobKind, JobPayloads } from './registry';
import { JOB_QUEUES, jobId } from './registry';

export type Queue = BeeQueue<JobEnvelope>;

export interface QueueRole {
  /** Workers consume; producers (the API) only add jobs and need no events or stored job objects. */
  worker: boolean;
}

/**
 * A Bee-Queue `Queue` on its own node_redis v3 client (which speaks neither Sentinel nor Cluster):
 * the service itself no longer uses one (JobProducer adds, JobConsumer takes); kept for the test that
 * holds our record format to Bee-Queue's, and for the benchmark that compares the two.
 */
export function createQueue(config: Config, name: QueueName, role: QueueRole): Queue {
  return new BeeQueue<JobEnvelope>(name, {
    prefix: config.redis.prefix,
    redis: { url: config.redis.url },
    isWorker: role.worker,
    getEvents: false,
    sendEvents: false,
    // Producers never wait on job events; storing job objects would only leak memory (bee-queue#54).
    storeJobs: false,
    // Delayed retries fire only where some queue activates them: every worker does.
    activateDelayedJobs: role.worker,
    // Bee-Queue's own process() only (the workers' consumer keeps the newest QUEUE_KEEP_* ended
    // jobs for the dashboard): Postgres keeps the history.
    removeOnSuccess: true,
    removeOnFailure: true,
    stallInterval: config.worker.stallIntervalMs,
  });
}

/** Redis key of a queue's waiting list (LPUSHed by producers, taken from the right by workers). */
export const waitingKey = (config: Config, queue: QueueName) => `${config.redis.prefix}:${queue}:waiting`;
/** Redis hash holding every job record of a queue that is waiting, delayed or active. */
export const jobsKey = (config: Config, queue: QueueName) => `${config.redis.prefix}:${queue}:jobs`;

/** Bee-Queue's addJob: the new id, or null when a job of that id is already there. */
const ADD_JOB = jobScript<string | null>('add', 6);

/**
 * Adds jobs to Bee-Queue's queues without Bee-Queue: its record format (`{data, options, status,
 * progress}`, the same options its `Job#retries/backoff/timeout` write) and its addJob script, on an
 * ioredis connection from src/redis.ts, so producers follow a Sentinel failover like every other
 * connection. Bee-Queue's own `process()` and our consumer both take these jobs
 * (test/unit/jobs-contract.test.ts).
 */
export class JobProducer {
  private readonly redis: Redis;
  /** The connection was opened here (and is closed here), not lent by the owner. */
  private readonly owned: boolean;

  /**
   * `connection`: one the owner has opened (and closes), e.g. the API's, whose commands fail fast
   * while Redis is away. Without one the producer opens its own with `role` (default: background).
   */
  constructor(
    private readonly config: Config,
    log: Logger,
    connection?: Redis | { role: RedisRole },
  ) {
    const redis = connection && 'options' in connection ? connection : openRedis(config.redis, 'producer', log, connection?.role ?? 'background');
    this.owned = redis !== connection;
    this.redis = redis;
  }

  /**
   * Adds a job whose id is derived from `key`. Returns false when a job with that id is already
   * waiting, delayed or running (a re-delivered step enqueuing its follow-up again), which is not
   * an error. A job of that id that has ended and is only kept for the dashboard (QUEUE_KEEP_*) does
   * not count: it is let go and the new one added, as if it had been removed when it ended.
   */
  async enqueue<K extends JobKind>(kind: K, key: string, payload: JobPayloads[K]): Promise<boolean> {
    const k = queueKeys(this.config.redis.prefix, JOB_QUEUES[kind]);
    const id = jobId(kind, key);
    const record = JSON.stringify({ data: { kind, payload } as JobEnvelope, options: this.options(kind), status: 'created', progress: 0 });
    return this.bounded(async () => (await ADD_JOB.run(this.redis, k.jobs, k.waiting, k.succeeded, k.failed, k.succeededAt, k.failedAt, id, record)) !== null);
  }

  /** The options Bee-Queue's `createJob(...).timeout().retries().backoff()` would store. */
  private options(kind: JobKind): QueuedJobOptions {
    const { worker, webhooks } = this.config;
    // A safety net above the processor's own hard limit, which really stops the work.
    const base = { timestamp: Date.now(), stacktraces: [], timeout: worker.timeLimitMs + 30_000 };
    if (kind === 'deliverWebhook') {
      // A receiver may be down for hours: tries spread over about a day, each wait twice the last.
      return { ...base, retries: webhooks.maxAttempts - 1, backoff: { strategy: 'exponential', delay: webhooks.retryDelayMs } };
    }
    // Bee-Queue refuses a fixed backoff of 0 ms; TASK_RETRY_DELAY_S=0 means retry at once.
    return { ...base, retries: worker.maxRetries, backoff: { strategy: worker.retryDelayMs > 0 ? 'fixed' : 'immediate', delay: worker.retryDelayMs } };
  }

  private async bounded(add: () => Promise<boolean>): Promise<boolean> {
    // A worker's connection queues commands while disconnected (it waits for Redis to return):
    // bound the wait. An add that lands after the timeout finds its generation already ended and
    // does nothing. (The API's connection fails sooner by itself: REDIS_COMMAND_TIMEOUT_MS.)
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new JobError('QUEUE_UNAVAILABLE', `Redis did not take the job within ${this.config.redis.enqueueTimeoutMs} ms.`)),
        this.config.redis.enqueueTimeoutMs,
      );
    });
    try {
      return await Promise.race([add(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    if (this.owned) await closeRedis(this.redis);
  }
}
