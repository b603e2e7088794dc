/**
 * Every write to a generation's row goes through here. Status changes never leave a terminal state
 * (SUCCEEDED, FAILED, CANCELLED), so a late or re-delivered step cannot undo a final outcome, and the
 * credits go back in the same statement that makes a generation FAILED or CANCELLED: exactly once.
 */
import type { Knex } from 'knex';
import { Generation } from '../db/models';
import type { GenerationInput } from './input';
import type { GenerationStatus } from './status';
import { TERMINAL_STATUSES } from './status';

const TERMINAL_SQL = [...TERMINAL_STATUSES].map((s) => `'${s}'`).join(', ');

export interface GenerationRow {
  id: string;
  user_id: string;
  status: GenerationStatus;
  input: GenerationInput;
  credits_reserved: number;
  attempts: number;
  progress: number;
  error_code: string | null;
  error_message: string | null;
  error_retryable: boolean | null;
  refunded_at: Date | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  updated_at: Date;
}

/**
 * Reserves `batchSize` credits and inserts the generation in ONE statement (a data-modifying CTE):
 * no credits, no row; a row, credits taken. Returns null when the user has too few credits.
 */
export async function insertGenerationReservingCredits(
  db: Knex,
  args: { id: string; userId: string; input: GenerationInput },
): Promise<GenerationRow | null> {
  const credits = args.input.batchSize;
  const result = await db.raw<{ rows: GenerationRow[] }>(
    `WITH reserved AS (
       UPDATE users SET photo_credits = photo_credits - :credits, updated_at = now()
       WHERE id = :userId AND photo_credits >= :credits
       RETURNING id
     )
     INSERT INTO generations (id, user_id, status, input, credits_reserved)
     SELECT :id, reserved.id, 'QUEUED', :input, :credits FROM reserved
     RETURNING *`,
    { id: args.id, userId: args.userId, credits, input: JSON.stringify(args.input) },
  );
  return result.rows[0] ?? null;
}

export async function findGeneration(db: Knex, id: string): Promise<GenerationRow | null> {
  const row = await Generation.query(db).findById(id);
  return (row as GenerationRow | undefined) ?? null;
}

/** Moves a live generation to a non-terminal status; returns the row, or null if it is already final. */
export async function setGenerationStatus(
  db: Knex,
  id: string,
  status: Exclude<GenerationStatus, 'SUCCEEDED' | 'FAILED' | 'CANCELLED'>,
  extra: { progress?: number; newAttempt?: boolean } = {},
): Promise<GenerationRow | null> {
  const result = await db.raw<{ rows: GenerationRow[] }>(
    `UPDATE generations SET status = :status, updated_at = now(),
       progress = GREATEST(progress, :progress),
       attempts = attempts + :inc,
       started_at = CASE WHEN :inc = 1 THEN COALESCE(started_at, now()) ELSE started_at END
     WHERE id = :id AND status NOT IN (${TERMINAL_SQL})
     RETURNING *`,
    { id, status, progress: extra.progress ?? 0, inc: extra.newAttempt ? 1 : 0 },
  );
  return result.rows[0] ?? null;
}

export interface GenerationFailure {
  code: string;
  message: string;
  retryable: boolean;
}

/**
 * Ends a live generation as FAILED or CANCELLED and gives its reserved credits back, in one
 * statement. Returns null when the generation was already final (nothing changes, nothing refunded).
 */
export async function endGenerationWithRefund(
  db: Knex,
  id: string,
  status: 'FAILED' | 'CANCELLED',
  error: GenerationFailure,
): Promise<GenerationRow | null> {
  const result = await db.raw<{ rows: GenerationRow[] }>(
    `WITH ended AS (
       UPDATE generations SET status = :status, error_code = :code, error_message = :message,
         error_retryable = :retryable, refunded_at = now(), finished_at = now(), updated_at = now()
       WHERE id = :id AND status NOT IN (${TERMINAL_SQL}) AND refunded_at IS NULL
       RETURNING *
     ), refund AS (
       UPDATE users SET photo_credits = users.photo_credits + ended.credits_reserved, updated_at = now()
       FROM ended WHERE users.id = ended.user_id
       RETURNING users.id
     )
     SELECT ended.* FROM ended`,
    { id, status, code: error.code, message: error.message, retryable: error.retryable },
  );
  return result.rows[0] ?? null;
}
