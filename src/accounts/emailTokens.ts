/**
 * Single-use tokens sent by mail: verify an address, reset a password. Random, stored as sha256,
 * expiring after EMAIL_TOKEN_TTL_S; using one marks it used in the same statement that checks it,
 * so two clicks racing each other cannot both succeed.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { hashToken } from '../auth/tokens';

export type EmailTokenPurpose = 'verify_email' | 'reset_password';

/**
 * Makes a token for a mail. A verification token carries the password hash of the sign-up that
 * made it, which following the link sets (see AccountService.signUp).
 */
export async function createEmailToken(
  db: Knex | Knex.Transaction,
  userId: string,
  purpose: EmailTokenPurpose,
  ttlS: number,
  passwordHash: string | null = null,
): Promise<{ id: string; token: string }> {
  const token = randomBytes(32).toString('base64url');
  const [row] = (await db('email_tokens')
    .insert({
      user_id: userId,
      purpose,
      token_hash: hashToken(token),
      password_hash: passwordHash,
      expires_at: db.raw('now() + make_interval(secs => ?)', [ttlS]),
    })
    .returning('id')) as Array<{ id: string }>;
  return { id: row!.id, token };
}

/**
 * Uses a token once: the user it was made for (and the password hash it carries), or null when it
 * is unknown, used, expired or for another purpose.
 */
export async function useEmailToken(
  db: Knex | Knex.Transaction,
  token: string,
  purpose: EmailTokenPurpose,
): Promise<{ userId: string; passwordHash: string | null } | null> {
  if (token.length === 0 || token.length > 200) return null;
  const [row] = (await db('email_tokens')
    .where({ token_hash: hashToken(token), purpose })
    .whereNull('used_at')
    .where('expires_at', '>', db.fn.now())
    .update({ used_at: db.fn.now() })
    .returning(['user_id', 'password_hash'])) as Array<{ user_id: string; password_hash: string | null }>;
  return row ? { userId: row.user_id, passwordHash: row.password_hash } : null;
}

/** Ends a user's other unused tokens of a purpose (after one of them was used). */
export async function retireEmailTokens(db: Knex | Knex.Transaction, userId: string, purpose: EmailTokenPurpose): Promise<void> {
  await db('email_tokens').where({ user_id: userId, purpose }).whereNull('used_at').update({ used_at: db.fn.now() });
}
