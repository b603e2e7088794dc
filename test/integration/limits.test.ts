/**
 * Abuse limits (src/limits/), over real parts: two API processes on one Redis and one Postgres (the
 * stack's API and a spawned `node` API), small limits through the environment. Generations per
 * minute and unfinished per user (GraphQL and REST), sign-in attempts per address and per client
 * address with and without TRUST_PROXY, open streams per user across processes and per process,
 * and what happens while Redis is down (a private redis-server this file stops).
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/accounts/passwords';
import { waitingKey } from '../../src/jobs/queues';
import { PROCESSES_TEST_MS, WAIT_MS } from '../helpers/budgets';
import { freePort, startStack, type Stack } from '../helpers/stack';
import { startRedis, stopRedis } from '../helpers/redisServer';
import { until } from '../helpers/wait';

interface Answer {
  data?: Record<string, unknown> | null;
  errors?: Array<{ message: string; extensions?: { code?: string; retryAfterSeconds?: number } }>;
}

async function post(baseUrl: string, query: string, variables: Record<string, unknown> = {}, opts: { token?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await fetch(`${baseUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...opts.headers },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  return (await res.json()) as Answer;
}

const codeOf = (a: Answer) => a.errors?.[0]?.extensions?.code;
const retryAfterOf = (a: Answer) => a.errors?.[0]?.extensions?.retryAfterSeconds;

const GENERATE = 'mutation G($input: GenerateImageInput!) { generateImage(input: $input) { id } }';
const CANCEL = 'mutation C($id: ID!) { cancelGeneration(id: $id) { status } }';
const SIGN_IN = 'mutation S($email: String!, $password: String!) { signIn(email: $email, password: $password) { token } }';
const ME = 'query { me { email } }';
const PROGRESS = 'subscription P($id: ID!) { generationProgress(id: $id) { status } }';
const PASSWORD = 'correct horse battery staple';
const INPUT = { prompt: 'a lighthouse', steps: 2, width: 64, height: 64 };

async function generate(baseUrl: string, token: string): Promise<Answer> {
  return post(baseUrl, GENERATE, { input: INPUT }, { token });
}

function restGenerate(baseUrl: string, token: string) {
  return fetch(`${baseUrl}/api/v1/generate-image/`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ prompt: 'a lighthouse', steps: 2, width: 64, height: 64 }),
    signal: AbortSignal.timeout(WAIT_MS),
  });
}

/** A user who can sign in with PASSWORD. */
async function userWithPassword(stack: Stack, credits = 0) {
  const email = `s${randomBytes(4).toString('hex')}@example.com`;
  const user = await stack.createUser(credits, email);
  await stack.tdb.db('users').where({ id: user.userId }).update({ password_hash: await hashPassword(PASSWORD), email_verified_at: stack.tdb.db.fn.now() });
  return { ...user, email };
}

const freshEmail = () => `nobody-${randomBytes(4).toString('hex')}@example.com`;

/**
 * A progress stream over SSE: `first` resolves with the first payload (an event, or the error that
 * refused the stream); the body is read on until the server ends it or `close()` hangs up (a client
 * that stopped reading would look like one that left).
 */
function openStream(baseUrl: string, id: string, token: string) {
  const controller = new AbortController();
  let settle!: (a: Answer) => void;
  const first = new Promise<Answer>((resolve) => (settle = resolve));
  const read = (async () => {
    const res = await fetch(`${baseUrl}/graphql`, {
      method: 'POST',
      signal: controller.signal,
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: PROGRESS, variables: { id } }),
    });
    if (!res.headers.get('content-type')?.includes('text/event-stream')) return settle((await res.json()) as Answer);
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let at: number;
      while ((at = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        const data = frame.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
        if (frame.includes('event: next') && data) settle(JSON.parse(data) as Answer);
      }
    }
  })();
  read.catch((err: unknown) => {
    if (!controller.signal.aborted) settle({ errors: [{ message: String(err), extensions: { code: 'STREAM_FAILED' } }] });
  });
  return { first, close: () => controller.abort() };
}

describe('generation limits across two API processes', () => {
  let stack: Stack;
  let other: { baseUrl: string; stop(): Promise<void> };
  const apis = () => [stack.baseUrl, other.baseUrl];
  const queued = () => stack.redis.llen(waitingKey(stack.config, 'high_priority'));
  const rows = async (userId: string) => Number((await stack.tdb.db('generations').where({ user_id: userId }).count<{ n: string }>({ n: '*' }).first())?.n);

  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { RATE_LIMIT_GENERATIONS_PER_MINUTE: '6', MAX_UNFINISHED_GENERATIONS_PER_USER: '3' } });
    other = await stack.spawnApi();
  }, PROCESSES_TEST_MS);
  afterAll(async () => {
    await other?.stop();
    await stack?.close();
  });

  it('refuses the generation past RATE_LIMIT_GENERATIONS_PER_MINUTE with RATE_LIMITED, charging and queuing nothing; REST gets 429', async () => {
    const user = await stack.createUser(100);
    // Six, alternating between the processes; each cancelled, so the unfinished limit stays out of it.
    for (let i = 0; i < 6; i++) {
      const made = await generate(apis()[i % 2]!, user.token);
      expect(made.errors, JSON.stringify(made.errors)).toBeUndefined();
      const id = (made.data!.generateImage as { id: string }).id;
      expect(codeOf(await post(apis()[(i + 1) % 2]!, CANCEL, { id }, { token: user.token }))).toBeUndefined();
    }
    const [credits, count, waiting] = [await stack.credits(user.userId), await rows(user.userId), await queued()];
    expect(credits).toBe(100);
    for (const baseUrl of apis()) {
      const refused = await generate(baseUrl, user.token);
      expect(codeOf(refused)).toBe('RATE_LIMITED');
      expect(retryAfterOf(refused)).toBeGreaterThanOrEqual(1);
      expect(retryAfterOf(refused)).toBeLessThanOrEqual(60);
    }
    const rest = await restGenerate(other.baseUrl, user.token);
    expect(rest.status).toBe(429);
    const retryAfter = Number(rest.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(((await rest.json()) as { detail: string }).detail).toMatch(/6 generations a minute/);
    // Nothing was reserved, written or queued by the refusals.
    expect([await stack.credits(user.userId), await rows(user.userId), await queued()]).toEqual([credits, count, waiting]);
    // Another user is not affected.
    const someoneElse = await stack.createUser(1);
    expect(codeOf(await generate(other.baseUrl, someoneElse.token))).toBeUndefined();
  });

  it('refuses a generation past MAX_UNFINISHED_GENERATIONS_PER_USER until one finishes, charging nothing', async () => {
    const user = await stack.createUser(100);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const made = await generate(apis()[i % 2]!, user.token);
      expect(made.errors, JSON.stringify(made.errors)).toBeUndefined();
      ids.push((made.data!.generateImage as { id: string }).id);
    }
    const before = [await stack.credits(user.userId), await rows(user.userId), await queued()];
    expect(before[0]).toBe(97);
    const refused = await generate(other.baseUrl, user.token);
    expect(codeOf(refused)).toBe('RATE_LIMITED');
    expect(refused.errors![0]!.message).toMatch(/3 generations that have not finished/);
    expect(retryAfterOf(refused)).toBeGreaterThanOrEqual(1);
    const rest = await restGenerate(stack.baseUrl, user.token);
    expect(rest.status).toBe(429);
    expect(Number(rest.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect([await stack.credits(user.userId), await rows(user.userId), await queued()]).toEqual(before);
    // One ends: there is room for one more.
    expect(codeOf(await post(stack.baseUrl, CANCEL, { id: ids[0] }, { token: user.token }))).toBeUndefined();
    const again = await generate(other.baseUrl, user.token);
    expect(again.errors, JSON.stringify(again.errors)).toBeUndefined();
    expect(await stack.credits(user.userId)).toBe(97);
  });

  it('tells a user with too few credits so, not that they are rate-limited', async () => {
    const user = await stack.createUser(0);
    expect(codeOf(await generate(stack.baseUrl, user.token))).toBe('INSUFFICIENT_CREDITS');
  });
});

describe('open streams per user across two API processes, and per process', () => {
  let stack: Stack;
  let other: { baseUrl: string; stop(): Promise<void> };
  const slotsOf = (userId: string) => stack.redis.zcard(`${stack.config.redis.prefix}:limit:streams:${userId}`);

  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { MAX_SUBSCRIPTIONS_PER_USER: '2' } });
    other = await stack.spawnApi();
  }, PROCESSES_TEST_MS);
  afterAll(async () => {
    await other?.stop();
    await stack?.close();
  });

  it('refuses a third stream of a user with RATE_LIMITED wherever it is opened; a closed stream frees its slot', async () => {
    const user = await stack.createUser(10);
    const made = await generate(stack.baseUrl, user.token);
    const id = (made.data!.generateImage as { id: string }).id;
    const a = openStream(stack.baseUrl, id, user.token);
    const b = openStream(other.baseUrl, id, user.token);
    expect(((await a.first).data?.generationProgress as { status: string }).status).toBe('QUEUED');
    expect(((await b.first).data?.generationProgress as { status: string }).status).toBe('QUEUED');
    expect(await slotsOf(user.userId)).toBe(2);
    for (const baseUrl of [stack.baseUrl, other.baseUrl]) {
      const refused = await openStream(baseUrl, id, user.token).first;
      expect(codeOf(refused)).toBe('RATE_LIMITED');
      expect(retryAfterOf(refused)).toBeGreaterThanOrEqual(1);
    }
    expect(await slotsOf(user.userId)).toBe(2);
    // Another user has slots of their own.
    const someoneElse = await stack.createUser(1);
    const theirs = (await generate(other.baseUrl, someoneElse.token)).data!.generateImage as { id: string };
    const c = openStream(other.baseUrl, theirs.id, someoneElse.token);
    expect(codeOf(await c.first)).toBeUndefined();
    c.close();
    // The stream on the other process hangs up: its slot goes back, and a new stream is let in.
    b.close();
    await until(async () => (await slotsOf(user.userId)) === 1, 'the closed stream to give its slot back');
    const d = openStream(stack.baseUrl, id, user.token);
    expect(((await d.first).data?.generationProgress as { status: string }).status).toBe('QUEUED');
    // A stream that ends by itself (its generation was cancelled) gives its slot back too.
    expect(codeOf(await post(stack.baseUrl, CANCEL, { id }, { token: user.token }))).toBeUndefined();
    await until(async () => (await slotsOf(user.userId)) === 0, 'the ended streams to give their slots back');
    a.close();
    d.close();
  });

  it('refuses a stream past MAX_SUBSCRIPTIONS_PER_PROCESS on that process only', async () => {
    const small = await stack.startApi({ MAX_SUBSCRIPTIONS_PER_PROCESS: '1' });
    const [u1, u2] = [await stack.createUser(1), await stack.createUser(1)];
    const id1 = ((await generate(stack.baseUrl, u1.token)).data!.generateImage as { id: string }).id;
    const id2 = ((await generate(stack.baseUrl, u2.token)).data!.generateImage as { id: string }).id;
    const first = openStream(small.baseUrl, id1, u1.token);
    expect(codeOf(await first.first)).toBeUndefined();
    expect(codeOf(await openStream(small.baseUrl, id2, u2.token).first)).toBe('RATE_LIMITED');
    const elsewhere = openStream(stack.baseUrl, id2, u2.token);
    expect(codeOf(await elsewhere.first)).toBeUndefined();
    elsewhere.close();
    first.close();
    await until(async () => (await slotsOf(u1.userId)) === 0, 'the stream to end');
    const next = openStream(small.baseUrl, id2, u2.token);
    expect(codeOf(await next.first)).toBeUndefined();
    next.close();
  });
});

describe('sign-in attempts per address and per client address', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { RATE_LIMIT_SIGNIN_PER_ADDRESS: '3', RATE_LIMIT_SIGNIN_PER_IP: '6' } });
  }, PROCESSES_TEST_MS);
  afterAll(async () => {
    await stack?.close();
  });

  it('counts by address and by the socket address, ignoring X-Forwarded-For without TRUST_PROXY; with TRUST_PROXY=1 by the last hop', async () => {
    const user = await userWithPassword(stack);
    // A right password signs in, and clears the address's count.
    expect(codeOf(await post(stack.baseUrl, SIGN_IN, { email: user.email, password: PASSWORD }))).toBeUndefined();
    for (let i = 0; i < 3; i++) expect(codeOf(await post(stack.baseUrl, SIGN_IN, { email: user.email, password: 'wrong guess' }))).toBe('UNAUTHENTICATED');
    // The fourth, even with the right password: refused, for up to 15 minutes.
    const refused = await post(stack.baseUrl, SIGN_IN, { email: ` ${user.email.toUpperCase()} `, password: PASSWORD });
    expect(codeOf(refused)).toBe('RATE_LIMITED');
    expect(retryAfterOf(refused)).toBeGreaterThanOrEqual(1);
    expect(retryAfterOf(refused)).toBeLessThanOrEqual(15 * 60);
    // Five attempts from 127.0.0.1 so far; one more for another address is let in, then none.
    expect(codeOf(await post(stack.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' }))).toBe('UNAUTHENTICATED');
    const byIp = await post(stack.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' });
    expect(codeOf(byIp)).toBe('RATE_LIMITED');
    expect(retryAfterOf(byIp)).toBeLessThanOrEqual(60 * 60);
    // Without TRUST_PROXY a client cannot pose as another with X-Forwarded-For.
    expect(codeOf(await post(stack.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' }, { headers: { 'x-forwarded-for': '203.0.113.9' } }))).toBe('RATE_LIMITED');

    // Behind one proxy (TRUST_PROXY=1), on the same Redis: the proxy's last hop is the client.
    const proxied = await stack.startApi({ TRUST_PROXY: '1' });
    const from = (chain: string) => ({ headers: { 'x-forwarded-for': chain } });
    expect(codeOf(await post(proxied.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' }, from('203.0.113.7')))).toBe('UNAUTHENTICATED');
    for (let i = 0; i < 5; i++) {
      // What the client wrote left of the proxy's entry is not believed.
      expect(codeOf(await post(proxied.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' }, from(`198.51.100.${i}, 203.0.113.7`)))).toBe('UNAUTHENTICATED');
    }
    expect(codeOf(await post(proxied.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' }, from('203.0.113.7')))).toBe('RATE_LIMITED');
    expect(codeOf(await post(proxied.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' }, from('10.9.8.7, 203.0.113.7')))).toBe('RATE_LIMITED');
    // Another client behind the proxy has its own count; and the user, signing in from there, gets in
    // again only after the address's window (still refused here).
    expect(codeOf(await post(proxied.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' }, from('203.0.113.8')))).toBe('UNAUTHENTICATED');
    expect(codeOf(await post(proxied.baseUrl, SIGN_IN, { email: user.email, password: PASSWORD }, from('203.0.113.10')))).toBe('RATE_LIMITED');
    // IPv6 clients are counted by their /64.
    for (let i = 0; i < 6; i++) {
      expect(codeOf(await post(proxied.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' }, from(`2001:db8:1:2::${i + 1}`)))).toBe('UNAUTHENTICATED');
    }
    expect(codeOf(await post(proxied.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' }, from('2001:db8:1:2:ffff::9')))).toBe('RATE_LIMITED');
    expect(codeOf(await post(proxied.baseUrl, SIGN_IN, { email: freshEmail(), password: 'x' }, from('2001:db8:1:3::1')))).toBe('UNAUTHENTICATED');
  });
});


describe('with Redis down', () => {
  let redisPort: number;
  let redis: ChildProcess;
  let stack: Stack;
  const logLines: string[] = [];

  beforeAll(async () => {
    redisPort = await freePort();
    redis = await startRedis(redisPort);
    stack = await startStack({
      worker: false,
      logLines,
      env: { REDIS_URL: `redis://127.0.0.1:${redisPort}/0`, LOG_LEVEL: 'info', ENQUEUE_TIMEOUT_MS: '300', RATE_LIMIT_REDIS_TIMEOUT_MS: '200' },
    });
  }, PROCESSES_TEST_MS);
  afterAll(async () => {
    // Redis back first, so that the stack closes its connections and keys normally.
    if (redis.exitCode !== null || redis.signalCode !== null) redis = await startRedis(redisPort);
    await stack?.close();
    await stopRedis(redis);
  });

  it('refuses sign-in with SERVICE_UNAVAILABLE (fails closed), still answers `me`, lets a generation reach the queue path, and logs the outage once', async () => {
    const user = await userWithPassword(stack, 5);
    expect(codeOf(await post(stack.baseUrl, SIGN_IN, { email: user.email, password: PASSWORD }))).toBeUndefined();
    await stopRedis(redis);
    for (let i = 0; i < 3; i++) {
      // Bounded by the fetch's budget: a limiter that waited on Redis would hang here instead.
      expect(codeOf(await post(stack.baseUrl, SIGN_IN, { email: user.email, password: PASSWORD }))).toBe('SERVICE_UNAVAILABLE');
    }
    expect(codeOf(await post(stack.baseUrl, 'mutation { requestPasswordReset(email: "x@example.com") }'))).toBe('SERVICE_UNAVAILABLE');
    const me = await post(stack.baseUrl, ME, {}, { token: user.token });
    expect(me.errors).toBeUndefined();
    expect(me.data).toEqual({ me: { email: user.email } });
    // The rate counter lets it through (fails open); queuing it fails as before, and the credits go back.
    expect(codeOf(await generate(stack.baseUrl, user.token))).toBe('SERVICE_UNAVAILABLE');
    expect(await stack.credits(user.userId)).toBe(5);
    const outages = logLines.filter((l) => l.includes('rate limits: Redis unreachable'));
    expect(outages.map((l) => (JSON.parse(l) as { limit: string }).limit)).toEqual(['signIn', 'generations']);

    redis = await startRedis(redisPort);
    await until(async () => codeOf(await post(stack.baseUrl, SIGN_IN, { email: user.email, password: PASSWORD })) === undefined, 'sign-in to work again');
    expect(logLines.some((l) => l.includes('rate limits: Redis answers again'))).toBe(true);
  });
});
