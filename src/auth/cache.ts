/**
 * Token → user, cached in this process, so that authenticating a request costs no database round
 * trip while the answer is fresh. Entries are keyed by the token's sha256 (the raw token is never
 * kept), expire after `ttlMs`, and the least recently used one goes when there are `maxEntries`.
 * An unknown or revoked token is remembered only for `negativeTtlMs` (a flood of bad tokens costs
 * one query per token per that period), and concurrent requests with the same uncached token share
 * one query.
 *
 * Hazard, by design: a revoked token (or a session past its expiry) keeps working for up to `ttlMs`
 * (AUTH_CACHE_TTL_MS) in every API process that has it cached, and so do a user's old email and
 * admin flag. (A cached "not verified" is checked again before it refuses anything.) Code that revokes a
 * token in this process should call `forget(token)`; other processes find out when the entry expires.
 * `ttlMs: 0` turns the cache off: every request is checked against the database.
 *
 * Each token that authenticates has its last use written to api_tokens.last_used_at, at most once a
 * minute and not awaited (./lastUsed.ts).
 */
import type { Knex } from 'knex';
import type { AuthUser } from './tokens';
import { findUserByTokenHash } from '../db/statements';
import { hashToken } from './tokens';
import { TokenUseRecorder } from './lastUsed';

export interface AuthCacheOptions {
  /** How long a found user is trusted without asking the database; 0 disables the cache. */
  ttlMs: number;
  /** How long "no such token" is remembered; capped at `ttlMs`. */
  negativeTtlMs: number;
  /** Entries kept at most (found and not found together); the least recently used goes first. */
  maxEntries: number;
  /** The clock (tests move it). */
  now?: () => number;
  /** A failed write of a token's last use (logged by the API; the use is written again a minute later). */
  onUseRecordError?: (err: unknown) => void;
}

interface Entry {
  user: AuthUser | null;
  expiresAt: number;
}

export class TokenAuthenticator {
  /** A Map iterates in insertion order: re-inserting on every hit keeps the oldest use first. */
  private readonly entries = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<AuthUser | null>>();
  private readonly now: () => number;
  private readonly negativeTtlMs: number;
  private readonly uses: TokenUseRecorder;

  constructor(
    private readonly db: Knex,
    private readonly opts: AuthCacheOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.negativeTtlMs = Math.min(opts.negativeTtlMs, opts.ttlMs);
    this.uses = new TokenUseRecorder(db, { maxEntries: opts.maxEntries, onError: opts.onUseRecordError, now: this.now });
  }

  /** Cached entries, expired ones included until they are next looked at or evicted. */
  get size(): number {
    return this.entries.size;
  }

  /** The token's user, or null; a token that authenticates has its last use recorded (at most once a minute, not awaited). */
  async authenticate(token: string): Promise<AuthUser | null> {
    const hash = hashToken(token);
    const user = await this.find(hash);
    if (user) this.uses.used(hash);
    return user;
  }

  /** Resolves when the last-use writes under way have ended: before the database is closed. */
  settled(): Promise<void> {
    return this.uses.settled();
  }

  private async find(hash: string): Promise<AuthUser | null> {
    if (this.opts.ttlMs <= 0) return findUserByTokenHash(this.db, hash);
    const entry = this.entries.get(hash);
    if (entry) {
      this.entries.delete(hash);
      if (entry.expiresAt > this.now()) {
        this.entries.set(hash, entry);
        return entry.user;
      }
    }
    let lookup = this.pending.get(hash);
    if (!lookup) {
      lookup = this.lookup(hash);
      this.pending.set(hash, lookup);
    }
    return lookup;
  }

  /** Drops a token's cached answer (after revoking it in this process). */
  forget(token: string): void {
    this.entries.delete(hashToken(token));
  }

  /** Drops the cached answers of tokens by their sha256 (tokens revoked by sign-out, a reset, a revoke). */
  forgetHashes(hashes: readonly string[]): void {
    for (const h of hashes) this.entries.delete(h);
  }

  clear(): void {
    this.entries.clear();
  }

  private async lookup(hash: string): Promise<AuthUser | null> {
    try {
      const found = await findUserByTokenHash(this.db, hash);
      // Frozen: the same object is handed to every request until it expires.
      const user = found ? Object.freeze(found) : null;
      const ttl = user ? this.opts.ttlMs : this.negativeTtlMs;
      if (ttl > 0) this.remember(hash, { user, expiresAt: this.now() + ttl });
      return user;
    } finally {
      this.pending.delete(hash);
    }
  }

  private remember(hash: string, entry: Entry): void {
    this.entries.delete(hash);
    while (this.entries.size >= this.opts.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
    this.entries.set(hash, entry);
  }
}
