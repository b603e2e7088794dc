/**
 * API tokens: random, shown once, stored as sha256. Sign-up with email verification will create
 * users through `createUserWithToken` as well; the request side only ever sees `authenticate` (through
 * the per-process cache in `cache.ts`).
 */
import { hash, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { findUserByTokenHash } from '../db/statements';

export interface AuthUser {
  id: string;
  email: string;
  isAdmin: boolean;
}

const TOKEN_PREFIX = 'sdk_';

export const generateToken = (): string => TOKEN_PREFIX + randomBytes(32).toString('base64url');
// One-shot `hash` (no Hash object): it runs for every authenticated request.
export const hashToken = (token: string): string => hash('sha256', token, 'hex');

/** Parses `Authorization: Bearer <token>`; anything else is no token. */
export function bearerToken(header: string | null | undefined): string | null {
  const m = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return m?.[1] ?? null;
}

export async function authenticate(db: Knex, token: string): Promise<AuthUser | null> {
  return findUserByTokenHash(db, hashToken(token));
}

export async function issueToken(db: Knex, userId: string, name = 'default'): Promise<string> {
  const token = generateToken();
  await db('api_tokens').insert({ user_id: userId, token_hash: hashToken(token), name });
  return token;
}

/** Creates the user (or sets the credits of an existing email to `credits`) and returns a fresh token. */
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
