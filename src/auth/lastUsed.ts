/**
 * When each token last authenticated a request (api_tokens.last_used_at), written at most once a
 * minute per token and never on the request's path:
 * - in this process, a memo of when each token's use was last written skips every use within the
 *   minute after it (no statement at all), and the write that does go out is not awaited;
 * - across processes, the UPDATE changes only a row whose last use is older than a minute (Postgres
 *   checks the condition again after a concurrent writer commits), so however many API processes
 *   see a token, its row is written at most once a minute.
 */
import type { Knex } from 'knex';

export interface TokenUseOptions {
  /** Tokens remembered at most; the one written longest ago is forgotten first (it is then written again on its next use). */
  maxEntries: number;
  /** A failed write (the use is recorded again a minute later); by default ignored. */
  onError?: (err: unknown) => void;
  /** The clock (tests move it). */
  now?: () => number;
}

/** How often a token's last use is written at most. */
export const LAST_USED_PRECISION_MS = 60_000;

export class TokenUseRecorder {
  /** Token hash → when this process last wrote its use; re-inserted on each write, so the oldest comes first. */
  private readonly written = new Map<string, number>();
  private readonly writing = new Set<Promise<void>>();
  private readonly now: () => number;

  constructor(
    private readonly db: Knex,
    private readonly opts: TokenUseOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  /** Notes that the token with this sha256 authenticated a request now; returns at once. */
  used(tokenHash: string): void {
    const now = this.now();
    const last = this.written.get(tokenHash);
    if (last !== undefined && now - last < LAST_USED_PRECISION_MS) return;
    this.written.delete(tokenHash);
    while (this.written.size >= this.opts.maxEntries) {
      const oldest = this.written.keys().next();
      if (oldest.done) break;
      this.written.delete(oldest.value);
    }
    this.written.set(tokenHash, now);
    const write: Promise<void> = this.write(tokenHash)
      .catch((err: unknown) => this.opts.onError?.(err))
      .finally(() => this.writing.delete(write));
    this.writing.add(write);
  }

  /** Resolves when the writes under way have ended (before the database closes; tests). */
  async settled(): Promise<void> {
    while (this.writing.size > 0) await Promise.allSettled([...this.writing]);
  }

  private async write(tokenHash: string): Promise<void> {
    await this.db
      .raw(
        `UPDATE api_tokens SET last_used_at = now()
         WHERE token_hash = ? AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => ?))`,
        [tokenHash, LAST_USED_PRECISION_MS / 1000],
      )
      .options({ name: 'sdjobs_record_token_use_v1' });
  }
}
