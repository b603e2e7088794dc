/**
 * The security headers of every answer of the API. The HTTP server sets `SECURITY_HEADERS` on each
 * response before routing (so errors, 404s, event streams, files and the dashboard carry them too);
 * the few HTML pages replace the Content-Security-Policy with their own, built by `contentSecurityPolicy`,
 * which keeps framing refused whatever a page allows.
 *
 * Referrer-Policy is `no-referrer`, not `strict-origin-when-cross-origin`: this service's URLs carry
 * secrets (the mail links' tokens on /account/ pages, the signatures of /files/ URLs, GraphiQL's
 * ?query=), nothing here reads the Referer, and its pages only ever link to themselves.
 */
import { hash } from 'node:crypto';
import type http from 'node:http';

/** Directive name → its sources, e.g. `{ 'script-src': ["'self'"] }`. */
export type CspDirectives = Readonly<Record<string, readonly string[]>>;

/** What every policy says unless a page says otherwise: nothing loads, nothing frames it, no plugins, no <base>. */
const CSP_BASE: CspDirectives = {
  'default-src': ["'none'"],
  'base-uri': ["'none'"],
  'form-action': ["'none'"],
  'object-src': ["'none'"],
};

/**
 * A Content-Security-Policy of `directives` over a base that allows nothing; `frame-ancestors
 * 'none'` always (the header twin of X-Frame-Options: DENY, which browsers that know CSP follow instead).
 */
export function contentSecurityPolicy(directives: CspDirectives = {}): string {
  const all: Record<string, readonly string[]> = { ...CSP_BASE, ...directives, 'frame-ancestors': ["'none'"] };
  return Object.entries(all)
    .map(([name, sources]) => `${name} ${sources.join(' ')}`)
    .join('; ');
}

/** The policy of everything that is not a page: JSON, event streams, images, text. */
export const STRICT_CSP = contentSecurityPolicy();

export const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'content-security-policy': STRICT_CSP,
});

/** Sets the headers on a response that has not started; a route's own writeHead headers win over them. */
export function setSecurityHeaders(res: http.ServerResponse): void {
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
}

/** A CSP hash source of an inline script's or style's text: `'sha256-…'`. */
export const cspHash = (text: string): string => `'sha256-${hash('sha256', text, 'base64')}'`;

/** JavaScript `type`s of a <script> (an absent one included); other types are data blocks, not run, not subject to CSP. */
const SCRIPT_TYPES = new Set(['', 'text/javascript', 'application/javascript', 'module']);
const SCRIPT = /<script\b([^>]*)>([\s\S]*?)<\/script\s*>/gi;
const STYLE = /<style\b[^>]*>([\s\S]*?)<\/style\s*>/gi;

/**
 * The hash sources of the inline scripts a page runs (those without `src`), for `script-src`. Data
 * blocks (`type="application/json"`) are left out: a browser does not run them.
 */
export function inlineScriptHashes(html: string): string[] {
  const hashes: string[] = [];
  for (const [, attrs = '', body = ''] of html.matchAll(SCRIPT)) {
    if (/\bsrc\s*=/i.test(attrs)) continue;
    const type = /\btype\s*=\s*["']?([^"'\s>]*)/i.exec(attrs)?.[1]?.toLowerCase() ?? '';
    if (SCRIPT_TYPES.has(type)) hashes.push(cspHash(body));
  }
  return [...new Set(hashes)];
}

/** The hash sources of a page's <style> elements, for `style-src`. */
export function inlineStyleHashes(html: string): string[] {
  return [...new Set([...html.matchAll(STYLE)].map((m) => cspHash(m[1] ?? '')))];
}
