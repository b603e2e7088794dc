/**
 * Mail rendering and the sorting of SMTP failures (which the job error table retries), and the
 * outbox that stands in for SMTP: the whole MIME message as a file, written whole.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { toJobFailure } from '../../src/jobs/errors';
import { classifyMailError, createMailer } from '../../src/mail/mailer';
import { renderMail } from '../../src/mail/templates';

const ctx = { publicUrl: 'https://images.example', tokenTtlS: 86_400 };

describe('mail templates', () => {
  it('puts the token in a link under the public URL, in the text and the HTML', () => {
    const m = renderMail('verifyEmail', { token: 'a+b/c' }, ctx);
    expect(m.link).toBe('https://images.example/account/verify-email?token=a%2Bb%2Fc');
    expect(m.text).toContain(m.link);
    expect(m.html).toContain('href="https://images.example/account/verify-email?token=a%2Bb%2Fc"');
    expect(m.text).toContain('24 hour(s)');
  });

  it('escapes what a user wrote (a prompt) in the HTML body and cuts it in the subject', () => {
    const prompt = `<script>alert("x")</script> & ${'long '.repeat(50)}`;
    const m = renderMail('imagesReady', { generationId: 'g1', prompt, images: 2 }, ctx);
    expect(m.html).not.toContain('<script>');
    expect(m.html).toContain('&lt;script&gt;');
    expect(m.subject.length).toBeLessThanOrEqual(80);
    expect(m.text).toContain('2 images are ready');
  });
});

describe('SMTP failures', () => {
  it('retries no connection and 4xx replies, never 5xx replies', () => {
    const cases: Array<[object, string, boolean]> = [
      [{ code: 'ECONNECTION', message: 'connect ECONNREFUSED' }, 'MAIL_UNAVAILABLE', true],
      [{ code: 'ETIMEDOUT', message: 'Greeting never received' }, 'MAIL_UNAVAILABLE', true],
      [{ code: 'EENVELOPE', responseCode: 451, message: '451 try later' }, 'MAIL_DEFERRED', true],
      [{ code: 'EMESSAGE', responseCode: 550, message: '550 no such user' }, 'MAIL_REJECTED', false],
      [{ code: 'EAUTH', responseCode: 535, message: '535 bad credentials' }, 'MAIL_REJECTED', false],
      [{ message: 'something odd' }, 'MAIL_REJECTED', false],
    ];
    for (const [err, code, retryable] of cases) {
      const failure = toJobFailure(classifyMailError(Object.assign(new Error(), err)));
      expect(failure, JSON.stringify(err)).toMatchObject({ code, retryable });
    }
  });
});

describe('the outbox', () => {
  it('writes each mail as a whole .eml file with CRLF lines that parses back', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'outbox-'));
    try {
      const mailer = createMailer({ mail: { smtpUrl: undefined, timeoutMs: 1000, from: 'Images <no-reply@example.com>', outboxDir: dir } });
      expect(mailer.outbox).toBe(true);
      const sent = await mailer.send({ to: 'you@example.com', subject: 'Hello', text: 'plain', html: '<p>rich</p>' });
      expect(await readdir(dir)).toEqual([path.basename(sent.file!)]);
      const raw = await readFile(sent.file!);
      expect(raw.toString()).toContain('\r\n');
      const parsed = await simpleParser(raw);
      expect(parsed.subject).toBe('Hello');
      expect(parsed.text?.trim()).toBe('plain');
      expect(parsed.html).toContain('<p>rich</p>');
      mailer.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
