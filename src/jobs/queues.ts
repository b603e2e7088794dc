import BeeQueue from 'bee-queue';
import type { Redis } from 'ioredis';
import type { Config, QueueName } from '../config';
import type { Logger } from '../logger';
import { closeRedis, openRedis } from '../redis';
import { JobError } from './errors';
import type { JobEnvelope, JobKind, JobPayloads } from './registry';
import { JOB_QUEUES, jobId } from './registry';
import { forgetEndedJob } from './storedJobs';

export type Queue = BeeQueue<JobEnvelope>;

export interface QueueRole {
  /** Workers consume; producers (the API) only add jobs and need no events or stored job objects. */
  worker: boolean;
}

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

export class JobProducer {
  private readonly queues = new Map<QueueName, Queue>();
  /** Opened on the first duplicate id, to let go of a kept job that ended (see enqueue). */
  private redis: Redis | undefined;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  private queue(name: QueueName): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = createQueue(this.config, name, { worker: false });
      // Bee-Queue re-emits its Redis client's errors (every failed reconnect): without a listener
      // Node would throw and a Redis restart would take the whole process down.
      q.on('error', (err: Error) => this.log.warn({ err: err.message, queue: name }, 'job queue connection error'));
      this.queues.set(name, q);
    }
    return q;
  }

  /**
   * Adds a job whose id is derived from `key`. Returns false when a job with that id is already
   * waiting, delayed or running (a re-delivered step enqueuing its follow-up again), which is not
   * an error. A job of that id that has ended and is only kept for the dashboard (QUEUE_KEEP_*) does
   * not count: it is let go and the new one added, as if it had been removed when it ended.
   */
  async enqueue<K extends JobKind>(kind: K, key: string, payload: JobPayloads[K]): Promise<boolean> {
    const queue = JOB_QUEUES[kind];
    const id = jobId(kind, key);
    return this.bounded(async () => {
      if ((await this.save(kind, id, payload)).id) return true;
      this.redis ??= openRedis(this.config.redis.url, 'producer', this.log);
      if (!(await forgetEndedJob(this.redis, this.config.redis.prefix, queue, id))) return false;
      return Boolean((await this.save(kind, id, payload)).id);
    });
  }

  private save<K extends JobKind>(kind: K, id: string, payload: JobPayloads[K]) {
    const { worker, webhooks } = this.config;
    const job = this.queue(JOB_QUEUES[kind])
      .createJob({ kind, payload } as JobEnvelope)
      .setId(id)
      // A safety net above the processor's own hard limit, which really stops the work.
      .timeout(worker.timeLimitMs + 30_000);
    if (kind === 'deliverWebhook') {
      // A receiver may be down for hours: tries spread over about a day, each wait twice the last.
      job.retries(webhooks.maxAttempts - 1).backoff('exponential', webhooks.retryDelayMs);
    } else {
      // Bee-Queue refuses a fixed backoff of 0 ms; TASK_RETRY_DELAY_S=0 means retry at once.
      job.retries(worker.maxRetries).backoff(worker.retryDelayMs > 0 ? 'fixed' : 'immediate', worker.retryDelayMs);
    }
    // Bee-Queue's addJob script returns nil for a duplicate id; the saved job then has no id.
    return job.save();
  }

  private async bounded(add: () => Promise<boolean>): Promise<boolean> {
    // Bee-Queue's Redis client queues commands while disconnected (for up to an hour): bound the
    // wait. A save that lands after the timeout finds its generation already ended and does nothing.
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
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()).concat(this.redis ? [closeRedis(this.redis)] : []));
    this.queues.clear();
    this.redis = undefined;
  }
}
