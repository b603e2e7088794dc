import type { Knex } from 'knex';

/**
 * MAX_UNFINISHED_GENERATIONS_PER_USER is checked inside the statement that creates every generation
 * (src/db/statements.ts): it counts the user's unfinished generations, which this partial index
 * keeps to a few entries per user whatever their history. The statuses are the live ones as they
 * were when this migration was written (src/generation/lifecycle.ts LIVE_STATUSES).
 *
 * Built CONCURRENTLY, outside a transaction, so that generateImage keeps inserting while it builds.
 * A build that was interrupted leaves an invalid index, which is dropped and built again here.
 */
export const config = { transaction: false };

export async function up(knex: Knex): Promise<void> {
  const invalid = await knex.raw<{ rows: unknown[] }>(
    `SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE c.relname = 'generations_unfinished_by_user' AND NOT i.indisvalid`,
  );
  if (invalid.rows.length > 0) await knex.raw('DROP INDEX CONCURRENTLY generations_unfinished_by_user');
  await knex.raw(
    `CREATE INDEX CONCURRENTLY IF NOT EXISTS generations_unfinished_by_user ON generations (user_id)
     WHERE status IN ('QUEUED', 'STARTED', 'GENERATING', 'POST_PROCESSING', 'UPLOADING', 'RETRYING')`,
  );
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
