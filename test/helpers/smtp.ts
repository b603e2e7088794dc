/**
 * A real SMTP server for the tests (nodemailer's smtp-server, in this process): it records every
 * message it accepts, parsed, and every try it sees, and its replies can be scripted per recipient
 * (a 4xx or 5xx answer to DATA) or held back (a slow server).
 */
import type { AddressInfo } from 'node:net';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface ReceivedMail {
  to: string;
  parsed: ParsedMail;
  raw: string;
}

export interface TestSmtp {
  url: string;
  /** Accepted messages, in arrival order. */
  readonly received: ReceivedMail[];
  /** DATA tries per recipient, accepted or not. */
  tries(to: string): number;
  /** Answers the next `times` tries for `to` with `code` (e.g. 451, 550); afterwards accepts. */
  replyWith(to: string, code: number, times?: number): void;
  /** Holds every DATA reply until release() (a slow server). */
  hold(): void;
  release(): void;
  /** Resolves with the first accepted message for `to` matching `pred` (already received or future). */
  waitFor(to: string, pred?: (m: ReceivedMail) => boolean): Promise<ReceivedMail>;
  close(): Promise<void>;
}

export interface SmtpOptions {
  /** Require a login (AUTH PLAIN or LOGIN over the plain connection) with these credentials; `url` then carries them. */
  auth?: { user: string; pass: string };
}

export async function startSmtp(opts: SmtpOptions = {}): Promise<TestSmtp> {
  const received: ReceivedMail[] = [];
  const tries = new Map<string, number>();
  const scripted = new Map<string, { code: number; times: number }>();
  const waiters: Array<{ to: string; pred: (m: ReceivedMail) => boolean; resolve: (m: ReceivedMail) => void }> = [];
  let held: Array<() => void> | null = null;

  const auth = opts.auth;
  const server = new SMTPServer({
    // Plain SMTP on localhost: no TLS to negotiate; a login only when asked for (over plain text: localhost).
    disabledCommands: auth ? ['STARTTLS'] : ['STARTTLS', 'AUTH'],
    authOptional: !auth,
    allowInsecureAuth: Boolean(auth),
    authMethods: ['PLAIN', 'LOGIN'],
    onAuth(login, _session, callback) {
      if (auth && login.username === auth.user && login.password === auth.pass) return callback(null, { user: login.username });
      callback(new Error('Invalid username or password'));
    },
    logger: false,
    onData(stream, session, callback) {
      const to = session.envelope.rcptTo.map((r) => r.address.toLowerCase()).join(',');
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const answer = () => {
          tries.set(to, (tries.get(to) ?? 0) + 1);
          const script = scripted.get(to);
          if (script && script.times > 0) {
            script.times--;
            const err = Object.assign(new Error(script.code >= 500 ? 'Mailbox unavailable' : 'Try again later'), { responseCode: script.code });
            return callback(err);
          }
          const raw = Buffer.concat(chunks);
          void simpleParser(raw).then((parsed) => {
            const mail = { to, parsed, raw: raw.toString('utf8') };
            received.push(mail);
            for (const w of waiters.splice(0)) {
              if (w.to === to && w.pred(mail)) w.resolve(mail);
              else waiters.push(w);
            }
            callback();
          }, callback);
        };
        if (held) held.push(answer);
        else answer();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;

  const smtp: TestSmtp = {
    url: auth ? `smtp://${encodeURIComponent(auth.user)}:${encodeURIComponent(auth.pass)}@127.0.0.1:${port}` : `smtp://127.0.0.1:${port}`,
    received,
    tries: (to) => tries.get(to.toLowerCase()) ?? 0,
    replyWith(to, code, times = 1) {
      scripted.set(to.toLowerCase(), { code, times });
    },
    hold() {
      held ??= [];
    },
    release() {
      const pending = held ?? [];
      held = null;
      for (const answer of pending) answer();
    },
    waitFor(to, pred = () => true) {
      const found = received.find((m) => m.to === to.toLowerCase() && pred(m));
      if (found) return Promise.resolve(found);
      return new Promise((resolve) => waiters.push({ to: to.toLowerCase(), pred, resolve }));
    },
    close() {
      smtp.release();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  return smtp;
}

/** The first link in a mail's text body. */
export function linkIn(mail: ReceivedMail): URL {
  const m = mail.parsed.text?.match(/https?:\/\/\S+/);
  if (!m) throw new Error(`no link in the mail: ${mail.parsed.text}`);
  return new URL(m[0]);
}
