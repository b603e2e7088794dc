/**
 * Photo credits move only with a row in the credit ledger, written in the same statement or
 * transaction as the balance (migrations/004_credit_ledger.ts says why and how). The charge of a
 * generation is written by its insert (src/db/statements.ts) and its refund by its end
 * (src/generation/repository.ts); grants, and reading the history, are here.
 */
import type { Knex } from 'knex';
import { CreditLedgerEntry, User, type CreditKind } from '../db/models';
import { pageQuery, toPage, type Page, type PageRequest } from '../paging';
import { DomainError } from '../errors';

/** The most a single grant may add or take: a typo of a few zeros is refused, not booked. */
export const MAX_GRANT = 1_000_000;
export const MAX_REASON_LENGTH = 500;
/** The balance column is a 32-bit integer. */
export const MAX_BALANCE = 2 ** 31 - 1;

export interface CreditEntry {
  id: string;
  kind: CreditKind;
  amount: number;
  generationId: string | null;
  reason: string | null;
  createdAt: Date;
}

/**
 * Adds `amount` (negative takes) to a user's credits with a grant row, in the caller's transaction
 * or a new one. Returns the new balance, or null when the user does not exist. A grant that would
 * take the balance below zero is refused.
 */
export async function grantCredits(db: Knex | Knex.Transaction, userId: string, amount: number, reason: string): Promise<number | null> {
  if (!Number.isSafeInteger(amount) || amount === 0 || Math.abs(amount) > MAX_GRANT) {
    throw new DomainError('BAD_USER_INPUT', `A grant is a whole number of credits, not 0, at most ${MAX_GRANT} either way.`, { field: 'amount' });
  }
  const why = reason.trim();
  if (why.length === 0 || why.length > MAX_REASON_LENGTH) {
    throw new DomainError('BAD_USER_INPUT', `Say why, in 1 to ${MAX_REASON_LENGTH} characters.`, { field: 'reason' });
  }
  const run = async (trx: Knex.Transaction) => {
    const user = await User.query(trx).findById(userId).forUpdate().select('photo_credits');
    if (!user) return null;
    const balance = user.photo_credits + amount;
    if (balance > MAX_BALANCE) {
      throw new DomainError('BAD_USER_INPUT', `A balance holds at most ${MAX_BALANCE} credits; the user has ${user.photo_credits}.`, { field: 'amount' });
    }
    if (balance < 0) {
      throw new DomainError('BAD_USER_INPUT', `The user has ${user.photo_credits} credits; taking ${-amount} would go below zero.`, { field: 'amount' });
    }
    await User.query(trx).findById(userId).patch({ photo_credits: balance, updated_at: trx.fn.now() as unknown as Date });
    await CreditLedgerEntry.query(trx).insert({ user_id: userId, kind: 'grant', amount, reason: why });
    return balance;
  };
  return 'isTransaction' in db && db.isTransaction ? run(db as Knex.Transaction) : db.transaction(run);
}

/**
 * Sets a user's credits to `credits` with a grant row for the difference (npm run user:create on an
 * existing address), in the caller's transaction.
 */
export async function setCredits(trx: Knex.Transaction, userId: string, credits: number, reason: string): Promise<void> {
  const user = await User.query(trx).findById(userId).forUpdate().select('photo_credits');
  if (!user) throw new Error(`user ${userId} vanished while its credits were set`);
  const delta = credits - user.photo_credits;
  if (delta === 0) return;
  await User.query(trx).findById(userId).patch({ photo_credits: credits, updated_at: trx.fn.now() as unknown as Date });
  await CreditLedgerEntry.query(trx).insert({ user_id: userId, kind: 'grant', amount: delta, reason });
}

/** A user's ledger, newest first, a page at a time (src/paging.ts). */
export async function creditHistory(db: Knex, userId: string, req: PageRequest): Promise<Page<CreditEntry>> {
  const rows = (await pageQuery(db, 'credit_ledger', req, 'credits').where({ user_id: userId })) as Array<{
    id: string;
    kind: CreditKind;
    amount: number;
    generation_id: string | null;
    reason: string | null;
    created_at: Date;
    cursor_at: string;
  }>;
  return toPage(
    'credits',
    req,
    rows.map((r) => ({
      id: String(r.id),
      kind: r.kind,
      amount: r.amount,
      generationId: r.generation_id,
      reason: r.reason,
      createdAt: r.created_at,
      cursor_at: r.cursor_at,
    })),
  );
}

/** Users whose balance differs from the sum of their ledger (none, ever: tests check it). */
export async function unbalancedUsers(db: Knex): Promise<Array<{ id: string; balance: number; ledger: number }>> {
  const result = await db.raw<{ rows: Array<{ id: string; balance: number; ledger: string | number }> }>(
    `SELECT u.id, u.photo_credits AS balance, coalesce(l.total, 0) AS ledger
     FROM users u LEFT JOIN (SELECT user_id, sum(amount) AS total FROM credit_ledger GROUP BY user_id) l ON l.user_id = u.id
     WHERE u.photo_credits <> coalesce(l.total, 0)`,
  );
  return result.rows.map((r) => ({ id: r.id, balance: r.balance, ledger: Number(r.ledger) }));
}
