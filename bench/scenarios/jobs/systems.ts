/**
 * What the job-throughput scenario compares, shared by the parent (../jobs.ts) and its two child
 * processes (./producer.ts fills a queue, ./worker.ts drains it). Every system gets the same jobs:
 * the project's envelope `{ kind: 'generateImage', payload: { generationId } }` with a UUID job id.
 */
import { loadConfig, type Config, type QueueName } from '../../../src/config';
import { JOB_QUEUES } from '../../../src/jobs/registry';

export const SYSTEMS = {
  own: 'own job layer (JobConsumer + createJobHandler + state tracker)',
  bee: 'raw Bee-Queue',
  bullmq: 'BullMQ',
  'own-bee': "own job layer on Bee-Queue's process() loop (before)",
} as const;
export type SystemId = keyof typeof SYSTEMS;

export const isSystemId = (s: string): s is SystemId => s in SYSTEMS;

/** The queue real generateImage jobs go to. */
export const QUEUE: QueueName = JOB_QUEUES.generateImage;

/** The service's configuration with defaults, only Redis set: the queues and limits production uses. */
export const benchConfig = (redisUrl: string, prefix: string): Config =>
  loadConfig({ REDIS_URL: redisUrl, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent' });

/** Parent → worker child. */
export type ToWorker =
  | { type: 'prepare'; prefix: string; concurrency: number; jobs: number }
  | { type: 'start' }
  | { type: 'release' }
  | { type: 'close' };
/** Worker child → parent. */
export type FromWorker =
  | { type: 'up' }
  | { type: 'ready' }
  | {
      type: 'done';
      jobs: number;
      /** From the first job's start to the last job's end (own layer: and its states written). */
      seconds: number;
      /** The worker process's CPU time (user + system) over the same span, per job. */
      cpuUsPerJob: number;
      /** Own layer only: tracker figures, and the succeeded jobs counted in Redis afterwards. */
      flushes?: number;
      lost?: number;
      counted?: number;
      /** Own layer only: the consumer's finish-and-take calls. */
      calls?: number;
    }
  | { type: 'released' }
  | { type: 'closed' };

/** Parent → producer child. */
export type ToProducer = { type: 'fill'; system: SystemId; prefix: string; jobs: number } | { type: 'close' };
/** Producer child → parent. */
export type FromProducer = { type: 'ready' } | { type: 'filled'; jobs: number; seconds: number } | { type: 'closed' };

export const isMessage = <T extends { type: string }>(type: T['type']) => (m: unknown): m is T =>
  typeof m === 'object' && m !== null && (m as { type?: unknown }).type === type;
