import type { Knex } from 'knex';

/**
 * The stranded-generation sweep (src/generation/orphans.ts) reads the live generations untouched
 * for a while, every minute on every worker: a partial index keeps that off the finished history.
 * The live statuses as they were when this migration was written.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(
    `CREATE INDEX generations_live_by_updated_at ON generations (updated_at)
     WHERE status IN ('QUEUED', 'STARTED', 'GENERATING', 'POST_PROCESSING', 'UPLOADING', 'RETRYING')`,
  );
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
