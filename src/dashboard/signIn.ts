/**
 * Who may open the dashboard: an admin's API token, sent as `Authorization: Bearer …` or kept by
 * the sign-in form in a cookie that only /admin pages receive (HttpOnly, SameSite=Strict, Secure
 * over https). The token itself is never logged nor passed to the dashboard's process.
 */
import type http from 'node:http';
import type { TLSSocket } from 'node:tls';
import { bearerToken } from '../auth/tokens';
import { escapeHtml } from '../html';

export const COOKIE_NAME = 'sdjobs_admin';
const COOKIE_PATH = '/admin';

/** The token of a request: the Bearer header first, else the dashboard's cookie. */
export function requestToken(req: http.IncomingMessage): string | null {
  const bearer = bearerToken(req.headers.authorization);
  if (bearer) return bearer;
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const at = part.indexOf('=');
    if (at !== -1 && part.slice(0, at).trim() === COOKIE_NAME) {
      const value = part.slice(at + 1).trim();
      return /^[A-Za-z0-9_-]{1,200}$/.test(value) ? value : null;
    }
  }
  return null;
}

/** Over https, directly or as a proxy in front says (the flag only adds protection, so it is safe to believe). */
const isHttps = (req: http.IncomingMessage) =>
  Boolean((req.socket as TLSSocket).encrypted) || String(req.headers['x-forwarded-proto'] ?? '').split(',')[0]?.trim() === 'https';

/** Keeps the token for the browser's session (no Max-Age: it goes when the browser closes). */
export function tokenCookie(req: http.IncomingMessage, token: string): string {
  return `${COOKIE_NAME}=${token}; Path=${COOKIE_PATH}; HttpOnly; SameSite=Strict${isHttps(req) ? '; Secure' : ''}`;
}

export function clearedCookie(req: http.IncomingMessage): string {
  return `${COOKIE_NAME}=; Path=${COOKIE_PATH}; HttpOnly; SameSite=Strict; Max-Age=0${isHttps(req) ? '; Secure' : ''}`;
}

const page = (title: string, body: string) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>body{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;color:#222}
input{width:100%;padding:.5rem;font:inherit;box-sizing:border-box}button{margin-top:.75rem;padding:.5rem 1rem;font:inherit}
.note{color:#a00}</style></head><body>${body}</body></html>`;

/** The sign-in form (`message`: why the last try did not work). */
export function signInPage(basePath: string, message?: string): string {
  return page(
    'Queue dashboard: sign in',
    `<h1>Queue dashboard</h1>
<p>Sign in with an admin's API token (<code>npm run user:create -- --email … --admin</code> makes one).</p>
${message ? `<p class="note" role="alert">${escapeHtml(message)}</p>` : ''}
<form method="post" action="${escapeHtml(basePath)}/login">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<button type="submit">Sign in</button>
</form>`,
  );
}

export function forbiddenPage(basePath: string): string {
  return page(
    'Queue dashboard: admins only',
    `<h1>Admins only</h1>
<p>This token belongs to an account that is not an admin, so it cannot open the queue dashboard.</p>
<form method="post" action="${escapeHtml(basePath)}/logout"><button type="submit">Sign in with another token</button></form>`,
  );
}
