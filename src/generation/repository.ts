/**
 * Every write to a generation's row goes through here. A status changes only by one of the named
 * transitions of ./lifecycle, written only from a status that transition allows (in the same
 * statement), so a late or re-delivered step can neither undo a final outcome nor move a generation
 * backwards; and the credits go back in the same statement that makes a generation FAILED or
 * CANCELLED: exactly once.
 */
import type { Knex } from 'knex';
import type { CreditMeter } from '../credits/meter';
import type { ModelObject } from 'objection';
import { Generation } from '../db/models';
import { pageQuery, toPage, type Page, type PageRequest } from '../paging';
import { IllegalTransitionError, isTerminal, LIVE_STATUSES, TRANSITIONS, type GenerationStatus, type Transition } from './lifecycle';

/** The statuses a transition may be taken from, as an SQL list (constants, never user input). */
export const fromStatusesSql = (transition: Transition): string => TRANSITIONS[transition].from.map((s) => `'${s}'`).join(', ');

/**
 * After a transition wrote no row: null when the generation is gone or already final (a cancel or
 * another delivery ended it: the caller stops quietly); an IllegalTransitionError otherwise.
 */
export async function refusedTransition(db: Knex, id: string, transition: Transition): Promise<null> {
  const current = await db('generations').where({ id }).first<{ status: GenerationStatus } | undefined>('status');
  if (!current || isTerminal(current.status)) return null;
  throw new IllegalTransitionError(id, current.status, transition);
}

/** A row of `generations`: the Generation model's columns, the one declaration of them. */
export type GenerationRow = ModelObject<Generation>;

/** The user's generations that have not finished (any live status; the partial index of migration 009). */
export async function countUnfinishedGenerations(db: Knex, userId: string): Promise<number> {
  const row = await db('generations').where({ user_id: userId }).whereIn('status', LIVE_STATUSES).count<{ n: string }>({ n: '*' }).first();
  return Number(row?.n ?? 0);
}

export async function findGeneration(db: Knex, id: string): Promise<GenerationRow | null> {
  const row = await Generation.query(db).findById(id);
  return (row as GenerationRow | undefined) ?? null;
}

/** Several generations in one query, in no particular order; ids that have no row are left out. */
export async function findGenerations(db: Knex, ids: readonly string[]): Promise<GenerationRow[]> {
  if (ids.length === 0) return [];
  return (await Generation.query(db).findByIds([...ids])) as GenerationRow[];
}

/** One page of a user's generations, newest first, optionally only those in `status` (as Postgres has it). */
export async function pageGenerations(
  db: Knex,
  userId: string,
  req: PageRequest,
  status: GenerationStatus | null,
): Promise<Page<GenerationRow>> {
  const q = pageQuery(db, 'generations', req, 'generations').where({ user_id: userId });
  if (status) q.where({ status });
  return toPage('generations', req, (await q) as Array<GenerationRow & { cursor_at: string }>);
}

/**
 * Takes one of the in-flight transitions (start, generate, postProcess, stage, retry); returns the
 * row, null when the generation is already final, and throws IllegalTransitionError (nothing
 * written) when its status does not allow the transition. `newAttempt` counts a new try (start).
 */
export async function transitionGeneration(
  db: Knex,
  id: string,
  transition: Exclude<Transition, 'succeed' | 'fail' | 'cancel' | 'expire'>,
  extra: { progress?: number; newAttempt?: boolean } = {},
): Promise<GenerationRow | null> {
  const result = await db.raw<{ rows: GenerationRow[] }>(
    `UPDATE generations SET status = :status, updated_at = now(),
       progress = GREATEST(progress, :progress),
       attempts = attempts + :inc,
       started_at = CASE WHEN :inc = 1 THEN COALESCE(started_at, now()) ELSE started_at END
     WHERE id = :id AND status IN (${fromStatusesSql(transition)})
     RETURNING *`,
    { id, status: TRANSITIONS[transition].to, progress: extra.progress ?? 0, inc: extra.newAttempt ? 1 : 0 },
  );
  return result.rows[0] ?? refusedTransition(db, id, transition);
}

export interface GenerationFailure {
  code: string;
  message: string;
  retryable: boolean;
}

/**
 * Ends a live generation as FAILED or CANCELLED and gives its reserved credits back with a refund
 * row in the credit ledger, in one statement. Returns null when the generation was already final (nothing changes, nothing refunded).
 * `expire` ends only a generation that never started whose start deadline has passed by Postgres's
 * clock (null otherwise): the worker about to start it and every API's sweep may race on it, and one wins.
 * The refund is counted on `credits` (this process's metrics) once the statement has run.
 */
export async function endGenerationWithRefund(
  db: Knex,
  id: string,
  transition: 'fail' | 'cancel' | 'expire',
  error: GenerationFailure,
  credits?: CreditMeter,
): Promise<GenerationRow | null> {
  const result = await db.raw<{ rows: GenerationRow[] }>(
    `WITH ended AS (
       UPDATE generations SET status = :status, error_code = :code, error_message = :message,
         error_retryable = :retryable, refunded_at = now(), finished_at = now(), updated_at = now()
       WHERE id = :id AND status IN (${fromStatusesSql(transition)}) AND refunded_at IS NULL
         ${transition === 'expire' ? 'AND started_at IS NULL AND start_deadline_at <= now()' : ''}
       RETURNING *
     ), refunded AS (
       -- The ledger's unique key allows one refund per generation; the balance moves only by the
       -- row written here, so a second refund cannot happen even if the guard above let one through.
       INSERT INTO credit_ledger (user_id, kind, amount, generation_id)
       SELECT user_id, 'refund', credits_reserved, id FROM ended WHERE credits_reserved > 0
       ON CONFLICT DO NOTHING
       RETURNING user_id, amount
     ), refund AS (
       UPDATE users SET photo_credits = users.photo_credits + refunded.amount, updated_at = now()
       FROM refunded WHERE users.id = refunded.user_id
       RETURNING users.id
     ), unstaged AS (
       -- Images staged for an upload that will never run now.
       DELETE FROM staged_images USING ended WHERE staged_images.generation_id = ended.id
       RETURNING staged_images.index
     )
     SELECT ended.* FROM ended`,
    { id, status: TRANSITIONS[transition].to, code: error.code, message: error.message, retryable: error.retryable },
  );
  const ended = result.rows[0] ?? null;
  // An ended row is always refunded: its refunded_at was NULL, and the ledger row goes with it.
  if (ended && ended.credits_reserved > 0) credits?.refunded(ended.credits_reserved, transition === 'fail' ? 'failed' : 'cancelled');
  return ended;
}
