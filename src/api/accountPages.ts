/**
 * The two pages the links in account mails open, served by the API so that sign-up and password
 * reset work with no web app: each shows a form, and the form's POST does the work. Opening a link
 * changes nothing (mail scanners fetch links; a single-use token must survive that); the button does.
 */
import type http from 'node:http';
import type { AccountService } from '../accounts/service';
import { DomainError } from '../errors';
import { escapeHtml } from '../html';
import { readBody } from '../http';
import type { Logger } from '../logger';
import { ACCOUNT_PATHS } from '../mail/templates';
import { contentSecurityPolicy } from './securityHeaders';

/** No script; the body's style attribute; the form posts to this page. */
const ACCOUNT_PAGE_CSP = contentSecurityPolicy({ 'style-src': ["'unsafe-inline'"], 'form-action': ["'self'"] });

/** A form post carries a token and a password: anything bigger is not ours. */
const MAX_FORM_BYTES = 8 * 1024;

function page(res: http.ServerResponse, status: number, title: string, body: string): void {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    // The token is in the URL: never send it on to another site (every answer says no-referrer; this page must).
    'referrer-policy': 'no-referrer',
    'content-security-policy': ACCOUNT_PAGE_CSP,
  });
  res.end(
    `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>` +
      `<meta name="viewport" content="width=device-width"></head>` +
      `<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto"><h1>${escapeHtml(title)}</h1>${body}</body></html>`,
  );
}

/** The posted form, or null when it is larger than these pages send (or was cut short). */
async function readForm(req: http.IncomingMessage): Promise<URLSearchParams | null> {
  const body = await readBody(req, MAX_FORM_BYTES).catch(() => null);
  return body && new URLSearchParams(body.toString('utf8'));
}

/** Handles the request if it is for one of the pages; false otherwise. */
export function handleAccountPage(req: http.IncomingMessage, res: http.ServerResponse, accounts: AccountService, log: Logger): boolean {
  const url = new URL(req.url ?? '/', 'http://local');
  const isVerify = url.pathname === ACCOUNT_PATHS.verifyEmail;
  const isReset = url.pathname === ACCOUNT_PATHS.resetPassword;
  if (!isVerify && !isReset) return false;
  if (req.method === 'GET') {
    const token = escapeHtml(url.searchParams.get('token') ?? '');
    if (isVerify) {
      page(res, 200, 'Confirm your email address', `<form method="post"><input type="hidden" name="token" value="${token}"><button type="submit">Confirm my address</button></form>`);
    } else {
      page(
        res,
        200,
        'Set a new password',
        `<form method="post"><input type="hidden" name="token" value="${token}">` +
          `<p><label>New password <input type="password" name="password" autocomplete="new-password" required></label></p>` +
          `<button type="submit">Set the password</button></form>`,
      );
    }
    return true;
  }
  if (req.method !== 'POST') {
    res.writeHead(405, { allow: 'GET, POST' }).end();
    return true;
  }
  void (async () => {
    const form = await readForm(req);
    if (!form) {
      res.setHeader('connection', 'close');
      return page(res, 413, 'Too large', '<p>That form was larger than this page sends.</p>');
    }
    const token = form.get('token') ?? '';
    try {
      if (isVerify) {
        const user = await accounts.verifyEmail(token);
        page(res, 200, 'Address confirmed', `<p>${escapeHtml(user.email)} is confirmed. Sign in with the <code>signIn</code> mutation to start generating.</p>`);
      } else {
        await accounts.resetPassword(token, form.get('password') ?? '');
        page(res, 200, 'Password set', '<p>Your new password is set and every session was signed out. Sign in again.</p>');
      }
    } catch (err) {
      if (err instanceof DomainError) return page(res, 400, 'That did not work', `<p>${escapeHtml(err.message)}</p>`);
      log.error({ err }, 'account page failed');
      page(res, 500, 'Something went wrong', '<p>Try again in a moment.</p>');
    }
  })();
  return true;
}
