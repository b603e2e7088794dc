/**
 * A generation whose row was inserted (credits reserved) but whose job never reached Redis: the API
 * process died between the two steps. Workers look for such rows now and then and enqueue them;
 * the job id is the generation id, so a job that does exist is never doubled.
 */
import type { Knex } from 'knex';
import type { Redis } from 'ioredis';
import type { JobProducer } from '../jobs/queues';

/** Rows younger than this are left alone: their API may be enqueuing them right now. */
export const ORPHAN_MIN_AGE_S = 60;
/** How often a worker that consumes high_priority looks for them. */
export const ORPHAN_SWEEP_INTERVAL_MS = 60_000;

export async function requeueOrphanedGenerations(
  db: Knex,
  redis: Redis,
  jobsKey: string,
  producer: JobProducer,
  limit = 100,
): Promise<string[]> {
  const rows: Array<{ id: string }> = await db('generations')
    .where({ status: 'QUEUED' })
    .where('created_at', '<', db.raw(`now() - interval '${ORPHAN_MIN_AGE_S} seconds'`))
    .orderBy('created_at')
    .limit(limit)
    .select('id');
  const requeued: string[] = [];
  for (const { id } of rows) {
    // Waiting, delayed and active jobs all have their record in the queue's jobs hash.
    if (await redis.hexists(jobsKey, id)) continue;
    if (await producer.enqueue('generateImage', id, { generationId: id })) requeued.push(id);
  }
  return requeued;
}
