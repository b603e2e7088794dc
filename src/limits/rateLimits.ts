/**
 * The request-rate limits, counted in Redis (rate-limiter-flexible's fixed windows) so that they
 * hold across API processes: generations per user, and sign-in, sign-up and password-reset attempts
 * per address and per client address. A setting of 0 turns its limit off (no Redis call).
 *
 * When Redis does not answer within RATE_LIMIT_REDIS_TIMEOUT_MS (the connection given here has that
 * commandTimeout and no offline queue, and the limiters refuse at once while it is not connected):
 * - sign-in, sign-up and reset fail CLOSED (SERVICE_UNAVAILABLE): they are what a password-guessing
 *   or mail-flooding script sends, and without Redis nothing would stop it;
 * - generations fail OPEN: queuing the job needs Redis anyway, so the existing path answers
 *   (SERVICE_UNAVAILABLE, credits returned) if Redis is really gone, and a slow limiter alone does
 *   not stop paying users.
 * Either way the outage is logged once, and its end once.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { Config } from '../config';
import { rateLimited, serviceUnavailable } from '../errors';
import type { Logger } from '../logger';
import { ipLimitKey } from './clientIp';
import { OutageLog } from './outage';

/** The windows, in seconds: fixed here, the settings give the counts. */
export const WINDOWS_S = {
  generations: 60,
  signInPerAddress: 15 * 60,
  perIp: 60 * 60,
  signUpPerAddress: 60 * 60,
  passwordResetPerAddress: 60 * 60,
} as const;

export type AttemptKind = 'signIn' | 'signUp' | 'passwordReset';

const ATTEMPT_NAMES: Record<AttemptKind, string> = {
  signIn: 'sign-in attempts',
  signUp: 'sign-ups',
  passwordReset: 'password-reset requests',
};

/** Addresses are counted by a hash: Redis never holds them in the clear. */
const addressKey = (address: string) => createHash('sha256').update(address).digest('base64url').slice(0, 32);

const retryAfterS = (res: RateLimiterRes) => Math.max(1, Math.ceil(res.msBeforeNext / 1000));

export class RateLimits {
  private readonly generations: RateLimiterRedis | null;
  private readonly attempts: Record<AttemptKind, { perAddress: RateLimiterRedis | null; perIp: RateLimiterRedis | null }>;
  private readonly openOutage: OutageLog;
  private readonly closedOutage: OutageLog;

  constructor(
    redis: Redis,
    prefix: string,
    private readonly settings: Config['rateLimits'],
    log: Logger,
  ) {
    const limiter = (name: string, points: number, duration: number) =>
      points > 0
        ? new RateLimiterRedis({ storeClient: redis, keyPrefix: `${prefix}:limit:${name}`, points, duration, rejectIfRedisNotReady: true })
        : null;
    this.generations = limiter('generations', settings.generationsPerMinute, WINDOWS_S.generations);
    this.attempts = {
      signIn: {
        perAddress: limiter('signin:address', settings.signInPerAddress, WINDOWS_S.signInPerAddress),
        perIp: limiter('signin:ip', settings.signInPerIp, WINDOWS_S.perIp),
      },
      signUp: {
        perAddress: limiter('signup:address', settings.signUpPerAddress, WINDOWS_S.signUpPerAddress),
        perIp: limiter('signup:ip', settings.signUpPerIp, WINDOWS_S.perIp),
      },
      passwordReset: {
        perAddress: limiter('reset:address', settings.passwordResetPerAddress, WINDOWS_S.passwordResetPerAddress),
        perIp: limiter('reset:ip', settings.passwordResetPerIp, WINDOWS_S.perIp),
      },
    };
    this.openOutage = new OutageLog(log, 'generations are not rate-limited');
    this.closedOutage = new OutageLog(log, 'sign-in, sign-up and password reset are refused');
  }

  /**
   * Counts one generation request of the user; RATE_LIMITED past RATE_LIMIT_GENERATIONS_PER_MINUTE.
   * One Redis round trip (a script), before anything is reserved. Fails open.
   */
  async generation(userId: string): Promise<void> {
    if (!this.generations) return;
    try {
      await this.generations.consume(userId);
      this.openOutage.ok();
    } catch (err) {
      if (err instanceof RateLimiterRes) {
        const wait = retryAfterS(err);
        throw rateLimited(`At most ${this.settings.generationsPerMinute} generations a minute; try again in ${wait} s.`, wait);
      }
      this.openOutage.failed(err, 'generations');
    }
  }

  /**
   * Counts one sign-in, sign-up or reset attempt, by the address it names (normalized; null when it
   * is not one, then only the client counts) and by the client's address. RATE_LIMITED past either
   * limit; SERVICE_UNAVAILABLE when Redis does not answer (fails closed).
   */
  async attempt(kind: AttemptKind, address: string | null, ip: string): Promise<void> {
    const { perAddress, perIp } = this.attempts[kind];
    const counted = [perIp?.consume(ipLimitKey(ip)), address === null ? undefined : perAddress?.consume(addressKey(address))];
    const results = await Promise.allSettled(counted);
    let refused: RateLimiterRes | null = null;
    let failure: { err: unknown } | null = null;
    for (const r of results) {
      if (r.status === 'fulfilled') continue;
      if (r.reason instanceof RateLimiterRes) {
        if (!refused || r.reason.msBeforeNext > refused.msBeforeNext) refused = r.reason;
      } else {
        failure ??= { err: r.reason };
      }
    }
    if (failure) {
      this.closedOutage.failed(failure.err, kind);
      throw serviceUnavailable('This cannot be done right now; try again in a moment.');
    }
    this.closedOutage.ok();
    if (refused) {
      const wait = retryAfterS(refused);
      throw rateLimited(`Too many ${ATTEMPT_NAMES[kind]}; try again in ${wait} s.`, wait);
    }
  }

  /**
   * A sign-in with the right password clears its address's count, so that the owner's own sign-ins
   * never lock them out; the guesses of others still count by client. Best effort.
   */
  async signInSucceeded(address: string): Promise<void> {
    await this.attempts.signIn.perAddress?.delete(addressKey(address)).catch(() => undefined);
  }
}
