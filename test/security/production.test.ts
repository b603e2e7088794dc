/**
 * The API as `NODE_ENV=production` runs it: no GraphiQL page, no introspection and no field
 * suggestions (which would name what introspection hides), unless GRAPHIQL=true asks for them;
 * and the security headers on its answers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STRICT_CSP } from '../../src/api/securityHeaders';
import { startStack, type Stack } from '../helpers/stack';

let stack: Stack;
let token: string;

const post = (baseUrl: string, query: string) =>
  fetch(`${baseUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query }),
  }).then(async (r) => ({ status: r.status, body: (await r.json()) as { data?: unknown; errors?: Array<{ message: string; extensions?: { code?: string } }> } }));

const openGraphiQL = (baseUrl: string) => fetch(`${baseUrl}/graphql`, { headers: { accept: 'text/html' } });

beforeAll(async () => {
  stack = await startStack({ worker: false, env: { NODE_ENV: 'production' } });
  token = (await stack.createUser(0)).token;
}, 120_000);

afterAll(async () => {
  await stack?.close();
});

describe('in production', () => {
  it('serves no GraphiQL page', async () => {
    const res = await openGraphiQL(stack.baseUrl);
    expect(res.headers.get('content-type') ?? '').not.toContain('text/html');
    expect(await res.text()).not.toContain('graphiql');
  });

  it('refuses introspection, and suggests no field names', async () => {
    const schema = await post(stack.baseUrl, '{ __schema { types { name } } }');
    expect(schema.body.data).toBeUndefined();
    expect(schema.body.errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
    const type = await post(stack.baseUrl, '{ __type(name: "User") { fields { name } } }');
    expect(type.body.errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
    const typo = await post(stack.baseUrl, '{ me { emial } }');
    expect(typo.body.errors?.[0]?.message).toContain('emial');
    expect(typo.body.errors?.[0]?.message).not.toContain('Did you mean');
    // Ordinary operations still run, __typename included.
    const me = await post(stack.baseUrl, '{ __typename me { photoCredits } }');
    expect(me.body).toEqual({ data: { __typename: 'Query', me: { photoCredits: 0 } } });
  });

  it('turns both on again with GRAPHIQL=true', async () => {
    const api = await stack.startApi({ GRAPHIQL: 'true' });
    const res = await openGraphiQL(api.baseUrl);
    expect(res.headers.get('content-type')).toContain('text/html');
    const schema = await post(api.baseUrl, '{ __schema { queryType { name } } }');
    expect(schema.body).toEqual({ data: { __schema: { queryType: { name: 'Query' } } } });
  });
});

describe('security headers in production', () => {
  it('are on /graphql, the web page, a 404 and /healthz', async () => {
    const answers = {
      graphql: await fetch(`${stack.baseUrl}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ query: '{ me { photoCredits } }' }) }),
      graphqlGet: await openGraphiQL(stack.baseUrl),
      page: await fetch(`${stack.baseUrl}/`),
      notFound: await fetch(`${stack.baseUrl}/no/such/thing`),
      healthz: await fetch(`${stack.baseUrl}/healthz`),
    };
    expect(answers.graphql.status).toBe(200);
    expect(answers.notFound.status).toBe(404);
    expect(answers.healthz.status).toBe(200);
    for (const [name, res] of Object.entries(answers)) {
      await res.body?.cancel();
      expect(res.headers.get('x-content-type-options'), name).toBe('nosniff');
      expect(res.headers.get('referrer-policy'), name).toBe('no-referrer');
      expect(res.headers.get('x-frame-options'), name).toBe('DENY');
      expect(res.headers.get('content-security-policy'), name).toContain("frame-ancestors 'none'");
      // No CORS without CORS_ORIGINS.
      expect(res.headers.get('access-control-allow-origin'), name).toBeNull();
    }
    for (const name of ['graphql', 'graphqlGet', 'notFound', 'healthz'] as const) {
      expect(answers[name].headers.get('content-security-policy'), name).toBe(STRICT_CSP);
    }
    // The web page (built by npm ci): its own files only, scripts never inline without a hash.
    expect(answers.page.headers.get('content-type')).toContain('text/html');
    const csp = answers.page.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/script-src 'self'/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|https?:\/\/(?!127\.0\.0\.1)/);
  });
});
