import type { Knex } from 'knex';

/**
 * Idempotent submit and start deadlines (README "Idempotent submit and start deadlines").
 *
 * - `generations.start_deadline_at`: set from startDeadlineSeconds by the statement that creates the
 *   generation (Postgres's clock); a generation still QUEUED then is ended CANCELLED with
 *   DEADLINE_EXCEEDED. A partial index keeps the sweep that looks for such rows to the few that
 *   have a deadline and are still queued.
 * - `idempotency_keys`: one row per (user, key), written by the same statement that reserves the
 *   credits and inserts the generation. Its primary key is what settles two requests with one key
 *   racing on two API processes: the second statement waits for the first to commit, then fails on
 *   the key and charges nothing. A key past `expires_at` is deleted by the request that reuses it.
 *
 * Outside a transaction, so that the index is built CONCURRENTLY (generateImage keeps inserting
 * meanwhile); every step may run again after an interrupted run.
 */
export const config = { transaction: false };

export async function up(knex: Knex): Promise<void> {
  await knex.raw('ALTER TABLE generations ADD COLUMN IF NOT EXISTS start_deadline_at timestamptz');
  await knex.raw(
    `CREATE TABLE IF NOT EXISTS idempotency_keys (
       user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
       key text NOT NULL,
       input_hash text NOT NULL,
       generation_id uuid NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
       created_at timestamptz NOT NULL DEFAULT now(),
       expires_at timestamptz NOT NULL,
       PRIMARY KEY (user_id, key)
     )`,
  );
  // The enqueue-failure path releases a key by its generation.
  await knex.raw('CREATE INDEX IF NOT EXISTS idempotency_keys_generation ON idempotency_keys (generation_id)');
  const invalid = await knex.raw<{ rows: unknown[] }>(
    `SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE c.relname = 'generations_queued_start_deadline' AND NOT i.indisvalid`,
  );
  if (invalid.rows.length > 0) await knex.raw('DROP INDEX CONCURRENTLY generations_queued_start_deadline');
  await knex.raw(
    `CREATE INDEX CONCURRENTLY IF NOT EXISTS generations_queued_start_deadline ON generations (start_deadline_at)
     WHERE status = 'QUEUED' AND start_deadline_at IS NOT NULL`,
  );
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
