/**
 * Postgres holds the truth and Redis what is moving; this sweep reconciles the two. A generation in
 * a live status with no job record in Redis will never move again by itself:
 * - QUEUED: its API died between inserting the row (credits reserved) and enqueuing the job;
 * - any later status: its job was lost (a Redis without persistence restarted, a record removed by
 *   hand, or a worker died while recording the job's end).
 * Workers look for such rows now and then and finish them: enqueue the generation again while it
 * has attempts left (the job id is the generation id, so a job that does exist is never doubled;
 * a re-run with its images staged only uploads them), else end it FAILED with its credits back.
 * The same sweep drops the staged images of generations that ended without them being stored (a
 * cancel that raced the staging, a worker that died before queuing the upload).
 */
import type { Knex } from 'knex';
import type { Redis } from 'ioredis';
import { queueKeys } from '../jobs/consumer';
import type { JobProducer } from '../jobs/queues';
import { JOB_QUEUES, jobId } from '../jobs/registry';
import { discardEndedStagedImages } from './images';
import { LIVE_STATUSES, type GenerationStatus } from './lifecycle';


export interface StrandedSweep {
  db: Knex;
  redis: Redis;
  /** REDIS_PREFIX: the queues' keys are `<prefix>:<queue>:*`. */
  prefix: string;
  producer: JobProducer;
  /** A generation started this many times is not started again (TASK_MAX_RETRIES + 1 + TASK_MAX_STALLS). */
  maxAttempts: number;
  /** STRANDED_MIN_AGE_S: rows untouched for less than this are left alone (their API or worker may be at work on them). */
  minAgeS: number;
  /** Ends a generation FAILED with its credits back and tells its watchers. */
  fail(id: string, failure: { code: string; message: string; retryable: boolean }): Promise<void>;
  limit?: number;
}

export interface SweepResult {
  requeued: string[];
  failed: string[];
  /** Ended generations whose leftover staged images were dropped. */
  discardedStaged: number;
}

export async function sweepStrandedGenerations(s: StrandedSweep): Promise<SweepResult> {
  // Every live row untouched for a minute (a partial index serves this), up to `limit`, oldest
  // first: a backlog of healthy queued jobs must not hide a stranded one behind it.
  const rows: Array<{ id: string; status: GenerationStatus; attempts: number }> = await s.db('generations')
    .whereIn('status', LIVE_STATUSES)
    .where('updated_at', '<', s.db.raw(`now() - make_interval(secs => ?)`, [s.minAgeS]))
    .orderBy('updated_at')
    .limit(s.limit ?? 10_000)
    .select('id', 'status', 'attempts');
  const result: SweepResult = { requeued: [], failed: [], discardedStaged: await discardEndedStagedImages(s.db) };
  if (rows.length === 0) return result;
  // Waiting, delayed and active jobs all have their record in their queue's jobs hash (a job whose
  // worker died is the stall check's to re-queue); so do the ended jobs kept for the dashboard
  // (QUEUE_KEEP_*), whose records say so: both looked up for every row in one round trip.
  const jobsKeys = { generateImage: queueKeys(s.prefix, JOB_QUEUES.generateImage).jobs, uploadToCloud: queueKeys(s.prefix, JOB_QUEUES.uploadToCloud).jobs };
  const lookup = s.redis.pipeline();
  for (const { id } of rows) {
    lookup.hget(jobsKeys.generateImage, jobId('generateImage', id));
    lookup.hget(jobsKeys.uploadToCloud, jobId('uploadToCloud', id));
  }
  const found = (await lookup.exec()) ?? [];
  for (const [i, { id, status, attempts }] of rows.entries()) {
    const [generationErr, generation] = found[2 * i] ?? [null, null];
    const [uploadErr, upload] = found[2 * i + 1] ?? [null, null];
    if (generationErr || uploadErr) throw generationErr ?? uploadErr;
    if (isMoving(generation) || isMoving(upload)) continue;
    // UPLOADING has its images staged: the GPU work is done, a re-run only stages them again and
    // queues the upload.
    if (status === 'QUEUED' || status === 'UPLOADING' || attempts < s.maxAttempts) {
      if (await s.producer.enqueue('generateImage', id, { generationId: id })) result.requeued.push(id);
    } else {
      await s.fail(id, {
        code: 'TOO_MANY_ATTEMPTS',
        message: `The generation was started ${attempts} times and its job was lost; it was given up and its credits returned.`,
        retryable: false,
      });
      result.failed.push(id);
    }
  }
  return result;
}

/** A job record that is still waiting, delayed or active: not one kept after it ended (status succeeded or failed). */
function isMoving(raw: unknown): boolean {
  if (typeof raw !== 'string') return false;
  try {
    const status = (JSON.parse(raw) as { status?: unknown } | null)?.status;
    return status !== 'succeeded' && status !== 'failed';
  } catch {
    return true; // not ours to judge: the consumer drops an unusable record when it takes it
  }
}
