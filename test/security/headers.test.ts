/**
 * The security headers on every kind of answer the API gives (pages, JSON, errors, 404s, an event
 * stream, files, the dashboard), each page with its own Content-Security-Policy and everything else
 * with the strict one; and CORS from CORS_ORIGINS, the same for GraphQL and REST: an allowed origin
 * gets the headers on the preflight and on the request, any other origin none, and without the
 * setting nobody does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STRICT_CSP } from '../../src/api/securityHeaders';
import { startStack, type Stack } from '../helpers/stack';

const ALLOWED = 'https://app.example.com';
const OTHER = 'https://evil.example.net';

let stack: Stack;
let token: string;

beforeAll(async () => {
  stack = await startStack({ worker: false, env: { CORS_ORIGINS: `${ALLOWED}, http://localhost:5173` } });
  token = (await stack.createUser(0)).token;
}, 120_000);

afterAll(async () => {
  await stack?.close();
});

type Probe = { name: string; send: () => Promise<Response>; status: number; page?: RegExp };

const graphqlPost = (body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${stack.baseUrl}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

/** One request of each kind of answer, with its status; `page`: the answer is HTML with a policy of its own. */
const probes = (): Probe[] => [
  { name: 'a GraphQL answer', send: () => graphqlPost({ query: '{ __typename }' }), status: 200 },
  { name: 'a GraphQL error', send: () => graphqlPost({ query: '{ nope }' }), status: 200 },
  { name: 'a malformed request', send: () => fetch(`${stack.baseUrl}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' }), status: 400 },
  { name: 'an unauthenticated operation', send: () => graphqlPost({ query: '{ me { email } }' }, { authorization: 'Bearer sdk_not-a-token' }), status: 200 },
  { name: 'a refused method', send: () => fetch(`${stack.baseUrl}/graphql`, { method: 'PUT' }), status: 405 },
  { name: 'an event stream', send: () => graphqlPost({ query: '{ __typename }' }, { accept: 'text/event-stream' }), status: 200 },
  { name: 'GraphiQL', send: () => fetch(`${stack.baseUrl}/graphql`, { headers: { accept: 'text/html' } }), status: 200, page: /script-src 'self' 'sha256-/ },
  { name: "GraphiQL's script", send: () => fetch(`${stack.baseUrl}/graphiql-assets/yoga-graphiql.umd.js`), status: 200 },
  { name: 'the web page', send: () => fetch(stack.baseUrl), status: 200, page: /script-src 'self'/ },
  { name: 'a 404', send: () => fetch(`${stack.baseUrl}/no/such/page`), status: 404 },
  { name: '/healthz', send: () => fetch(`${stack.baseUrl}/healthz`), status: 200 },
  { name: '/readyz', send: () => fetch(`${stack.baseUrl}/readyz`), status: 200 },
  { name: '/metrics', send: () => fetch(`${stack.baseUrl}/metrics`), status: 200 },
  { name: 'an unsigned file', send: () => fetch(`${stack.baseUrl}/files/some/key.webp`), status: 403 },
  { name: 'a REST answer', send: () => fetch(`${stack.baseUrl}/api/v1/openapi.json`), status: 200 },
  { name: 'a REST error', send: () => fetch(`${stack.baseUrl}/api/v1/generation-status/x`), status: 401 },
  { name: "a mail link's page", send: () => fetch(`${stack.baseUrl}/account/verify-email?token=abc`), status: 200, page: /form-action 'self'/ },
  { name: "the dashboard's sign-in", send: () => fetch(`${stack.baseUrl}/admin/queues/`), status: 401, page: /style-src 'sha256-/ },
  { name: "the dashboard's API", send: () => fetch(`${stack.baseUrl}/admin/queues/api/queue/sdjobs/high_priority/job/1`, { method: 'DELETE' }), status: 401 },
];

describe('security headers', () => {
  it('are on every answer: pages with their own policy, everything else with default-src none', async () => {
    for (const probe of probes()) {
      const res = await probe.send();
      await res.body?.cancel();
      expect(res.status, probe.name).toBe(probe.status);
      const h = res.headers;
      expect(h.get('x-content-type-options'), probe.name).toBe('nosniff');
      expect(h.get('referrer-policy'), probe.name).toBe('no-referrer');
      expect(h.get('x-frame-options'), probe.name).toBe('DENY');
      const csp = h.get('content-security-policy') ?? '';
      expect(csp, probe.name).toContain("frame-ancestors 'none'");
      if (probe.page) {
        expect(h.get('content-type'), probe.name).toContain('text/html');
        expect(csp, probe.name).toMatch(probe.page);
        expect(csp, probe.name).not.toMatch(/script-src[^;]*unsafe-inline/);
      } else {
        expect(csp, probe.name).toBe(STRICT_CSP);
        expect(csp).toMatch(/^default-src 'none'/);
      }
    }
  });

  it("let the web page show images from where their URLs point (here: PUBLIC_URL's origin)", async () => {
    const csp = (await fetch(stack.baseUrl)).headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(new RegExp(`img-src 'self' data: ${new URL(stack.config.http.publicUrl).origin.replace(/[.]/g, '\\.')}`));
  });
});

/** The CORS headers of an answer, by name (empty when there are none). */
const corsOf = (res: Response) => Object.fromEntries([...res.headers].filter(([name]) => name.startsWith('access-control-')));

const preflight = (baseUrl: string, path: string, origin: string, method = 'POST') =>
  fetch(`${baseUrl}${path}`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': 'authorization, content-type' },
  });

describe('CORS from CORS_ORIGINS', () => {
  it('answers an allowed origin on /graphql: the preflight and the request, without credentials', async () => {
    const pre = await preflight(stack.baseUrl, '/graphql', ALLOWED);
    expect(pre.status).toBe(204);
    expect(corsOf(pre)).toMatchObject({
      'access-control-allow-origin': ALLOWED,
      'access-control-allow-methods': expect.stringContaining('POST'),
      'access-control-allow-headers': expect.stringMatching(/authorization.*content-type/),
    });
    expect(pre.headers.get('access-control-allow-credentials')).toBeNull();
    const res = await graphqlPost({ query: '{ me { photoCredits } }' }, { origin: ALLOWED, authorization: `Bearer ${token}` });
    expect(await res.json()).toEqual({ data: { me: { photoCredits: 0 } } });
    expect(res.headers.get('access-control-allow-origin')).toBe(ALLOWED);
    expect(res.headers.get('vary')).toContain('Origin');
    // The second origin of the list is allowed too, and is the one echoed.
    expect((await preflight(stack.baseUrl, '/graphql', 'http://localhost:5173')).headers.get('access-control-allow-origin')).toBe('http://localhost:5173');
  });

  it('gives another origin no CORS header on /graphql', async () => {
    for (const origin of [OTHER, 'null', `${ALLOWED}.evil.example.net`, 'http://app.example.com']) {
      expect(corsOf(await preflight(stack.baseUrl, '/graphql', origin)), origin).toEqual({});
      const res = await graphqlPost({ query: '{ __typename }' }, { origin });
      expect(corsOf(res), origin).toEqual({});
    }
  });

  it('follows the same rule on REST', async () => {
    const pre = await preflight(stack.baseUrl, '/api/v1/generate-image/', ALLOWED);
    expect(pre.status).toBe(204);
    expect(corsOf(pre)).toMatchObject({ 'access-control-allow-origin': ALLOWED, 'access-control-allow-headers': expect.stringContaining('authorization') });
    const status = await fetch(`${stack.baseUrl}/api/v1/generation-status/00000000-0000-4000-8000-000000000000`, { headers: { origin: ALLOWED, authorization: `Bearer ${token}` } });
    expect(status.status).toBe(404);
    expect(status.headers.get('access-control-allow-origin')).toBe(ALLOWED);
    expect(corsOf(await preflight(stack.baseUrl, '/api/v1/generate-image/', OTHER))).toEqual({});
    expect(corsOf(await fetch(`${stack.baseUrl}/api/v1/openapi.json`, { headers: { origin: OTHER } }))).toEqual({});
  });

  it('answers no origin at all without the setting', async () => {
    const api = await stack.startApi({ CORS_ORIGINS: '' });
    for (const path of ['/graphql', '/api/v1/generate-image/']) {
      expect(corsOf(await preflight(api.baseUrl, path, ALLOWED)), path).toEqual({});
    }
    const res = await fetch(`${api.baseUrl}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', origin: ALLOWED }, body: JSON.stringify({ query: '{ __typename }' }) });
    expect(res.status).toBe(200);
    expect(corsOf(res)).toEqual({});
  });
});
