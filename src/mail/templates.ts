/**
 * The mails the service sends, each as a subject, a text body and an HTML body. A template gets
 * only what its job carries plus the public URL; every value put into HTML is escaped.
 */
import { escapeHtml } from '../html';

/** Where the links in mails point (the API serves these pages: src/api/accountPages.ts). */
export const ACCOUNT_PATHS = {
  verifyEmail: '/account/verify-email',
  resetPassword: '/account/reset-password',
} as const;

export interface MailTemplates {
  /** Sent at sign-up: the link verifies the address. */
  verifyEmail: { token: string };
  /** Sent when someone signs up with an address that has an account: says so, nothing more. */
  alreadyRegistered: Record<string, never>;
  /**
   * A reset link. Queued by the API without a token for any address asked about: the worker makes
   * the token if the address has an account, and sends nothing if not (so the API's answer, and
   * its timing, are the same either way).
   */
  resetPassword: { token?: string };
  /** A generation succeeded (users can switch these off with updateNotificationSettings). */
  imagesReady: { generationId: string; prompt: string; images: number };
}
export type MailTemplate = keyof MailTemplates;

export interface RenderedMail {
  subject: string;
  text: string;
  html: string;
  /** The link a person acts on, if any (npm run dev logs it). */
  link?: string;
}

function page(paragraphs: string[], link?: { href: string; label: string }): string {
  const body = paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`);
  if (link) body.push(`<p><a href="${escapeHtml(link.href)}">${escapeHtml(link.label)}</a></p>`);
  return `<!doctype html><html><body style="font-family: sans-serif">${body.join('')}</body></html>`;
}

const linkTo = (publicUrl: string, path: string, token: string) => `${publicUrl}${path}?token=${encodeURIComponent(token)}`;

/** Cuts a prompt for a subject line or a mail body. */
const excerpt = (s: string, max: number) => (s.length > max ? `${s.slice(0, max - 1)}…` : s);

export function renderMail<T extends MailTemplate>(template: T, params: MailTemplates[T], ctx: { publicUrl: string; tokenTtlS: number }): RenderedMail {
  const hours = Math.max(1, Math.round(ctx.tokenTtlS / 3600));
  switch (template) {
    case 'verifyEmail': {
      const link = linkTo(ctx.publicUrl, ACCOUNT_PATHS.verifyEmail, (params as MailTemplates['verifyEmail']).token);
      const lines = ['Welcome! Confirm your email address to start generating images.', `The link works once, for ${hours} hour(s).`];
      return {
        subject: 'Confirm your email address',
        text: `${lines.join('\n')}\n\n${link}\n\nIf you did not sign up, ignore this mail.\n`,
        html: page([...lines, 'If you did not sign up, ignore this mail.'], { href: link, label: 'Confirm my address' }),
        link,
      };
    }
    case 'alreadyRegistered': {
      const lines = [
        'Someone (perhaps you) tried to sign up with this address, which already has an account.',
        'If it was you, sign in, or ask for a password reset if you forgot your password. If not, ignore this mail: nothing has changed.',
      ];
      return { subject: 'You already have an account', text: `${lines.join('\n\n')}\n`, html: page(lines) };
    }
    case 'resetPassword': {
      const token = (params as MailTemplates['resetPassword']).token;
      if (!token) throw new Error('a reset mail needs its token');
      const link = linkTo(ctx.publicUrl, ACCOUNT_PATHS.resetPassword, token);
      const lines = ['Someone asked to reset the password of this account.', `The link sets a new password; it works once, for ${hours} hour(s), and signs out every session.`];
      return {
        subject: 'Reset your password',
        text: `${lines.join('\n')}\n\n${link}\n\nIf you did not ask, ignore this mail: your password stays as it is.\n`,
        html: page([...lines, 'If you did not ask, ignore this mail: your password stays as it is.'], { href: link, label: 'Set a new password' }),
        link,
      };
    }
    case 'imagesReady': {
      const p = params as MailTemplates['imagesReady'];
      const lines = [
        `Your ${p.images === 1 ? 'image is' : `${p.images} images are`} ready: "${excerpt(p.prompt, 200)}".`,
        `Generation ${p.generationId}.`,
        'You can switch these mails off with updateNotificationSettings(imagesReady: false).',
      ];
      // One line: a prompt's line breaks must not reach a header.
      return { subject: `Images ready: ${excerpt(p.prompt.replace(/\s+/g, ' '), 60)}`, text: `${lines.join('\n')}\n`, html: page(lines) };
    }
  }
  throw new Error(`unknown mail template ${String(template)}`);
}

/** A sendEmail job's payload: who gets which mail, with what. */
export type MailJob = { [T in MailTemplate]: { to: string; template: T; params: MailTemplates[T] } }[MailTemplate];
