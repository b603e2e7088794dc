/**
 * API tokens: random, shown once, stored as sha256. Sign-up with email verification will create
 * users through `createUserWithToken` as well; the request side only ever sees `authenticate`.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';

export interface AuthUser {
  id: string;
  email: string;
  isAdmin: boolean;
}

const TOKEN_PREFIX = 'sdk_';

export const generateToken = (): string => TOKEN_PREFIX + randomBytes(32).toString('base64url');
export const hashToken = (token: string): string => createHash('sha256').update(token).digest('hex');

/** Parses `Authorization: Bearer <token>`; anything else is no token. */
export function bearerToken(header: string | null | undefined): string | null {
  const m = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return m?.[1] ?? null;
}

export async function authenticate(db: Knex, token: string): Promise<AuthUser | null> {
  const row = await db('api_tokens as t')
    .join('users as u', 'u.id', 't.user_id')
    .where('t.token_hash', hashToken(token))
    .whereNull('t.revoked_at')
    .first<{ id: string; email: string; is_admin: boolean } | undefined>('u.id', 'u.email', 'u.is_admin');
  return row ? { id: row.id, email: row.email, isAdmin: row.is_admin } : null;
}

export async function issueToken(db: Knex, userId: string, name = 'default'): Promise<string> {
  const token = generateToken();
  await db('api_tokens').insert({ user_id: userId, token_hash: hashToken(token), name });
  return token;
}

/** Creates the user (or tops up credits of an existing email) and returns a fresh token. */
export async function createUserWithToken(
  db: Knex,
  args: { email: string; credits: number; isAdmin?: boolean },
): Promise<{ userId: string; token: string }> {
  const email = args.email.trim().toLowerCase();
  const [user] = (await db('users')
    .insert({ email, photo_credits: args.credits, is_admin: args.isAdmin ?? false })
    .onConflict('email')
    .merge({ photo_credits: args.credits, updated_at: db.fn.now() })
    .returning('id')) as Array<{ id: string }>;
  if (!user) throw new Error('user insert returned no row');
  return { userId: user.id, token: await issueToken(db, user.id) };
}
