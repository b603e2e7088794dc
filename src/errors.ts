/**
 * Error kinds a client can act on. Each carries a stable `code` that reaches GraphQL as
 * `extensions.code`; any other error is masked for clients and logged whole.
 */
import { GraphQLError } from 'graphql';

export type PublicErrorCode =
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'BAD_USER_INPUT'
  | 'INSUFFICIENT_CREDITS'
  | 'RATE_LIMITED'
  | 'CONFLICT';

export class PublicError extends GraphQLError {
  constructor(code: PublicErrorCode, message: string, extra: Record<string, unknown> = {}) {
    super(message, { extensions: { code, ...extra } });
  }
}

export const unauthenticated = () =>
  new PublicError('UNAUTHENTICATED', 'Send a valid API token as "Authorization: Bearer <token>".');
export const notFound = (what: string, id: string) => new PublicError('NOT_FOUND', `${what} ${id} was not found.`);
