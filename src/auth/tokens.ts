/**
 * API tokens: random, shown once, stored as sha256. Sign-up with email verification will create
 * users through `createUserWithToken` as well; the request side only ever sees `authenticate` (through
 * the per-process cache in `cache.ts`).
 */
import { hash, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { setCredits } from '../credits/ledger';
import { findUserByTokenHash } from '../db/statements';

export interface AuthUser {
  id: string;
  email: string;
  isAdmin: boolean;
  /** As the token lookup saw it (cached up to AUTH_CACHE_TTL_MS): a `false` is checked again before refusing. */
  emailVerified: boolean;
}

/** `api`: made for a program, no expiry until revoked; `session`: from signIn, expires after SESSION_TTL_S. */
export type TokenKind = 'api' | 'session';

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

export interface IssuedToken {
  id: string;
  token: string;
  name: string;
  createdAt: Date;
  expiresAt: Date | null;
}

/** Makes a token for the user; the raw token is returned here once and only its sha256 is stored. */
export async function issueToken(
  db: Knex | Knex.Transaction,
  userId: string,
  name = 'default',
  opts: { kind?: TokenKind; ttlS?: number } = {},
): Promise<IssuedToken> {
  const token = generateToken();
  const [row] = (await db('api_tokens')
    .insert({
      user_id: userId,
      token_hash: hashToken(token),
      name,
      kind: opts.kind ?? 'api',
      expires_at: opts.ttlS ? db.raw(`now() + make_interval(secs => ?)`, [opts.ttlS]) : null,
    })
    .returning(['id', 'name', 'created_at', 'expires_at'])) as Array<{ id: string; name: string; created_at: Date; expires_at: Date | null }>;
  return { id: row!.id, token, name: row!.name, createdAt: row!.created_at, expiresAt: row!.expires_at };
}

/**
 * Creates the user (or sets the credits of an existing email to `credits`) and returns a fresh token.
 * The credits change is booked in the ledger as a grant with `reason`.
 */
export async function createUserWithToken(
  db: Knex,
  args: { email: string; credits: number; isAdmin?: boolean; reason?: string },
): Promise<{ userId: string; token: string }> {
  const email = args.email.trim().toLowerCase();
  const userId = await db.transaction(async (trx) => {
    // An operator vouches for the address: it counts as verified.
    const [created] = (await trx('users')
      .insert({ email, photo_credits: 0, is_admin: args.isAdmin ?? false, email_verified_at: trx.fn.now() })
      .onConflict('email')
      .ignore()
      .returning('id')) as Array<{ id: string }>;
    const id = created?.id ?? ((await trx('users').where({ email }).first('id')) as { id: string } | undefined)?.id;
    if (!id) throw new Error('user insert returned no row');
    await setCredits(trx, id, args.credits, args.reason ?? 'set by npm run user:create');
    return id;
  });
  return { userId, token: (await issueToken(db, userId)).token };
}
