/** Domain errors reach GraphQL clients through one mapping (src/api/graphqlErrors.ts); nothing else does. */
import { GraphQLError } from 'graphql';
import { describe, expect, it } from 'vitest';
import { domainErrorOf, toGraphQLError } from '../../src/api/graphqlErrors';
import { markUnavailable } from '../../src/api/hardening';
import { DomainError, notFound, serviceUnavailable } from '../../src/errors';

describe('the GraphQL edge of domain errors', () => {
  it('finds a domain error as graphql-js wraps it, or as a cause, and nothing else', () => {
    const domain = new DomainError('INSUFFICIENT_CREDITS', 'Not enough photo credits.', { required: 2 });
    const located = new GraphQLError('wrapped', { path: ['generateImage'], originalError: domain });
    expect(domainErrorOf(located)).toBe(domain);
    expect(domainErrorOf(new Error('outer', { cause: domain }))).toBe(domain);
    expect(domainErrorOf(new GraphQLError('x', { originalError: new Error('db down') }))).toBeNull();
    expect(domainErrorOf(new Error('plain'))).toBeNull();
    expect(domainErrorOf(undefined)).toBeNull();
  });

  it('gives the client the message, the code and the details, where the error was raised', () => {
    const domain = new DomainError('BAD_USER_INPUT', 'steps must be at most 150', { issues: [{ path: 'steps', message: 'too many' }], code: 'SPOOFED' });
    const out = toGraphQLError(domain, new GraphQLError('wrapped', { path: ['generateImage'], originalError: domain }));
    expect(out.message).toBe('steps must be at most 150');
    expect(out.path).toEqual(['generateImage']);
    // The code is the error's own, whatever its details say.
    expect(out.extensions).toEqual({ issues: [{ path: 'steps', message: 'too many' }], code: 'BAD_USER_INPUT' });
    expect(toGraphQLError(notFound('Generation', 'x')).extensions).toEqual({ code: 'NOT_FOUND' });
  });

  it('tells when to try again only when every error of an answer is SERVICE_UNAVAILABLE', () => {
    const unavailable = () => toGraphQLError(serviceUnavailable('The service cannot reach its database right now; try again shortly.'));
    // One without retryAfterSeconds among its details (a queue that did not take a job) gets it too.
    const all = [unavailable(), toGraphQLError(new DomainError('SERVICE_UNAVAILABLE', 'The job queue is unavailable.'))];
    markUnavailable(all);
    for (const e of all) expect(e.extensions).toEqual({ code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 5, http: { headers: { 'retry-after': '5' } } });
    // Beside any other error the answer is not only "come back later": no Retry-After, nothing added.
    const mixed = [unavailable(), toGraphQLError(new DomainError('FORBIDDEN', 'Only an admin may read queues.'))];
    markUnavailable(mixed);
    expect(mixed.map((e) => e.extensions.http)).toEqual([undefined, undefined]);
    const masked = [new GraphQLError('Unexpected error.', { extensions: { code: 'INTERNAL_SERVER_ERROR' } })];
    markUnavailable(masked);
    expect(masked[0]!.extensions).toEqual({ code: 'INTERNAL_SERVER_ERROR' });
  });

  it('answers SERVICE_UNAVAILABLE with Retry-After for an error that says Redis is away, and masks every other', () => {
    const timedOut = new Error('Command timed out');
    const closed = new GraphQLError('wrapped', { path: ['generation', 'status'], originalError: new Error('Connection is closed.') });
    const retries = Object.assign(new Error('Reached the max retries per request limit (which is 1). Refer to "maxRetriesPerRequest" option for details.'), { name: 'MaxRetriesPerRequestError' });
    for (const err of [timedOut, closed, retries, new Error('enqueue failed', { cause: new Error('connect ECONNREFUSED 127.0.0.1:6379') })]) {
      const domain = domainErrorOf(err);
      expect(domain?.code, err.message).toBe('SERVICE_UNAVAILABLE');
      expect(toGraphQLError(domain!, err).extensions).toEqual({ code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 5 });
      // An answer of these alone says when to try again (over HTTP yoga turns `http.headers` into headers).
      const answer = [toGraphQLError(domain!, err)];
      markUnavailable(answer);
      expect(answer[0]!.extensions.http).toEqual({ headers: { 'retry-after': '5' } });
    }
    expect(domainErrorOf(new Error('ERR wrong number of arguments for \'hset\' command'))).toBeNull();
    expect(domainErrorOf(new Error('WRONGTYPE Operation against a key holding the wrong kind of value'))).toBeNull();
  });
});
