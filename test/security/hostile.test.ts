/**
 * Hostile input over real HTTP against a real API (Postgres, Redis): every case has the exact
 * status and error code it must get. No case may answer 5xx or hang; the API must answer its health
 * check after each batch; and a batch of refused requests must leave Postgres and Redis exactly as
 * they were (rows, balances, token states, generation states, and every key of this stack).
 *
 * Requests that are accepted on purpose (odd but storable text) run in their own batch, which
 * checks that the text comes back byte for byte.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderMail } from '../../src/mail/templates';
import { WAIT_MS } from '../helpers/budgets';
import { startStack, type Stack } from '../helpers/stack';

interface Answer {
  status: number;
  /** The first error's code; null when the answer has no errors; undefined when it is not a GraphQL answer. */
  code: string | null | undefined;
  body: string;
}

interface Case {
  name: string;
  send(): Promise<Answer>;
  status: number;
  /** The first error's code, or null for an answer with data and no errors (and for REST answers). */
  code: string | null;
  /** Text the answer must contain (REST answers carry no GraphQL code). */
  includes?: string;
}

/** What must never appear in an answer: stack frames, source paths, SQL, the JSON parser's own words. */
const LEAKS = /\bat [\w.<>]+ \(|\.(ts|js|mjs|cjs):\d+|node_modules|\/src\/|\b(SELECT|INSERT INTO|UPDATE \w+ SET)\b|Unexpected token|in JSON at position|end of JSON input|"stack"/;

/** Answers larger than this are a defect in themselves (errors must be bounded). */
const MAX_ANSWER_BYTES = 64 * 1024;

let stack: Stack;
/** A user with no credits: a valid generation request is refused (INSUFFICIENT_CREDITS) and writes nothing. */
let broke: { userId: string; token: string };
/** A user with credits, whose generation and token the others try to reach. */
let other: { userId: string; token: string };
let otherGenerationId: string;
let otherTokenId: string;
let revokedToken: string;
let expiredToken: string;

async function answer(res: Response): Promise<Answer> {
  const body = await res.text();
  let code: string | null | undefined;
  try {
    // A progress stream's first event, or the answer itself.
    const data = res.headers.get('content-type')?.includes('text/event-stream') ? /^data: (.*)$/m.exec(body)?.[1] : body;
    const json = JSON.parse(data ?? '') as { errors?: Array<{ extensions?: { code?: string } }> };
    code = json.errors?.length ? (json.errors[0]?.extensions?.code ?? 'NO CODE') : null;
  } catch {
    code = undefined;
  }
  return { status: res.status, code, body };
}

function request(path: string, init: RequestInit): Promise<Answer> {
  return fetch(`${stack.baseUrl}${path}`, { ...init, signal: AbortSignal.timeout(WAIT_MS) }).then(answer);
}

/** A raw POST to /graphql. */
function post(body: BodyInit, headers: Record<string, string> = {}, token: string | null = broke.token): Promise<Answer> {
  return request('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body,
  });
}

/** One GraphQL operation as a JSON POST. */
const op = (query: string, variables?: unknown, token: string | null = broke.token) => () =>
  post(JSON.stringify({ query, variables }), {}, token);

const GENERATE = 'mutation G($input: GenerateImageInput!) { generateImage(input: $input) { id } }';
/** A generation request with one field changed, as a variable. */
const generateWith = (field: string, value: unknown) => op(GENERATE, { input: { prompt: 'a lighthouse', [field]: value } });
/** The same with the variables written as raw JSON (for numbers JSON.stringify cannot write). */
const generateWithRaw = (field: string, rawValue: string) => () =>
  post(`{"query": ${JSON.stringify(GENERATE)}, "variables": {"input": {"prompt": "a lighthouse", "${field}": ${rawValue}}}}`);

/** Postgres as the refused requests could have changed it. */
async function databaseFingerprint(): Promise<string> {
  const { rows } = await stack.tdb.db.raw(`
    SELECT (SELECT count(*) FROM users) AS users,
           (SELECT md5(coalesce(string_agg(concat_ws('|', id, email, photo_credits, password_hash, email_verified_at, is_admin), ',' ORDER BY id), '')) FROM users) AS users_md5,
           (SELECT md5(coalesce(string_agg(concat_ws('|', id, revoked_at, expires_at), ',' ORDER BY id), '')) FROM api_tokens) AS tokens_md5,
           (SELECT md5(coalesce(string_agg(concat_ws('|', id, status), ',' ORDER BY id), '')) FROM generations) AS generations_md5,
           (SELECT count(*) FROM credit_ledger) AS ledger,
           (SELECT count(*) FROM email_tokens) AS email_tokens,
           (SELECT count(*) FROM generated_images) AS images,
           (SELECT count(*) FROM generation_webhooks) AS webhooks,
           (SELECT count(*) FROM webhook_deliveries) AS deliveries,
           (SELECT count(*) FROM chat_exchanges) AS chat,
           (SELECT count(*) FROM staged_images) AS staged`);
  return JSON.stringify(rows[0]);
}

/** Every key of this stack's prefix with its size. */
async function redisFingerprint(): Promise<string> {
  // The abuse limits' counters are left out: they count every attempt, refused ones included, by
  // design (test/integration/limits.test.ts checks them).
  const limits = `${stack.env.REDIS_PREFIX}:limit:`;
  const keys = (await stack.redis.keys(`${stack.env.REDIS_PREFIX}:*`)).filter((k) => !k.startsWith(limits)).sort();
  const sizes = await Promise.all(
    keys.map(async (k) => {
      const type = await stack.redis.type(k);
      const size =
        type === 'list' ? await stack.redis.llen(k)
        : type === 'hash' ? await stack.redis.hlen(k)
        : type === 'zset' ? await stack.redis.zcard(k)
        : type === 'set' ? await stack.redis.scard(k)
        : type === 'string' ? await stack.redis.strlen(k)
        : 0;
      return `${k}:${type}:${size}`;
    }),
  );
  return sizes.join('\n');
}

async function runBatch(cases: Case[]): Promise<void> {
  const seen: string[] = [];
  for (const c of cases) {
    const got = await c.send();
    seen.push(`${c.name}: ${got.status} ${got.code} ${got.body.length}B ${got.body.slice(0, 160)}`);
    if (process.env.HOSTILE_DISCOVER) continue;
    expect.soft(`${c.name}: ${got.status} ${got.code}`).toBe(`${c.name}: ${c.status} ${c.code}`);
    expect.soft(got.status, `${c.name}: no 5xx`).toBeLessThan(500);
    if (c.includes) expect.soft(got.body, c.name).toContain(c.includes);
    // Nothing of the server's insides: no stack frame, source path, SQL or JSON parser message.
    expect.soft(got.body, `${c.name}: nothing internal`).not.toMatch(LEAKS);
    expect.soft(got.body.length, `${c.name}: a bounded answer`).toBeLessThan(MAX_ANSWER_BYTES);
  }
  if (process.env.HOSTILE_DISCOVER) console.log(seen.join('\n'));
  const health = await fetch(`${stack.baseUrl}/healthz`, { signal: AbortSignal.timeout(WAIT_MS) });
  expect(health.status, 'the API answers after the batch').toBe(200);
}

/** Runs a batch of requests that must all be refused, and checks that they wrote nothing. */
async function refusedBatch(cases: Case[]): Promise<void> {
  const before = [await databaseFingerprint(), await redisFingerprint()];
  await runBatch(cases);
  expect([await databaseFingerprint(), await redisFingerprint()], 'refused requests wrote nothing').toEqual(before);
}

beforeAll(async () => {
  // One user makes about twenty generations within a minute that stay queued (no worker), past the
  // default MAX_UNFINISHED_GENERATIONS_PER_USER: the generation limits are raised above that (still
  // on, so their path runs for every case); the sign-in and sign-up cases end at input checks.
  stack = await startStack({ worker: false, env: { RATE_LIMIT_GENERATIONS_PER_MINUTE: '100', MAX_UNFINISHED_GENERATIONS_PER_USER: '50' } });
  broke = await stack.createUser(0);
  other = await stack.createUser(100);
  const made = await op(GENERATE, { input: { prompt: 'the other user' } }, other.token)();
  otherGenerationId = (JSON.parse(made.body) as { data: { generateImage: { id: string } } }).data.generateImage.id;
  const token = await op('mutation T { createApiToken(name: "spare") { apiToken { id } token } }', undefined, other.token)();
  otherTokenId = (JSON.parse(token.body) as { data: { createApiToken: { apiToken: { id: string } } } }).data.createApiToken.apiToken.id;
  // A token of the broke user's, revoked; and one whose expiry has passed.
  const spare = await op('mutation T { createApiToken(name: "revoked") { apiToken { id } token } }')();
  const spareData = (JSON.parse(spare.body) as { data: { createApiToken: { apiToken: { id: string }; token: string } } }).data.createApiToken;
  revokedToken = spareData.token;
  await op('mutation R($id: ID!) { revokeApiToken(id: $id) }', { id: spareData.apiToken.id })();
  const expiring = await op('mutation T { createApiToken(name: "expired") { apiToken { id } token } }')();
  const expiringData = (JSON.parse(expiring.body) as { data: { createApiToken: { apiToken: { id: string }; token: string } } }).data.createApiToken;
  expiredToken = expiringData.token;
  await stack.tdb.db('api_tokens').where({ id: expiringData.apiToken.id }).update({ expires_at: stack.tdb.db.raw(`now() - interval '1 minute'`) });
}, 120_000);

afterAll(async () => {
  await stack?.close();
});

describe('hostile input over HTTP', () => {
  it('bad transport: malformed bodies, content types, methods and sizes', async () => {
    const bodies: Array<[string, string, number, string]> = [
      ['truncated object', '{', 400, 'BAD_REQUEST'],
      ['truncated after a key', '{"query": ', 400, 'BAD_REQUEST'],
      ['truncated string', '{"query": "{ me { email', 400, 'BAD_REQUEST'],
      ['unclosed object', '{"query":"{ me { email } }"', 400, 'BAD_REQUEST'],
      ['trailing comma', '{"query":"{ me { email } }",}', 400, 'BAD_REQUEST'],
      ['single quotes', "{'query':'{ me { email } }'}", 400, 'BAD_REQUEST'],
      ['empty body', '', 400, 'BAD_REQUEST'],
      ['whitespace body', '   \n ', 400, 'BAD_REQUEST'],
      ['null', 'null', 400, 'BAD_REQUEST'],
      ['a string', '"{ me { email } }"', 400, 'BAD_REQUEST'],
      ['a number', '123', 400, 'BAD_REQUEST'],
      ['true', 'true', 400, 'BAD_REQUEST'],
      ['an empty array (a batch)', '[]', 400, 'BAD_REQUEST'],
      ['a batch of two', '[{"query":"{ __typename }"},{"query":"{ __typename }"}]', 400, 'BAD_REQUEST'],
      ['no query', '{}', 400, 'BAD_REQUEST'],
      ['query is a number', '{"query": 1}', 400, 'BAD_REQUEST'],
      ['query is null', '{"query": null}', 400, 'BAD_REQUEST'],
      ['query is an object', '{"query": {"a": 1}}', 400, 'BAD_REQUEST'],
      ['variables is a string', '{"query":"{ __typename }","variables":"x"}', 400, 'BAD_REQUEST'],
      ['variables is an array', '{"query":"{ __typename }","variables":[1]}', 400, 'BAD_REQUEST'],
      ['operationName is a number', '{"query":"{ __typename }","operationName":5}', 400, 'OPERATION_RESOLUTION_FAILURE'],
      ['extensions is a string', '{"query":"{ __typename }","extensions":"x"}', 400, 'BAD_REQUEST'],
      ['an unknown operationName', '{"query":"query A { __typename }","operationName":"B"}', 400, 'OPERATION_RESOLUTION_FAILURE'],
      ['a NUL byte in the JSON text', '{"query":"{ __typename }"\u0000}', 400, 'BAD_REQUEST'],
      ['empty query text', '{"query":""}', 200, 'GRAPHQL_PARSE_FAILED'],
      ['a syntax error', '{"query":"{ me { email }"}', 200, 'GRAPHQL_PARSE_FAILED'],
    ];
    const big = JSON.stringify({ query: '{ __typename }', variables: { x: 'a'.repeat(300 * 1024) } });
    const cases: Case[] = [
      ...bodies.map(([name, body, status, code]) => ({ name, send: () => post(body), status, code })),
      { name: 'invalid UTF-8 bytes', send: () => post(new Blob([new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])])), status: 400, code: 'BAD_REQUEST' },
      { name: 'text/plain (no preflight)', send: () => post('{"query":"{ __typename }"}', { 'content-type': 'text/plain' }), status: 403, code: 'CSRF_HEADER_MISSING' },
      { name: 'a form post', send: () => post('query=%7B__typename%7D', { 'content-type': 'application/x-www-form-urlencoded' }), status: 403, code: 'CSRF_HEADER_MISSING' },
      { name: 'multipart', send: () => post('--x\r\n\r\n--x--', { 'content-type': 'multipart/form-data; boundary=x' }), status: 403, code: 'CSRF_HEADER_MISSING' },
      { name: 'application/xml', send: () => post('<query/>', { 'content-type': 'application/xml' }), status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
      { name: 'GET without the CSRF header', send: () => request('/graphql?query=%7B__typename%7D', {}), status: 403, code: 'CSRF_HEADER_MISSING' },
      { name: 'GET of a mutation', send: () => request(`/graphql?query=${encodeURIComponent('mutation { signOut }')}`, { headers: { 'x-graphql-yoga-csrf': '1' } }), status: 405, code: 'BAD_REQUEST' },
      { name: 'GET with malformed variables', send: () => request('/graphql?query=%7B__typename%7D&variables=%7Bx', { headers: { 'x-graphql-yoga-csrf': '1' } }), status: 400, code: 'BAD_REQUEST' },
      { name: 'GET with malformed extensions', send: () => request('/graphql?query=%7B__typename%7D&extensions=%5B', { headers: { 'x-graphql-yoga-csrf': '1' } }), status: 400, code: 'BAD_REQUEST' },
      { name: 'GET with no query', send: () => request('/graphql?variables=%7B%7D', { headers: { 'x-graphql-yoga-csrf': '1', accept: 'application/json' } }), status: 400, code: 'BAD_REQUEST' },
      { name: 'PUT', send: () => request('/graphql', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"query":"{ __typename }"}' }), status: 405, code: 'METHOD_NOT_ALLOWED' },
      { name: 'DELETE', send: () => request('/graphql', { method: 'DELETE' }), status: 405, code: 'METHOD_NOT_ALLOWED' },
      { name: 'a body over MAX_BODY_BYTES', send: () => post(big), status: 413, code: 'PAYLOAD_TOO_LARGE' },
      // yoga serves any path that ends in /graphql: the cap holds there too.
      {
        name: 'a body over MAX_BODY_BYTES to another path yoga serves',
        send: () => request('/x/graphql', { method: 'POST', headers: { 'content-type': 'application/json' }, body: big }),
        status: 413,
        code: 'PAYLOAD_TOO_LARGE',
      },
      {
        name: 'a chunked body over MAX_BODY_BYTES',
        send: () =>
          request('/graphql', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: new ReadableStream({
              start(c) {
                for (let i = 0; i < 40; i++) c.enqueue(new TextEncoder().encode('x'.repeat(10 * 1024)));
                c.close();
              },
            }),
            duplex: 'half',
          } as RequestInit),
        status: 413,
        code: 'PAYLOAD_TOO_LARGE',
      },
    ];
    await refusedBatch(cases);
  });

  it('documents built to exhaust the server', async () => {
    const aliases = (n: number) => `{ ${Array.from({ length: n }, (_, i) => `a${i}: me { email photoCredits }`).join(' ')} }`;
    const introspectionBomb = (n: number) => `{ __schema { types { ${'fields { type { '.repeat(n)}name${' } }'.repeat(n)} } } }`;
    const fragments = (n: number) =>
      `query Q { ...F0 } ${Array.from({ length: n }, (_, i) => `fragment F${i} on Query { me { email } ${i + 1 < n ? `...F${i + 1}` : ''} }`).join(' ')}`;
    const cases: Case[] = [
      { name: '5,000 aliases', send: op(aliases(5000)), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '16 aliases', send: op(aliases(16)), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '15 aliases (the limit)', send: op(aliases(15)), status: 200, code: null },
      { name: '50-level nesting', send: op(`{ ${'me { '.repeat(50)}email${' }'.repeat(50)} }`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '10,000 nested selection sets', send: op(`{ ${'a { '.repeat(10_000)}b${' }'.repeat(10_000)} }`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '10,000 nested list literals', send: op(`{ generation(id: ${'['.repeat(10_000)}1${']'.repeat(10_000)}) { id } }`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '10,000 nested object literals', send: op(`{ generation(id: ${'{a: '.repeat(10_000)}1${'}'.repeat(10_000)}) { id } }`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '10,000 nested lists in a variable', send: () => post(`{"query": "query Q($id: ID!) { generation(id: $id) { id } }", "variables": {"id": ${'['.repeat(10_000)}1${']'.repeat(10_000)}}}`), status: 400, code: 'BAD_USER_INPUT' },
      { name: '65 nested parentheses', send: op(`{ generation(id: "x") ${'('.repeat(65)} }`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '100 brackets inside a string (not nesting)', send: op(`mutation { generateImage(input: { prompt: "${'[{('.repeat(100)}\\"" }) { id } }`), status: 200, code: 'INSUFFICIENT_CREDITS' },
      { name: '100 brackets inside a block string', send: op(`mutation { generateImage(input: { prompt: """${'[{('.repeat(100)}""" }) { id } }`), status: 200, code: 'INSUFFICIENT_CREDITS' },
      { name: '100 brackets in a comment', send: op(`mutation { # ${'[{('.repeat(100)}\n generateImage(input: { prompt: "x" }) { id } }`), status: 200, code: 'INSUFFICIENT_CREDITS' },
      {
        name: 'deep brackets hidden behind an escaped triple quote in a block string',
        send: op(`{ generation(id: """\\"""""", x: ${'['.repeat(100)}1${']'.repeat(100)}) { id } }`),
        status: 200,
        code: 'GRAPHQL_VALIDATION_FAILED',
        includes: 'nests brackets deeper than 64',
      },
      {
        name: '100,001 values in a variable (more than the text check reads)',
        send: () => post(`{"query": "query Q($id: ID!) { generation(id: $id) { id } }", "variables": {"id": "x", "big": [${Array(100_001).fill(0).join(',')}]}}`),
        status: 200,
        code: 'BAD_USER_INPUT',
        includes: 'more than 100000 values',
      },
      { name: 'a fragment cycle', send: op('query Q { ...A } fragment A on Query { ...B } fragment B on Query { ...A }'), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: 'a fragment spreading itself', send: op('query Q { ...A } fragment A on Query { me { email } ...A }'), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '200 chained fragments (past the token limit)', send: op(fragments(200)), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: 'depth hidden in fragments', send: op(`query Q { ...D0 } ${Array.from({ length: 12 }, (_, i) => `fragment D${i} on Query { ${i + 1 < 12 ? `...D${i + 1}` : 'me { email }'} }`).join(' ')}`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '100 directives on one field', send: op(`{ me { email ${'@include(if: true) '.repeat(100)}} }`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '3,000 directives', send: op(`{ me { email ${'@skip(if: false) '.repeat(3000)}} }`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: 'an unknown directive', send: op('{ me { email @nope } }'), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: 'an introspection bomb, 10 levels', send: op(introspectionBomb(10)), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: 'an introspection bomb, 400 levels', send: op(introspectionBomb(400)), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '__typename 1,000 times', send: op(`{ ${'__typename '.repeat(1000)}}`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '3,000 unknown fields', send: op(`{ ${Array.from({ length: 3000 }, (_, i) => `f${i}`).join(' ')} }`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: '500 operations, none chosen', send: op(Array.from({ length: 500 }, (_, i) => `query Q${i} { __typename }`).join(' ')), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      { name: 'a 10,000-character field name', send: op(`{ ${'x'.repeat(10_000)} }`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
      {
        name: 'a subscription with 16 aliases (refused before it starts)',
        send: () =>
          request('/graphql', {
            method: 'POST',
            headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${broke.token}` },
            body: JSON.stringify({ query: `subscription S($id: ID!) { ${Array.from({ length: 16 }, (_, i) => `a${i}: generationProgress(id: $id) { status }`).join(' ')} }`, variables: { id: otherGenerationId } }),
          }),
        status: 200,
        code: 'GRAPHQL_VALIDATION_FAILED',
      },
      {
        name: 'a subscription with a NUL byte in its variable',
        send: () =>
          request('/graphql', {
            method: 'POST',
            headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${broke.token}` },
            body: JSON.stringify({ query: 'subscription S($id: ID!) { generationProgress(id: $id) { status } }', variables: { id: 'a\u0000b' } }),
          }),
        status: 200,
        code: 'BAD_USER_INPUT',
      },
      { name: '30 unknown fields: 20 errors listed, then one counting the rest', send: op(`{ me { ${Array.from({ length: 30 }, (_, i) => `f${i}`).join(' ')} } }`), status: 200, code: 'GRAPHQL_VALIDATION_FAILED', includes: '"omitted":10' },
      { name: 'a misspelt field', send: op('{ me { emial } }'), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
    ];
    await refusedBatch(cases);
  });

  it('variables of the wrong type, and numbers that are not numbers', async () => {
    const intFields = ['steps', 'width', 'height', 'batchSize', 'startDeadlineSeconds'];
    const cases: Case[] = [];
    for (const field of [...intFields, 'cfgScale', 'seed']) {
      cases.push(
        { name: `${field}: "NaN"`, send: generateWith(field, 'NaN'), status: 400, code: 'BAD_USER_INPUT' },
        { name: `${field}: 1e400 (Infinity)`, send: generateWithRaw(field, '1e400'), status: 400, code: 'BAD_USER_INPUT' },
        { name: `${field}: -1e400`, send: generateWithRaw(field, '-1e400'), status: 400, code: 'BAD_USER_INPUT' },
        { name: `${field}: 2^60`, send: generateWith(field, 2 ** 60), status: field === 'cfgScale' ? 200 : 400, code: 'BAD_USER_INPUT' },
        { name: `${field}: "12"`, send: generateWith(field, '12'), status: 400, code: 'BAD_USER_INPUT' },
        { name: `${field}: true`, send: generateWith(field, true), status: 400, code: 'BAD_USER_INPUT' },
        { name: `${field}: an object`, send: generateWith(field, { n: 1 }), status: 400, code: 'BAD_USER_INPUT' },
        { name: `${field}: a list`, send: generateWith(field, [1]), status: 400, code: 'BAD_USER_INPUT' },
      );
    }
    cases.push(
      { name: 'steps: -0', send: generateWithRaw('steps', '-0'), status: 200, code: 'BAD_USER_INPUT' },
      { name: 'width: -0', send: generateWithRaw('width', '-0'), status: 200, code: 'BAD_USER_INPUT' },
      { name: 'cfgScale: -0', send: generateWithRaw('cfgScale', '-0'), status: 200, code: 'BAD_USER_INPUT' },
      { name: 'batchSize: -0', send: generateWithRaw('batchSize', '-0'), status: 200, code: 'BAD_USER_INPUT' },
      { name: 'seed: -0 (a valid seed; refused for the credits)', send: generateWithRaw('seed', '-0'), status: 200, code: 'INSUFFICIENT_CREDITS' },
      { name: 'steps: 1.5', send: generateWith('steps', 1.5), status: 400, code: 'BAD_USER_INPUT' },
      { name: 'prompt: a number', send: op(GENERATE, { input: { prompt: 5 } }), status: 400, code: 'BAD_USER_INPUT' },
      { name: 'prompt: null', send: op(GENERATE, { input: { prompt: null } }), status: 400, code: 'BAD_USER_INPUT' },
      { name: 'prompt missing', send: op(GENERATE, { input: {} }), status: 400, code: 'BAD_USER_INPUT' },
      { name: 'input missing', send: op(GENERATE, {}), status: 400, code: 'BAD_USER_INPUT' },
      { name: 'input is a string', send: op(GENERATE, { input: 'x' }), status: 400, code: 'BAD_USER_INPUT' },
      { name: 'an unknown input field', send: generateWith('nope', 1), status: 400, code: 'BAD_USER_INPUT' },
      { name: '10,000 unknown input fields', send: op(GENERATE, { input: { prompt: 'x', ...Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, 1])) } }), status: 400, code: 'BAD_USER_INPUT' },
      { name: 'sampler: unknown', send: generateWith('sampler', 'Nope'), status: 200, code: 'BAD_USER_INPUT' },
      { name: 'webhookEvents: unknown value', send: generateWith('webhookEvents', ['NOPE']), status: 400, code: 'BAD_USER_INPUT' },
      { name: 'first: -1', send: op('query L($n: Int) { generations(first: $n) { edges { node { id } } } }', { n: -1 }), status: 200, code: 'BAD_USER_INPUT' },
      { name: 'first: 2^31', send: op('query L($n: Int) { generations(first: $n) { edges { node { id } } } }', { n: 2 ** 31 }), status: 400, code: 'BAD_USER_INPUT' },
      { name: 'after: not a cursor', send: op('query L($a: String) { generations(after: $a) { edges { node { id } } } }', { a: '!!!' }), status: 200, code: 'BAD_USER_INPUT' },
      { name: 'a variable never declared', send: op('query L { generations(first: $n) { edges { node { id } } } }', { n: 1 }), status: 200, code: 'GRAPHQL_VALIDATION_FAILED' },
    );
    await refusedBatch(cases);
  });

  it('text Postgres cannot store, in every string the service accepts', async () => {
    const bad = { 'a NUL byte': 'a\u0000b', 'a lone high surrogate': 'a\ud800b', 'a lone low surrogate': 'a\udc00b' };
    const cases: Case[] = [];
    for (const [what, text] of Object.entries(bad)) {
      cases.push(
        ...['prompt', 'negativePrompt', 'characterName', 'sampler', 'webhookUrl', 'idempotencyKey'].map((field) => ({
          name: `${field} with ${what}`,
          send: generateWith(field, text),
          status: 200,
          code: 'BAD_USER_INPUT',
        })),
        // GraphQL's own parser refuses a lone surrogate escape in a literal.
        { name: `prompt literal with ${what}`, send: op(`mutation { generateImage(input: { prompt: ${JSON.stringify(text)} }) { id } }`), status: 200, code: what === 'a NUL byte' ? 'BAD_USER_INPUT' : 'GRAPHQL_PARSE_FAILED' },
        { name: `signUp email with ${what}`, send: op('mutation S($e: String!) { signUp(email: $e, password: "long enough password") { email } }', { e: `x${text}@example.com` }, null), status: 200, code: 'BAD_USER_INPUT' },
        { name: `signUp password with ${what}`, send: op('mutation S($p: String!) { signUp(email: "new@example.com", password: $p) { email } }', { p: `long enough ${text}` }, null), status: 200, code: 'BAD_USER_INPUT' },
        { name: `signIn email with ${what}`, send: op('mutation S($e: String!) { signIn(email: $e, password: "whatever it is") { token } }', { e: `x${text}@example.com` }, null), status: 200, code: 'BAD_USER_INPUT' },
        { name: `requestPasswordReset with ${what}`, send: op('mutation R($e: String!) { requestPasswordReset(email: $e) }', { e: `x${text}@example.com` }, null), status: 200, code: 'BAD_USER_INPUT' },
        { name: `createApiToken name with ${what}`, send: op('mutation T($n: String!) { createApiToken(name: $n) { token } }', { n: text }), status: 200, code: 'BAD_USER_INPUT' },
        { name: `chatHistory characterName with ${what}`, send: op('query C($c: String!) { chatHistory(characterName: $c) { edges { node { prompt } } } }', { c: text }), status: 200, code: 'BAD_USER_INPUT' },
        { name: `generation id with ${what}`, send: op('query Q($id: ID!) { generation(id: $id) { id } }', { id: text }), status: 200, code: 'BAD_USER_INPUT' },
        { name: `a key with ${what}`, send: generateWith(`k${text}`, 1), status: 200, code: 'BAD_USER_INPUT' },
      );
    }
    cases.push(
      {
        name: 'REST prompt with a NUL byte',
        send: () =>
          request('/api/v1/generate-image/', {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${broke.token}` },
            body: JSON.stringify({ prompt: 'a\u0000b' }),
          }),
        status: 422,
        code: null,
        includes: '"loc":["body","prompt"],"msg":"Value contains a NUL character',
      },
      {
        name: 'REST prompt with a lone surrogate',
        send: () =>
          request('/api/v1/generate-image/', {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${broke.token}` },
            body: '{"prompt": "a\\ud800b"}',
          }),
        status: 422,
        code: null,
        includes: '"loc":["body","prompt"],"msg":"Value contains a lone UTF-16 surrogate',
      },
    );
    await refusedBatch(cases);
  });

  it('odd but storable text is stored and returned byte for byte', async () => {
    const texts = {
      'an RTL override': 'abc\u202Edcba\u202C end',
      emoji: '🦜 a parrot 👨‍👩‍👧 with a family 🏳️‍🌈',
      CRLF: 'line one\r\nline two\rline three\n end (ends are trimmed, as for every prompt)',
      SQL: "'); DROP TABLE generations; --",
      HTML: '<script>alert(1)</script><img src=x onerror=alert(2)>',
      'a zero-width joiner and combining marks': 'e\u0301\u200d\u0336',
    };
    for (const [what, text] of Object.entries(texts)) {
      for (const field of ['prompt', 'negativePrompt', 'characterName'] as const) {
        const made = await op(GENERATE, { input: { prompt: 'a lighthouse', [field]: text } }, other.token)();
        const id = (JSON.parse(made.body) as { data?: { generateImage: { id: string } } }).data?.generateImage.id;
        expect(id, `${field} with ${what}: ${made.body}`).toBeTruthy();
        const read = await op('query Q($id: ID!) { generation(id: $id) { input { prompt negativePrompt characterName } } }', { id }, other.token)();
        const input = (JSON.parse(read.body) as { data: { generation: { input: Record<string, string> } } }).data.generation.input;
        expect(input[field], `${field} with ${what}`).toBe(text);
      }
    }
    // The one place this service writes a prompt into HTML or a header: the images-ready mail.
    const mail = renderMail('imagesReady', { generationId: 'g', prompt: texts.HTML + texts.CRLF, images: 1 }, { publicUrl: 'http://x', tokenTtlS: 60 });
    expect(mail.html).not.toContain('<script>');
    expect(mail.html).toContain('&lt;script&gt;');
    expect(mail.subject).not.toMatch(/[\r\n]/);
  });

  it('missing, malformed, forged, expired and revoked tokens', async () => {
    const me = (authorization?: string) => () =>
      request('/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(authorization === undefined ? {} : { authorization }) },
        body: JSON.stringify({ query: 'query Me { me { email photoCredits } }' }),
      });
    const generate = (authorization?: string) => () =>
      request('/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(authorization === undefined ? {} : { authorization }) },
        body: JSON.stringify({ query: GENERATE, variables: { input: { prompt: 'x' } } }),
      });
    const forged = `sd_${randomBytes(24).toString('hex')}`;
    const variants: Array<[string, string | undefined, string | null]> = [
      ['no header', undefined, null],
      ['an empty header', '', null],
      ['Bearer alone', 'Bearer', 'UNAUTHENTICATED'],
      ['Bearer and a space', 'Bearer ', 'UNAUTHENTICATED'],
      ['Basic credentials', 'Basic dXNlcjpwYXNz', 'UNAUTHENTICATED'],
      ['the token without Bearer', broke.token, 'UNAUTHENTICATED'],
      ['two tokens', `Bearer ${broke.token} ${broke.token}`, 'UNAUTHENTICATED'],
      ['a forged token', `Bearer ${forged}`, 'UNAUTHENTICATED'],
      ['a token one character off', `Bearer ${broke.token.slice(0, -1)}${broke.token.endsWith('a') ? 'b' : 'a'}`, 'UNAUTHENTICATED'],
      ['a 4 KB token', `Bearer ${'a'.repeat(4096)}`, 'UNAUTHENTICATED'],
      ['an expired session', `Bearer ${expiredToken}`, 'UNAUTHENTICATED'],
      ['a revoked token', `Bearer ${revokedToken}`, 'UNAUTHENTICATED'],
      ['SQL in the token', "Bearer ' OR 1=1 --", 'UNAUTHENTICATED'],
    ];
    const cases: Case[] = [];
    for (const [name, header, code] of variants) {
      cases.push({ name: `me with ${name}`, send: me(header), status: 200, code });
      cases.push({ name: `generateImage with ${name}`, send: generate(header), status: 200, code: 'UNAUTHENTICATED' });
    }
    await refusedBatch(cases);
  });

  it("another user's ids on every operation that takes one", async () => {
    const cases: Case[] = [
      { name: "generation(id) of another user's", send: op('query Q($id: ID!) { generation(id: $id) { id } }', { id: otherGenerationId }), status: 200, code: null },
      { name: "cancelGeneration of another user's", send: op('mutation C($id: ID!) { cancelGeneration(id: $id) { id } }', { id: otherGenerationId }), status: 200, code: 'NOT_FOUND' },
      { name: "webhookDeliveries of another user's generation", send: op('query W($id: ID!) { webhookDeliveries(generationId: $id) { id } }', { id: otherGenerationId }), status: 200, code: 'NOT_FOUND' },
      // Revoking is idempotent: a token that is not yours (or not there) answers false, and stays as it was.
      { name: "revokeApiToken of another user's", send: op('mutation R($id: ID!) { revokeApiToken(id: $id) }', { id: otherTokenId }), status: 200, code: null },
      { name: 'grantPhotoCredits by a non-admin', send: op('mutation G($u: ID!) { grantPhotoCredits(userId: $u, amount: 5, reason: "x") { id } }', { u: broke.userId }), status: 200, code: 'FORBIDDEN' },
      {
        name: "generationProgress of another user's",
        send: () =>
          request('/graphql', {
            method: 'POST',
            headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${broke.token}` },
            body: JSON.stringify({ query: 'subscription P($id: ID!) { generationProgress(id: $id) { status } }', variables: { id: otherGenerationId } }),
          }),
        status: 200,
        code: 'NOT_FOUND',
      },
      {
        name: "REST status of another user's",
        send: () => request(`/api/v1/generation-status/${otherGenerationId}`, { headers: { authorization: `Bearer ${broke.token}` } }),
        status: 404,
        code: null,
        includes: 'was not found',
      },
      { name: 'generation(id) of an id that is not a uuid', send: op('query Q($id: ID!) { generation(id: $id) { id } }', { id: "1' OR '1'='1" }), status: 200, code: null },
    ];
    await refusedBatch(cases);
  });
});
