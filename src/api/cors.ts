/**
 * Cross-origin calls from browsers (CORS), by one rule for GraphQL and REST: a page of an origin
 * listed in CORS_ORIGINS may call the API, any other page only its own origin. Without the setting
 * no answer carries CORS headers (yoga's own default would allow every origin).
 *
 * Credentials are never allowed: clients authenticate with `Authorization: Bearer`, which a page
 * must hold and send itself, so no cookie of this site ever rides along with another site's request.
 */
import type http from 'node:http';
import type { CORSOptions } from 'graphql-yoga';
import { CSRF_HEADER } from './hardening';

/** What a browser may send and read across origins. */
const METHODS = ['GET', 'POST'];
const ALLOWED_HEADERS = ['authorization', 'content-type', CSRF_HEADER, 'x-request-id'];
const EXPOSED_HEADERS = ['x-request-id'];
/** How long a browser may reuse a preflight's answer. */
const MAX_AGE_S = 600;

export class CorsPolicy {
  private readonly origins: ReadonlySet<string>;

  constructor(origins: readonly string[]) {
    this.origins = new Set(origins);
  }

  /** Whether any origin is allowed (answers then vary by Origin). */
  get enabled(): boolean {
    return this.origins.size > 0;
  }

  /** The request's Origin when it is allowed; null for a missing or any other one. */
  allowed(origin: string | null | undefined): string | null {
    return origin && this.origins.has(origin) ? origin : null;
  }

  /** yoga's `cors` option: the CORS headers for an allowed origin, none for any other. */
  readonly yoga = (request: Request): CORSOptions => {
    const origin = this.allowed(request.headers.get('origin'));
    if (!origin) return false;
    return { origin, methods: METHODS, allowedHeaders: ALLOWED_HEADERS, exposedHeaders: EXPOSED_HEADERS, credentials: false, maxAge: MAX_AGE_S };
  };

  /** The CORS headers of a node answer (REST) to `req`: empty unless its origin is allowed. */
  headers(req: http.IncomingMessage): Record<string, string> {
    const origin = this.allowed(req.headers.origin);
    if (!origin) return {};
    const headers: Record<string, string> = { 'access-control-allow-origin': origin, 'access-control-expose-headers': EXPOSED_HEADERS.join(', ') };
    if (req.method === 'OPTIONS') {
      headers['access-control-allow-methods'] = METHODS.join(', ');
      headers['access-control-allow-headers'] = ALLOWED_HEADERS.join(', ');
      headers['access-control-max-age'] = String(MAX_AGE_S);
    }
    return headers;
  }
}
