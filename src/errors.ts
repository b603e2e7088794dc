/**
 * Error kinds a client can act on: plain errors with a stable `code` (and details a client may
 * read), thrown by the domain (services, input rules) without knowing about any transport. The
 * GraphQL edge turns them into `extensions.code` (src/api/graphqlErrors.ts); any other error is
 * masked for clients and logged whole.
 */
export type PublicErrorCode =
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'BAD_USER_INPUT'
  | 'INSUFFICIENT_CREDITS'
  | 'EMAIL_NOT_VERIFIED'
  | 'SERVICE_UNAVAILABLE'
  | 'RATE_LIMITED'
  | 'CONFLICT';

export class DomainError extends Error {
  override name = 'DomainError';
  constructor(
    readonly code: PublicErrorCode,
    message: string,
    /** Extra facts for the client (e.g. the list of input problems), sent beside the code. */
    readonly details: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
  }
}

export const unauthenticated = () =>
  new DomainError('UNAUTHENTICATED', 'Send a valid API token as "Authorization: Bearer <token>".');
export const notFound = (what: string, id: string) => new DomainError('NOT_FOUND', `${what} ${id} was not found.`);

/** A limit was reached; `retryAfterSeconds` (whole seconds, at least 1) says when to try again. */
export const rateLimited = (message: string, retryAfterSeconds: number) =>
  new DomainError('RATE_LIMITED', message, { retryAfterSeconds: Math.max(1, Math.ceil(retryAfterSeconds)) });

/** How soon a client should try again after SERVICE_UNAVAILABLE (Retry-After, `extensions.retryAfterSeconds`). */
export const SERVICE_UNAVAILABLE_RETRY_S = 5;

/** A dependency (Redis, Postgres) is away; the request did nothing lasting, and may be sent again shortly. */
export const serviceUnavailable = (message: string) =>
  new DomainError('SERVICE_UNAVAILABLE', message, { retryAfterSeconds: SERVICE_UNAVAILABLE_RETRY_S });
