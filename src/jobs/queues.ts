import BeeQueue from 'bee-queue';
import type { Config, QueueName } from '../config';
import type { JobEnvelope, JobKind, JobPayloads } from './registry';
import { JOB_QUEUES, jobId } from './registry';

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
    // Postgres keeps the history; Redis keeps only what is still moving.
    removeOnSuccess: true,
    removeOnFailure: true,
    stallInterval: config.worker.stallIntervalMs,
  });
}

/** Redis key of a queue's waiting list (LPUSHed by producers, taken from the right by workers). */
export const waitingKey = (config: Config, queue: QueueName) => `${config.redis.prefix}:${queue}:waiting`;

export class JobProducer {
  private readonly queues = new Map<QueueName, Queue>();

  constructor(private readonly config: Config) {}

  private queue(name: QueueName): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = createQueue(this.config, name, { worker: false });
      this.queues.set(name, q);
    }
    return q;
  }

  /**
   * Adds a job whose id is derived from `key`. Returns false when a job with that id already
   * exists (a re-delivered step enqueuing its follow-up again), which is not an error.
   */
  async enqueue<K extends JobKind>(kind: K, key: string, payload: JobPayloads[K]): Promise<boolean> {
    const { worker } = this.config;
    const job = this.queue(JOB_QUEUES[kind])
      .createJob({ kind, payload } as JobEnvelope)
      .setId(jobId(kind, key))
      .retries(worker.maxRetries)
      .backoff('fixed', worker.retryDelayMs)
      // A safety net above the processor's own hard limit, which really stops the work.
      .timeout(worker.timeLimitMs + 30_000);
    const saved = await job.save();
    // Bee-Queue's addJob script returns nil for a duplicate id; the saved job then has no id.
    return Boolean(saved.id);
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }
}
