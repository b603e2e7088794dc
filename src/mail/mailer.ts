/**
 * Sends mail: over SMTP with nodemailer when SMTP_URL is set, else into an outbox folder as `.eml`
 * files (the embedded default: sign-up works with nothing installed, and the files open in any
 * mail program). Failures come out as MailError with a code the job error table knows:
 * MAIL_UNAVAILABLE (no connection, a timeout) and MAIL_DEFERRED (a 4xx reply) are retried,
 * MAIL_REJECTED (a 5xx reply) is not.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';
import type { Config } from '../config';

export interface OutgoingMail {
  to: string;
  subject: string;
  text: string;
  html: string;
}

export interface SentMail {
  messageId: string;
  /** The outbox file, when the mail went to the outbox. */
  file?: string;
}

export interface Mailer {
  /** Where mail goes, for logs: `smtp://host:port` or `outbox <dir>`. */
  readonly describe: string;
  readonly outbox: boolean;
  send(mail: OutgoingMail, signal?: AbortSignal): Promise<SentMail>;
  close(): void;
}

export class MailError extends Error {
  override name = 'MailError';
  constructor(
    readonly code: 'MAIL_UNAVAILABLE' | 'MAIL_DEFERRED' | 'MAIL_REJECTED',
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** nodemailer's error codes for a connection that failed or went silent (not a reply from the server). */
const CONNECTION_CODES = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'ETLS']);

/** Sorts an SMTP failure: a reply's code decides (4xx later, 5xx never); no reply means the server was not reached. */
export function classifyMailError(err: unknown): MailError {
  const e = err as { code?: unknown; responseCode?: unknown; message?: unknown };
  const reply = typeof e.responseCode === 'number' ? e.responseCode : undefined;
  const text = typeof e.message === 'string' ? e.message : String(err);
  if (reply !== undefined && reply >= 400 && reply < 500) return new MailError('MAIL_DEFERRED', `The mail server deferred the mail (${reply}).`, { cause: err });
  if (reply !== undefined && reply >= 500) return new MailError('MAIL_REJECTED', `The mail server refused the mail (${reply}).`, { cause: err });
  if (typeof e.code === 'string' && CONNECTION_CODES.has(e.code)) return new MailError('MAIL_UNAVAILABLE', `The mail server could not be reached (${e.code}).`, { cause: err });
  return new MailError('MAIL_REJECTED', `The mail could not be sent: ${text}`, { cause: err });
}

/** smtp://user:pass@host:port (STARTTLS when offered) or smtps://… (TLS from the start). */
function smtpOptions(smtpUrl: string, timeoutMs: number) {
  const u = new URL(smtpUrl);
  const secure = u.protocol === 'smtps:';
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : secure ? 465 : 587,
    secure,
    auth: u.username ? { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) } : undefined,
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
  };
}

export function createMailer(config: Pick<Config, 'mail'>): Mailer {
  const { smtpUrl, timeoutMs, from, outboxDir } = config.mail;
  if (smtpUrl) {
    const transport = nodemailer.createTransport(smtpOptions(smtpUrl, timeoutMs));
    const u = new URL(smtpUrl);
    return {
      describe: `${u.protocol}//${u.host}`,
      outbox: false,
      async send(mail, signal) {
        signal?.throwIfAborted();
        try {
          const info = await transport.sendMail({ from, ...mail });
          return { messageId: info.messageId };
        } catch (err) {
          throw classifyMailError(err);
        }
      },
      close: () => transport.close(),
    };
  }
  // The outbox: the same MIME message nodemailer would send, with CRLF line ends as on the wire.
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'windows' });
  const dir = path.resolve(outboxDir);
  return {
    describe: `outbox ${dir}`,
    outbox: true,
    async send(mail) {
      const info = await transport.sendMail({ from, ...mail });
      await mkdir(dir, { recursive: true });
      const name = `${new Date().toISOString().replace(/[:.]/g, '-')}-${randomBytes(4).toString('hex')}.eml`;
      const file = path.join(dir, name);
      const tmp = `${file}.tmp`;
      try {
        await writeFile(tmp, info.message as Buffer, { mode: 0o600 });
        await rename(tmp, file);
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      return { messageId: info.messageId, file };
    },
    close: () => transport.close(),
  };
}
