/** Where a job is in its queue as Redis has it (waiting … failed; null: gone), for tests that wait on a job's end. */
import type { QueueName } from '../../src/config';
import { findStoredJob, type StoredState } from '../../src/jobs/storedJobs';
import type { Stack } from './stack';

export async function storedState(stack: Pick<Stack, 'redis' | 'config'>, queue: QueueName, id: string): Promise<StoredState | null> {
  return (await findStoredJob(stack.redis, stack.config.redis.prefix, queue, id))?.state ?? null;
}

/** The job has ended: gone from Redis, or kept as succeeded or failed (QUEUE_KEEP_*). */
export const hasEnded = (state: StoredState | null): boolean => state === null || state === 'succeeded' || state === 'failed';
