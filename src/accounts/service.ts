/**
 * Accounts: sign-up with a verified address, sessions, password reset, API tokens and the user's
 * notification settings. Everything a client can learn from sign-up and reset requests is the same
 * whether the address has an account or not (same answer, a password hashed either way, a mail in
 * both cases that says only what the mailbox's owner may know).
 */
import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Config } from '../config';
import { grantCredits } from '../credits/ledger';
import { groupedInOrderOf, inOrderOf } from '../db/inOrderOf';
import { User } from '../db/models';
import { DomainError, serviceUnavailable } from '../errors';
import type { RateLimits } from '../limits/rateLimits';
import { parseUuid } from '../ids';
import type { JobProducer } from '../jobs/queues';
import type { Logger } from '../logger';
import type { MailJob } from '../mail/templates';
import type { UserProfile } from '../auth/users';
import { hashToken, issueToken, type IssuedToken } from '../auth/tokens';
import { createEmailToken, retireEmailTokens, useEmailToken } from './emailTokens';
import { checkPassword, hashPassword, PASSWORD_MAX_LENGTH } from './passwords';

export const EMAIL_MAX_LENGTH = 254;
export const TOKEN_NAME_MAX_LENGTH = 100;
/**
 * An address as people type them: a dot-atom local part (RFC 5322's atext, no quoting, comments or
 * angle brackets, which a mailer would read as another recipient) and a domain of dotted labels.
 */
const EMAIL = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/;

export interface AccountServiceDeps {
  db: Knex;
  producer: JobProducer;
  settings: Config['accounts'];
  log: Logger;
  /** Drops tokens from this process's authentication cache after they were revoked. */
  forgetTokenHashes(hashes: string[]): void;
  /** Sign-in, sign-up and reset attempts per address and per client (src/limits/rateLimits.ts); none: unlimited. */
  limits?: Pick<RateLimits, 'attempt' | 'signInSucceeded'>;
}

export interface SignUpAnswer {
  email: string;
  message: string;
}

export interface Session {
  token: string;
  expiresAt: Date;
  user: UserProfile;
}

export interface ApiTokenInfo {
  id: string;
  name: string;
  createdAt: Date;
  /** When it last authenticated a request, to the minute; null if never (see src/auth/lastUsed.ts). */
  lastUsedAt: Date | null;
}

export interface NotificationSettings {
  imagesReady: boolean;
}

/** What a user who never changed them (or is gone) has. */
const DEFAULT_NOTIFICATIONS: NotificationSettings = Object.freeze({ imagesReady: true });

const invalidLink = (field: string) =>
  new DomainError('BAD_USER_INPUT', 'This link is not valid: it was used already, it expired, or it was never made.', { field });

export class AccountService {
  constructor(private readonly deps: AccountServiceDeps) {}

  /** Trimmed and lower-cased, or BAD_USER_INPUT. */
  normalizeEmail(raw: string): string {
    const email = raw.trim().toLowerCase();
    if (email.length > EMAIL_MAX_LENGTH || !EMAIL.test(email)) {
      throw new DomainError('BAD_USER_INPUT', 'Give an email address such as you@example.com.', { field: 'email' });
    }
    return email;
  }

  private checkNewPassword(password: string, field = 'password'): void {
    const min = this.deps.settings.passwordMinLength;
    if (password.length < min || password.length > PASSWORD_MAX_LENGTH) {
      throw new DomainError('BAD_USER_INPUT', `A password has ${min} to ${PASSWORD_MAX_LENGTH} characters.`, { field });
    }
  }

  /**
   * Makes an account and mails a verification link; an address that has an account gets a mail
   * saying so instead (or a fresh link, if it never verified), and the answer is the same.
   *
   * Each verification link carries the password of the sign-up that sent it, and following the link
   * sets that password: whoever signs up first with someone else's address (who cannot follow the
   * link) never holds the account's password, and while verification is required nobody signs in
   * before following one. The mail is queued after the transaction commits: a mail is never queued
   * for a sign-up that was rolled back, and one that cannot be queued is SERVICE_UNAVAILABLE (signing
   * up again sends a fresh link).
   */
  async signUp(rawEmail: string, password: string, clientIp: string): Promise<SignUpAnswer> {
    const email = this.normalizeEmail(rawEmail);
    this.checkNewPassword(password);
    // Counted before the password is hashed and a mail queued: both are what a flood would cost.
    await this.deps.limits?.attempt('signUp', email, clientIp);
    // Hashed whether or not the address is taken: the answer takes as long either way.
    const passwordHash = await hashPassword(password);
    const { db, settings } = this.deps;
    const mail = await db.transaction(async (trx): Promise<MailJob> => {
      const [created] = (await trx('users').insert({ email, password_hash: passwordHash }).onConflict('email').ignore().returning('id')) as Array<{ id: string }>;
      if (created && settings.signupCredits > 0) await grantCredits(trx, created.id, settings.signupCredits, 'sign-up');
      const user = created ?? (await User.query(trx).findOne({ email }).select('id', 'email_verified_at'));
      if (!user || ('email_verified_at' in user && user.email_verified_at)) {
        return { to: email, template: 'alreadyRegistered', params: {} };
      }
      // New, or never verified (someone who lost the first mail, or someone else): a fresh link.
      const { token } = await createEmailToken(trx, user.id, 'verify_email', settings.emailTokenTtlS, passwordHash);
      return { to: email, template: 'verifyEmail', params: { token } };
    });
    await this.queueMail(mail);
    return { email, message: `If ${email} can receive mail, a message is on its way there: follow its link to finish signing up.` };
  }

  /** Queues a mail; its job id names the mail without the address (job ids show on dashboards). */
  private async queueMail(mail: MailJob): Promise<void> {
    const token = 'token' in mail.params ? mail.params.token : undefined;
    const key = `${mail.template}:${hashToken(`${mail.to}\n${token ?? randomUUID()}`).slice(0, 32)}`;
    try {
      await this.deps.producer.enqueue('sendEmail', key, mail);
    } catch (err) {
      this.deps.log.warn({ err, mail: mail.template }, 'could not queue a mail');
      throw serviceUnavailable('Mail cannot be queued right now; try again in a moment.');
    }
  }

  /** Follows a verification link: the address is verified and the password of its sign-up is set; other links of the account stop working. */
  async verifyEmail(token: string): Promise<UserProfile> {
    const user = await this.deps.db.transaction(async (trx) => {
      const used = await useEmailToken(trx, token, 'verify_email');
      if (!used) return null;
      await retireEmailTokens(trx, used.userId, 'verify_email');
      const [row] = (await trx('users')
        .where({ id: used.userId })
        .update({
          email_verified_at: trx.raw('coalesce(email_verified_at, now())'),
          ...(used.passwordHash ? { password_hash: used.passwordHash } : {}),
          updated_at: trx.fn.now(),
        })
        .returning(['id', 'email'])) as Array<{ id: string; email: string }>;
      return row ?? null;
    });
    if (!user) throw invalidLink('token');
    return { id: user.id, email: user.email };
  }

  /**
   * A session for the address and password. While EMAIL_VERIFICATION_REQUIRED, an address that is
   * not verified yet cannot sign in, and hears the same as for a wrong password (a client cannot
   * learn from it whether an address had an account before).
   */
  async signIn(rawEmail: string, password: string, clientIp: string): Promise<Session> {
    const email = rawEmail.trim().toLowerCase();
    // Before the password is checked: every guess counts, right or wrong, by address and by client.
    await this.deps.limits?.attempt('signIn', email.length <= EMAIL_MAX_LENGTH ? email : null, clientIp);
    const user =
      email.length <= EMAIL_MAX_LENGTH && password.length <= PASSWORD_MAX_LENGTH
        ? await User.query(this.deps.db).findOne({ email }).select('id', 'email', 'password_hash', 'email_verified_at')
        : undefined;
    // Checked against a decoy when there is no such user: "wrong" takes as long either way.
    const ok = await checkPassword(user?.password_hash ?? null, password.slice(0, PASSWORD_MAX_LENGTH));
    const verified = Boolean(user?.email_verified_at) || !this.deps.settings.emailVerificationRequired;
    if (!user || !ok || !verified) {
      throw new DomainError('UNAUTHENTICATED', 'Wrong email or password, or the address is not confirmed yet (follow the link in the mail sent at sign-up).');
    }
    const session = await issueToken(this.deps.db, user.id, 'session', { kind: 'session', ttlS: this.deps.settings.sessionTtlS });
    await this.deps.limits?.signInSucceeded(email);
    return { token: session.token, expiresAt: session.expiresAt!, user: { id: user.id, email: user.email, viewer: true } };
  }

  /** Revokes the token the request came with (a session or an API token). */
  async signOut(token: string): Promise<void> {
    const hash = hashToken(token);
    await this.deps.db('api_tokens').where({ token_hash: hash }).whereNull('revoked_at').update({ revoked_at: this.deps.db.fn.now() });
    this.deps.forgetTokenHashes([hash]);
  }

  /**
   * Mails a reset link if the address has an account. The API only queues the request, whatever the
   * address: the worker looks the account up and makes the link (workers/processors/sendEmail.ts),
   * so the answer and its timing are the same for any address, also while Redis is down.
   */
  async requestPasswordReset(rawEmail: string, clientIp: string): Promise<void> {
    const email = this.normalizeEmail(rawEmail);
    // Counted whether or not the address has an account: the answer must not tell them apart.
    await this.deps.limits?.attempt('passwordReset', email, clientIp);
    await this.queueMail({ to: email, template: 'resetPassword', params: {} });
  }

  /** Sets a new password from a reset link; every session of the user ends (API tokens stay). */
  async resetPassword(token: string, password: string): Promise<void> {
    this.checkNewPassword(password);
    const passwordHash = await hashPassword(password);
    const revoked = await this.deps.db.transaction(async (trx) => {
      const used = await useEmailToken(trx, token, 'reset_password');
      if (!used) throw invalidLink('token');
      const userId = used.userId;
      // One reset ends the others: an older link still in a mailbox sets nothing any more.
      await retireEmailTokens(trx, userId, 'reset_password');
      // The link came through the mailbox, which proves the address too.
      await trx('users')
        .where({ id: userId })
        .update({ password_hash: passwordHash, email_verified_at: trx.raw('coalesce(email_verified_at, now())'), updated_at: trx.fn.now() });
      const rows = (await trx('api_tokens')
        .where({ user_id: userId, kind: 'session' })
        .whereNull('revoked_at')
        .update({ revoked_at: trx.fn.now() })
        .returning('token_hash')) as Array<{ token_hash: string }>;
      return rows.map((r) => r.token_hash);
    });
    this.deps.forgetTokenHashes(revoked);
  }

  /**
   * Ends every live session of the user, the one this request came with included, and with
   * `includeApiTokens` every API token too; returns how many tokens ended. This process forgets them
   * at once; other API processes within AUTH_CACHE_TTL_MS (the cache's hazard).
   */
  async revokeAllSessions(userId: string, includeApiTokens: boolean): Promise<number> {
    const { db } = this.deps;
    const rows = (await db('api_tokens')
      .where({ user_id: userId })
      .modify((q) => {
        if (!includeApiTokens) q.where({ kind: 'session' });
      })
      .whereNull('revoked_at')
      .where((q) => q.whereNull('expires_at').orWhere('expires_at', '>', db.fn.now()))
      .update({ revoked_at: db.fn.now() })
      .returning('token_hash')) as Array<{ token_hash: string }>;
    this.deps.forgetTokenHashes(rows.map((r) => r.token_hash));
    this.deps.log.info({ user: userId, revoked: rows.length, includeApiTokens }, 'user revoked all their sessions');
    return rows.length;
  }

  async createApiToken(userId: string, rawName: string): Promise<IssuedToken> {
    const name = rawName.trim();
    if (name.length === 0 || name.length > TOKEN_NAME_MAX_LENGTH) {
      throw new DomainError('BAD_USER_INPUT', `Name the token in 1 to ${TOKEN_NAME_MAX_LENGTH} characters.`, { field: 'name' });
    }
    return issueToken(this.deps.db, userId, name, { kind: 'api' });
  }

  /** True if the token was the user's and live; false if it was not found (or not theirs, or revoked already). */
  async revokeApiToken(userId: string, tokenId: string): Promise<boolean> {
    const id = parseUuid(tokenId);
    if (!id) return false;
    const rows = (await this.deps.db('api_tokens')
      .where({ id, user_id: userId, kind: 'api' })
      .whereNull('revoked_at')
      .update({ revoked_at: this.deps.db.fn.now() })
      .returning('token_hash')) as Array<{ token_hash: string }>;
    this.deps.forgetTokenHashes(rows.map((r) => r.token_hash));
    return rows.length > 0;
  }

  /** Each user's live API tokens, newest first, in one query however many users. */
  async apiTokensOf(userIds: readonly string[]): Promise<ApiTokenInfo[][]> {
    const rows = (await this.deps.db('api_tokens')
      .whereIn('user_id', [...userIds])
      .where({ kind: 'api' })
      .whereNull('revoked_at')
      .orderBy('created_at', 'desc')
      .select('id', 'user_id', 'name', 'created_at', 'last_used_at')) as Array<{ id: string; user_id: string; name: string; created_at: Date; last_used_at: Date | null }>;
    return groupedInOrderOf(userIds, rows, (r) => r.user_id, (r) => ({ id: r.id, name: r.name, createdAt: r.created_at, lastUsedAt: r.last_used_at }));
  }

  async emailVerified(userId: string): Promise<boolean> {
    return (await this.emailVerifiedOf([userId]))[0] ?? false;
  }

  /** `emailVerified` of each user, in one query however many. */
  async emailVerifiedOf(userIds: readonly string[]): Promise<boolean[]> {
    const rows = await User.query(this.deps.db).findByIds([...userIds]).select('id', 'email_verified_at');
    return inOrderOf(userIds, rows, (r) => r.id, (r) => Boolean(r.email_verified_at), false);
  }

  async notificationSettings(userId: string): Promise<NotificationSettings> {
    return (await this.notificationSettingsOf([userId]))[0] ?? DEFAULT_NOTIFICATIONS;
  }

  /** `notificationSettings` of each user, in one query however many. */
  async notificationSettingsOf(userIds: readonly string[]): Promise<NotificationSettings[]> {
    const rows = await User.query(this.deps.db).findByIds([...userIds]).select('id', 'notify_images_ready');
    return inOrderOf(userIds, rows, (r) => r.id, (r) => ({ imagesReady: r.notify_images_ready ?? true }), DEFAULT_NOTIFICATIONS);
  }

  async updateNotificationSettings(userId: string, change: Partial<NotificationSettings>): Promise<NotificationSettings> {
    if (change.imagesReady !== undefined) {
      await User.query(this.deps.db).findById(userId).patch({ notify_images_ready: change.imagesReady });
    }
    return this.notificationSettings(userId);
  }
}
