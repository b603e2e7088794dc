/**
 * sendEmail: renders a mail from its template and sends it (SMTP, or the outbox folder without
 * SMTP_URL). A mail server that cannot be reached or answers 4xx is tried again through the error
 * table; a 5xx reply fails the job at once. Nothing else depends on a mail, so a final failure is
 * only logged. A reset asked for by address arrives without its link: the link is made here, for an
 * address that has an account (see AccountService.requestPasswordReset).
 */
import type { Knex } from 'knex';
import { createEmailToken } from '../../src/accounts/emailTokens';
import { User } from '../../src/db/models';
import { JobError } from '../../src/jobs/errors';
import type { Processor } from '../../src/jobs/runner';
import type { Logger } from '../../src/logger';
import type { Mailer } from '../../src/mail/mailer';
import { renderMail } from '../../src/mail/templates';

export interface SendEmailDeps {
  db: Knex;
  mailer: Mailer;
  publicUrl: string;
  /** EMAIL_TOKEN_TTL_S: how long the links it makes work, which the mails mention. */
  tokenTtlS: number;
  log: Logger;
}

export function sendEmailProcessor(deps: SendEmailDeps): Processor<'sendEmail'> {
  const { mailer, log } = deps;
  return {
    async run(ctx) {
      const job = ctx.payload;
      if (typeof job?.to !== 'string' || !job.to.includes('@')) throw new JobError('MAIL_BAD_JOB', 'The mail job has no recipient.');
      let params = job.params;
      if (job.template === 'resetPassword' && !job.params.token) {
        // A reset asked for by address: only an account gets a link, anyone else no mail at all.
        const user = await User.query(deps.db).findOne({ email: job.to }).select('id');
        if (!user) return;
        params = { token: (await createEmailToken(deps.db, user.id, 'reset_password', deps.tokenTtlS)).token };
      }
      let mail;
      try {
        mail = renderMail(job.template, params, { publicUrl: deps.publicUrl, tokenTtlS: deps.tokenTtlS });
      } catch (err) {
        throw new JobError('MAIL_BAD_JOB', `The mail job cannot be rendered: ${err instanceof Error ? err.message : String(err)}`);
      }
      const sent = await mailer.send({ to: job.to, subject: mail.subject, text: mail.text, html: mail.html }, ctx.signal);
      if (sent.file) {
        // The embedded default (no SMTP_URL): the mail was not sent, so say where it is and what to click.
        log.warn({ mail: job.template, to: job.to, file: sent.file, link: mail.link }, mail.link ? `mail not sent (no SMTP_URL), written to the outbox; its link: ${mail.link}` : 'mail not sent (no SMTP_URL), written to the outbox');
      } else if (log.isLevelEnabled('debug')) {
        log.debug({ mail: job.template, messageId: sent.messageId }, 'mail sent');
      }
    },
    async onFinalFailure(ctx, failure) {
      ctx.log.warn({ mail: ctx.payload.template, failure }, 'mail not sent');
    },
  };
}
