/**
 * Idempotent submit over real processes: two API processes (real `node` children) and the stack's
 * own API race one key many times at once; Postgres (the key's primary key) decides, so there is one
 * generation and one charge. Without a worker: every generation stays QUEUED, nothing else moves
 * the credits.
 */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { graphql } from '../gql';
import { codeOf, gql } from '../helpers/graphql';
import { PROCESSES_TEST_MS } from '../helpers/budgets';
import { startRedis, stopRedis } from '../helpers/redisServer';
import { freePort, startStack, type Stack } from '../helpers/stack';
import { until } from '../helpers/wait';

const KeyedGenerateDoc = graphql(`
  mutation KeyedGenerate($input: GenerateImageInput!) {
    generateImage(input: $input) { id status creditsReserved startDeadlineAt }
  }
`);

const generationsOfUser = async (stack: Stack, userId: string): Promise<string[]> =>
  (await stack.tdb.db('generations').where({ user_id: userId }).orderBy('created_at').select('id')).map((r: { id: string }) => r.id);

const INPUT = { prompt: 'a lighthouse at dusk', steps: 4, width: 64, height: 64, batchSize: 2 };

describe('idempotent submit', () => {
  let stack: Stack;
  let apis: string[];
  const stops: Array<() => Promise<void>> = [];
  beforeAll(async () => {
    // No generations-per-minute limit here (the spawned APIs inherit the env): the races send dozens.
    stack = await startStack({ worker: false, env: { RATE_LIMIT_GENERATIONS_PER_MINUTE: '0' } });
    const [a, b] = await Promise.all([stack.spawnApi(), stack.spawnApi()]);
    stops.push(a.stop, b.stop);
    apis = [a.baseUrl, b.baseUrl];
  }, PROCESSES_TEST_MS);
  afterAll(async () => {
    await Promise.all(stops.map((s) => s()));
    await stack?.close();
  });

  const ledger = async (userId: string) =>
    (await stack.tdb.db('credit_ledger').where({ user_id: userId }).whereNot({ kind: 'grant' }).select('kind', 'amount', 'generation_id')) as Array<{
      kind: string;
      amount: number;
      generation_id: string;
    }>;
  const generationsOf = (userId: string) => generationsOfUser(stack, userId);

  it('one key raced many times at once on two API processes makes one generation and one charge', async () => {
    const user = await stack.createUser(100);
    const keys = ['order-1', 'order-2', 'order-3'];
    // 12 requests per key, spread over both spawned processes and the stack's API, all at once.
    const bases = [...apis, stack.baseUrl];
    const answers = await Promise.all(
      keys.flatMap((key) =>
        Array.from({ length: 12 }, (_, i) => gql(bases[i % bases.length]!, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: key } }, user.token).then((r) => ({ key, r }))),
      ),
    );
    for (const { r } of answers) expect(r.errors, JSON.stringify(r.errors)).toBeUndefined();
    const idsByKey = new Map(keys.map((k) => [k, new Set(answers.filter((a) => a.key === k).map((a) => a.r.data?.generateImage.id))]));
    for (const k of keys) expect(idsByKey.get(k)?.size, k).toBe(1);
    const ids = keys.map((k) => [...idsByKey.get(k)!][0]!);
    expect(new Set(ids).size).toBe(3);
    // Exactly the three generations, each charged once (batchSize 2).
    expect((await generationsOf(user.userId)).sort()).toEqual([...ids].sort());
    const rows = await ledger(user.userId);
    expect(rows.filter((r) => r.kind === 'charge').map((r) => r.generation_id).sort()).toEqual([...ids].sort());
    expect(rows.every((r) => r.kind === 'charge' && r.amount === -2)).toBe(true);
    expect(await stack.credits(user.userId)).toBe(100 - 3 * 2);
    // Sent again later (any process): the same generation, nothing charged.
    const again = await gql(apis[1]!, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'order-1' } }, user.token);
    expect(again.data?.generateImage.id).toBe(ids[0]);
    expect(await stack.credits(user.userId)).toBe(94);
  });

  it('the same key with a different input is refused with IDEMPOTENCY_CONFLICT; the same input written differently is not', async () => {
    const user = await stack.createUser(10);
    const first = await gql(apis[0]!, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'k' } }, user.token);
    const id = first.data?.generateImage.id;
    expect(id).toBeTruthy();
    // Defaults spelled out, spaces around the prompt, fields in another order: the same request.
    const same = await gql(
      apis[1]!,
      KeyedGenerateDoc,
      { input: { idempotencyKey: 'k', batchSize: 2, height: 64, width: 64, steps: 4, prompt: `  ${INPUT.prompt} `, cfgScale: 7, sampler: 'Euler a', seed: -1 } },
      user.token,
    );
    expect(same.errors).toBeUndefined();
    expect(same.data?.generateImage.id).toBe(id);
    for (const changed of [{ prompt: 'another prompt' }, { steps: 5 }, { startDeadlineSeconds: 60 }]) {
      const r = await gql(apis[1]!, KeyedGenerateDoc, { input: { ...INPUT, ...changed, idempotencyKey: 'k' } }, user.token);
      expect(codeOf(r), JSON.stringify(changed)).toBe('IDEMPOTENCY_CONFLICT');
      expect(r.errors?.[0]?.extensions?.generationId).toBe(id);
    }
    expect(await generationsOf(user.userId)).toEqual([id]);
    expect(await stack.credits(user.userId)).toBe(8);
    // Another user's key of the same name is their own.
    const other = await stack.createUser(10);
    const theirs = await gql(apis[0]!, KeyedGenerateDoc, { input: { ...INPUT, prompt: 'different', idempotencyKey: 'k' } }, other.token);
    expect(theirs.errors).toBeUndefined();
    expect(theirs.data?.generateImage.id).not.toBe(id);
    // Without a key, each request is a generation of its own.
    const plain = await Promise.all([0, 1].map((i) => gql(apis[i]!, KeyedGenerateDoc, { input: INPUT }, user.token)));
    expect(new Set(plain.map((p) => p.data?.generateImage.id)).size).toBe(2);
    expect(await stack.credits(user.userId)).toBe(4);
  });

  it('a retry answers with its generation even when the user is out of credits or past the rate limit', async () => {
    const user = await stack.createUser(2);
    const first = await gql(apis[0]!, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'last-credits' } }, user.token);
    const id = first.data?.generateImage.id;
    expect(id).toBeTruthy();
    expect(await stack.credits(user.userId)).toBe(0);
    const retry = await gql(apis[1]!, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'last-credits' } }, user.token);
    expect(retry.errors).toBeUndefined();
    expect(retry.data?.generateImage.id).toBe(id);
    expect(codeOf(await gql(apis[1]!, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'new' } }, user.token))).toBe('INSUFFICIENT_CREDITS');

    const limited = await stack.startApi({ RATE_LIMIT_GENERATIONS_PER_MINUTE: '1' });
    const rich = await stack.createUser(10);
    const once = await gql(limited.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'limited' } }, rich.token);
    expect(once.errors).toBeUndefined();
    const again = await gql(limited.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'limited' } }, rich.token);
    expect(again.errors).toBeUndefined();
    expect(again.data?.generateImage.id).toBe(once.data?.generateImage.id);
    expect(codeOf(await gql(limited.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'other' } }, rich.token))).toBe('RATE_LIMITED');
    expect(await stack.credits(rich.userId)).toBe(8);
  });

  it('refuses a key that is empty, too long or not printable ASCII with BAD_USER_INPUT, charging nothing', async () => {
    const user = await stack.createUser(10);
    for (const key of ['', 'x'.repeat(256), 'tab\there', 'ключ']) {
      const r = await gql(stack.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: key } }, user.token);
      expect(codeOf(r), JSON.stringify(key)).toBe('BAD_USER_INPUT');
      expect(r.errors?.[0]?.message).toMatch(/idempotencyKey must be 1 to 255 printable ASCII characters/);
    }
    const longest = await gql(stack.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: ` ~${'x'.repeat(253)}` } }, user.token);
    expect(longest.errors).toBeUndefined();
    expect(await stack.credits(user.userId)).toBe(8);
  });

  it('the REST Idempotency-Key header does the same', async () => {
    const user = await stack.createUser(10);
    const post = (base: string, body: Record<string, unknown>, key?: string) =>
      fetch(`${base}/api/v1/generate-image/`, {
        method: 'POST',
        headers: { authorization: `Bearer ${user.token}`, 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) },
        body: JSON.stringify(body),
      }).then(async (res) => ({ status: res.status, body: (await res.json()) as { task_id?: string; detail?: unknown } }));
    const body = { prompt: 'a lighthouse at dusk', steps: 4, width: 64, height: 64 };
    const raced = await Promise.all(Array.from({ length: 12 }, (_, i) => post(apis[i % 2]!, body, 'rest-key')));
    for (const r of raced) expect(r.status, JSON.stringify(r.body)).toBe(200);
    const ids = new Set(raced.map((r) => r.body.task_id));
    expect(ids.size).toBe(1);
    expect(await stack.credits(user.userId)).toBe(9);
    // GraphQL with the same key and the same input answers with the same generation.
    const viaGraphql = await gql(stack.baseUrl, KeyedGenerateDoc, { input: { ...body, idempotencyKey: 'rest-key' } }, user.token);
    expect(viaGraphql.data?.generateImage.id).toBe([...ids][0]);
    const conflict = await post(apis[1]!, { ...body, steps: 5 }, 'rest-key');
    expect(conflict.status).toBe(409);
    expect(conflict.body.detail).toMatch(/different request/);
    const bad = await post(apis[0]!, body, 'x'.repeat(256));
    expect(bad.status).toBe(422);
    expect(bad.body.detail).toEqual([{ loc: ['header', 'Idempotency-Key'], msg: expect.stringMatching(/Idempotency-Key must be 1 to 255/), type: 'value_error' }]);
    expect(await stack.credits(user.userId)).toBe(9);
    expect(await generationsOf(user.userId)).toEqual([...ids]);
  });

  it('a key past IDEMPOTENCY_TTL_S makes a new generation (charged again)', async () => {
    const shortTtl = await stack.startApi({ IDEMPOTENCY_TTL_S: '1' });
    const user = await stack.createUser(10);
    const first = await gql(shortTtl.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'ttl' } }, user.token);
    const id = first.data?.generateImage.id;
    expect(id).toBeTruthy();
    // While it lives, the same generation.
    const soon = await gql(shortTtl.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'ttl' } }, user.token);
    const alive = await stack.tdb.db.raw<{ rows: Array<{ live: boolean }> }>(`SELECT expires_at > now() AS live FROM idempotency_keys WHERE user_id = ?`, [user.userId]);
    if (alive.rows[0]?.live) expect(soon.data?.generateImage.id).toBe(id);
    await until(async () => {
      const r = await stack.tdb.db.raw<{ rows: Array<{ expired: boolean }> }>(`SELECT expires_at <= now() AS expired FROM idempotency_keys WHERE user_id = ?`, [user.userId]);
      return r.rows[0]?.expired === true;
    }, 'the key to expire');
    // Past its TTL, even another input is a new generation with that key.
    const later = await Promise.all([0, 1].map((i) => gql(apis[i]!, KeyedGenerateDoc, { input: { ...INPUT, steps: 6, idempotencyKey: 'ttl' } }, user.token)));
    for (const r of later) expect(r.errors, JSON.stringify(r.errors)).toBeUndefined();
    const newId = later[0]!.data?.generateImage.id;
    expect(later[1]!.data?.generateImage.id).toBe(newId);
    expect(newId).not.toBe(id);
    expect((await generationsOf(user.userId)).sort()).toEqual([id, newId].sort());
    expect(await stack.credits(user.userId)).toBe(6);
  });
});

describe('idempotent submit when the job cannot be queued', () => {
  let redisPort: number;
  let redis: ChildProcess;
  let stack: Stack;
  beforeAll(async () => {
    redisPort = await freePort();
    redis = await startRedis(redisPort);
    stack = await startStack({ worker: false, env: { REDIS_URL: `redis://127.0.0.1:${redisPort}/0`, ENQUEUE_TIMEOUT_MS: '300', RATE_LIMIT_REDIS_TIMEOUT_MS: '200', RATE_LIMIT_GENERATIONS_PER_MINUTE: '0' } });
  }, PROCESSES_TEST_MS);
  afterAll(async () => {
    redis?.kill('SIGCONT');
    await stack?.close();
    if (redis) await stopRedis(redis);
  });

  it('frees the key of a request refused with SERVICE_UNAVAILABLE, so the retry creates the generation', async () => {
    const user = await stack.createUser(7);
    // The job queue has been used while Redis was up (its connection and scripts are ready).
    expect((await gql(stack.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'before' } }, user.token)).errors).toBeUndefined();
    // Redis frozen (not restarted: a restarted Redis has lost Bee-Queue's scripts, which the
    // producer does not load again): the job is not taken within ENQUEUE_TIMEOUT_MS.
    redis.kill('SIGSTOP');
    const failed = await gql(stack.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'outage' } }, user.token);
    expect(codeOf(failed)).toBe('SERVICE_UNAVAILABLE');
    expect(await stack.credits(user.userId)).toBe(5);
    const ended = (await generationsOfUser(stack, user.userId))[1];
    expect(await stack.tdb.db('idempotency_keys').where({ user_id: user.userId }).select('key')).toEqual([{ key: 'before' }]);

    redis.kill('SIGCONT');
    // Until the queue takes jobs again, each retry fails the same way (and is refunded).
    let retry: { errors?: unknown; data?: { generateImage: { id: string; status: string } } | null } = {};
    await until(async () => {
      retry = await gql(stack.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'outage' } }, user.token);
      return codeOf(retry as Parameters<typeof codeOf>[0]) !== 'SERVICE_UNAVAILABLE';
    }, 'the job queue to take jobs again');
    expect(retry.errors).toBeUndefined();
    const id = retry.data?.generateImage.id;
    expect(id).not.toBe(ended);
    // Now the key holds: the same generation again.
    const again = await gql(stack.baseUrl, KeyedGenerateDoc, { input: { ...INPUT, idempotencyKey: 'outage' } }, user.token);
    expect(again.data?.generateImage.id).toBe(id);
    // Charged once, for the generation that was queued; every one that could not be queued was refunded.
    expect(await stack.credits(user.userId)).toBe(3);
    const rows = (await stack.tdb.db('generations').where({ user_id: user.userId }).select('id', 'status', 'error_code')) as Array<{ id: string; status: string; error_code: string | null }>;
    const before = (await generationsOfUser(stack, user.userId))[0];
    expect(rows.filter((r) => r.status === 'QUEUED').map((r) => r.id).sort()).toEqual([before, id].sort());
    for (const r of rows.filter((x) => x.id !== id && x.id !== before)) expect(r).toMatchObject({ status: 'FAILED', error_code: 'ENQUEUE_FAILED' });
   }, PROCESSES_TEST_MS);
});
