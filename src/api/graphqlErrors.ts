/**
 * The one place where domain errors become GraphQL errors: a DomainError anywhere in an error's
/**
 * The one place where domain errors become GraphQL errors: a DomainError anywhere in an error's
 * cause chain reaches the client with its message, `extensions.code` and details; a database
 * (src/db/unavailable.ts) or a Redis (src/redis.ts) that cannot be reached, wherever in the request
 * it was met, reaches it as SERVICE_UNAVAILABLE; everything else is masked by yoga (and logged by the
 * server). The REST endpoints read errors through `domainErrorOf` too.
 */
import { GraphQLError } from 'graphql';
import { isDatabaseUnavailable } from '../db/unavailable';
import { DomainError, serviceUnavailable } from '../errors';
import { isRedisUnavailable } from '../redis';

/** Where in an operation an error was raised (a GraphQLError's own fields, from whichever copy of graphql). */
type Located = Partial<Pick<GraphQLError, 'nodes' | 'source' | 'positions' | 'path'>> & { originalError?: unknown };

/**
 * The DomainError an error was raised for, if any: graphql-js wraps what resolvers throw (in
 * `originalError`), and code may wrap it as a `cause`. Duck-typed, so a second copy of graphql
 * (bundled by a plugin) cannot hide it. A database connection error (refused, reset, terminated, no
 * pooled connection in time, a server shutting down) is SERVICE_UNAVAILABLE; other errors, bugs
 * included, are null: masked.
 */
export function domainErrorOf(error: unknown): DomainError | null {
  for (let e: unknown = error, depth = 0; e && typeof e === 'object' && depth < 5; depth++) {
    if (e instanceof DomainError) return e;
    e = (e as Located).originalError ?? (e as Error).cause;
  }
  if (isDatabaseUnavailable(error)) return serviceUnavailable('The service cannot reach its database right now; try again shortly.');
  // A command that failed because Redis is away (src/redis.ts fails the API's commands fast).
  if (isRedisUnavailable(error)) return serviceUnavailable('Redis, which holds the job queue and progress, is unavailable; try again shortly.');
  return null;
}

/** The client's view of a domain error, at the place in the operation where it was raised. */
export function toGraphQLError(domain: DomainError, at?: unknown): GraphQLError {
  const where = (at && typeof at === 'object' ? at : {}) as Located;
  return new GraphQLError(domain.message, {
    nodes: where.nodes,
    source: where.source,
    positions: where.positions,
    path: where.path,
    extensions: {
      ...domain.details,
      code: domain.code,
    },
  });
}
