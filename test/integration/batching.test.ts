/**
 * Per-request batching of lookups (src/schema/loaders.ts): the aliases and list items of one
 * operation cost one query (or one Redis call) per kind, however many there are, and answer the
 * same as the lookups one by one. Counted on real parts: every statement knex sends (its 'query'
 * event) and every command the API sends Redis under this stack's prefix (MONITOR; commands a
 * script runs inside Redis are not round trips and are left out).
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserWithToken } from '../../src/auth/tokens';
import { saveChatExchange } from '../../src/chat/history';
import { insertGenerationReservingCredits } from '../../src/db/statements';
import { findGeneration } from '../../src/generation/repository';
import { ProgressPublisher } from '../../src/progress/publisher';
import { startStack, type Stack } from '../helpers/stack';
import { testInput } from './helpers';

interface Answer {
  data?: Record<string, unknown> | null;
  errors?: Array<{ message: string; path?: unknown[]; extensions?: { code?: string } }>;
}

interface Node {
  id: string;
  status: string;
  progress: number;
  images: Array<{ url: string }>;
  owner: { email: string };
  current: { queuePosition: number | null };
}

describe('per-request batching of lookups', () => {
  let stack: Stack;
  let monitor: Redis;
  /** SQL statements knex sent while `counting`. */
  let sql: string[] = [];
  /** Redis commands (name and first key) the API sent under this stack's prefix while `counting`. */
  let redisCommands: string[] = [];
  let counting = false;

  beforeAll(async () => {
    stack = await startStack({
      worker: false,
      // The fixtures create generations faster and in greater number than a user may by default.
      env: { RATE_LIMIT_GENERATIONS_PER_MINUTE: '0', MAX_UNFINISHED_GENERATIONS_PER_USER: '0' },
    });
    stack.tdb.db.on('query', (q: { sql: string }) => {
      if (counting) sql.push(q.sql);
    });
    const prefix = stack.config.redis.prefix;
    monitor = await stack.redis.monitor();
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      if (counting && source !== 'lua' && args.some((a) => a.includes(prefix))) redisCommands.push(`${args[0]} ${args[1]}`);
    });
  });
  afterAll(async () => {
    monitor?.disconnect();
    await stack?.close();
  });

  const post = async (query: string, token: string, variables: Record<string, unknown> = {}): Promise<Answer> => {
    const res = await fetch(`${stack.baseUrl}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
    });
    return (await res.json()) as Answer;
  };

  /**
   * Sends a marker and waits until MONITOR reports it. MONITOR reports commands in the order Redis
   * ran them, but late: once the marker is seen, every line of what ran before it has been seen too.
   */
  const monitorCaughtUp = async (): Promise<string> => {
    const marker = `${stack.config.redis.prefix}:marker:${randomUUID()}`;
    const seen = new Promise<void>((resolve) => {
      const onLine = (_t: string, args: string[]) => {
        if (args[1] === marker) {
          monitor.off('monitor', onLine);
          resolve();
        }
      };
      monitor.on('monitor', onLine);
    });
    await stack.redis.exists(marker);
    await seen;
    return marker;
  };

  /** Runs one request and returns its answer with the SQL and Redis commands it caused. */
  const counted = async (query: string, token: string, variables: Record<string, unknown> = {}) => {
    // The lines of earlier requests (a busy machine reports them late) are not this one's.
    await monitorCaughtUp();
    sql = [];
    redisCommands = [];
    counting = true;
    const answer = await post(query, token, variables);
    const marker = await monitorCaughtUp();
    counting = false;
    return { answer, sql: [...sql], redis: redisCommands.filter((c) => !c.includes(marker)) };
  };

  /** A user whose token is cached by the API and whose last use is written, so no request counts auth. */
  const readyUser = async (credits: number, isAdmin = false) => {
    const user = await createUserWithToken(stack.tdb.db, { email: `u${randomUUID().slice(0, 8)}@example.com`, credits, isAdmin });
    expect((await post('{ me { id } }', user.token)).errors).toBeUndefined();
    await expect
      .poll(async () => (await stack.tdb.db('api_tokens').where({ user_id: user.userId }).first('last_used_at'))?.last_used_at ?? null)
      .not.toBeNull();
    return user;
  };

  const GENERATE = `mutation($input: GenerateImageInput!) { generateImage(input: $input) { id } }`;
  const INPUT = { prompt: 'a lighthouse at dusk', width: 64, height: 64, steps: 3 };

  /**
   * `n` generations of a new user, queued through the API (so their jobs wait in the queue), then
   * every fifth made SUCCEEDED with an image in Postgres, and every fifth but one given a live
   * GENERATING snapshot in Redis; the rest stay QUEUED with no snapshot (read from Postgres, with
   * their place in the queue). Returns the user and what each generation must answer, newest first.
   */
  const generationsOf = async (n: number) => {
    const user = await readyUser(n);
    const publisher = new ProgressPublisher(stack.redis, stack.config.redis.prefix, 600);
    const expected: Array<Omit<Node, 'images'> & { imageKeys: string[] }> = [];
    for (let i = 0; i < n; i++) {
      const answer = await post(GENERATE, user.token, { input: INPUT });
      expect(answer.errors).toBeUndefined();
      const id = (answer.data?.generateImage as { id: string }).id;
      const waiting = await stack.redis.llen(`${stack.config.redis.prefix}:high_priority:waiting`);
      const owner = { email: (await stack.tdb.db('users').where({ id: user.userId }).first('email')).email as string };
      if (i % 5 === 0) {
        const key = `generations/${id}/0.webp`;
        await stack.tdb.db('generations').where({ id }).update({ status: 'SUCCEEDED', progress: 1, finished_at: stack.tdb.db.fn.now() });
        await stack.tdb.db('generated_images').insert({
          generation_id: id, index: 0, storage_key: key, thumbnail_key: `generations/${id}/0.thumb.webp`,
          width: 64, height: 64, blurhash: 'LEHV6nWB2yk8pyo0adR*.7kCMdnj', seed: i, sha256: 'x'.repeat(64), bytes: 100,
        });
        expected.push({ id, status: 'SUCCEEDED', progress: 1, imageKeys: [key], owner, current: { queuePosition: null } });
      } else if (i % 5 === 1) {
        await publisher.publish({
          generationId: id, status: 'GENERATING', progress: 0.5, step: 1, totalSteps: 3, etaSeconds: 1,
          queuePosition: null, preview: null, attempt: 1, error: null, images: [],
        });
        expected.push({ id, status: 'GENERATING', progress: 0.5, imageKeys: [], owner, current: { queuePosition: null } });
      } else {
        // Bee-Queue pushes on the left and takes from the right: the newest job is last in line.
        expected.push({ id, status: 'QUEUED', progress: 0, imageKeys: [], owner, current: { queuePosition: waiting } });
      }
    }
    return { user, expected: expected.reverse() };
  };

  const LIST = `query($first: Int) { generations(first: $first) { edges { node {
    id status progress images { url } owner { email } current { queuePosition }
  } } } }`;
  const ONE = `query($id: ID!) { generation(id: $id) { id status progress images { url } owner { email } current { queuePosition } } }`;
  /** A node as expected: its images' URLs point at their storage keys (the signature changes per answer). */
  const shape = (nodes: Node[]) =>
    nodes.map(({ images, ...rest }) => ({ ...rest, imageKeys: images.map((i) => new URL(i.url).pathname.replace(/^\/files\//, '')) }));
  const nodesOf = (answer: Answer) => ((answer.data?.generations as { edges: Array<{ node: Node }> }).edges).map((e) => e.node);

  it('reads a list of 5 or 50 generations with the same number of queries and Redis calls, answering as one by one', async () => {
    const few = await generationsOf(5);
    const many = await generationsOf(50);
    // Loads the Redis scripts (a script's first use on a connection is an EVAL, then EVALSHA).
    expect((await post(LIST, few.user.token, { first: 50 })).errors).toBeUndefined();

    const small = await counted(LIST, few.user.token, { first: 50 });
    const large = await counted(LIST, many.user.token, { first: 50 });
    for (const [run, fixture] of [[small, few], [large, many]] as const) {
      expect(run.answer.errors).toBeUndefined();
      expect(shape(nodesOf(run.answer))).toEqual(fixture.expected);
    }
    // The page, the rows of the generations without a snapshot, their images, the owners.
    expect(large.sql).toHaveLength(4);
    expect(large.sql).toHaveLength(small.sql.length);
    // The snapshots, the queued ones' places.
    expect(large.redis).toEqual(small.redis);
    expect(large.redis).toHaveLength(2);

    // The same answers as each generation asked for on its own.
    const single = await Promise.all(few.expected.map(async (g) => (await post(ONE, few.user.token, { id: g.id })).data?.generation as Node));
    expect(shape(single)).toEqual(few.expected);
  });

  it('answers 15 aliases of me { photoCredits email } with one credits query, and each account field with one query', async () => {
    const user = await readyUser(7);
    const email = (await stack.tdb.db('users').where({ id: user.userId }).first('email')).email as string;
    const aliases = Array.from({ length: 15 }, (_, i) => `m${i}: me { photoCredits email }`).join(' ');
    const credits = await counted(`{ ${aliases} }`, user.token);
    expect(credits.answer.errors).toBeUndefined();
    expect(Object.values(credits.answer.data!)).toEqual(Array.from({ length: 15 }, () => ({ photoCredits: 7, email })));
    expect(credits.sql).toHaveLength(1);
    expect(credits.sql[0]).toMatch(/photo_credits/);

    const fields = 'photoCredits emailVerified notificationSettings { imagesReady } apiTokens { name } webhookSettings { url secretSet }';
    const all = await counted(`{ ${Array.from({ length: 15 }, (_, i) => `m${i}: me { ${fields} }`).join(' ')} }`, user.token);
    expect(all.answer.errors).toBeUndefined();
    const account = { photoCredits: 7, emailVerified: true, notificationSettings: { imagesReady: true }, apiTokens: [{ name: 'default' }], webhookSettings: { url: null, secretSet: false } };
    expect(Object.values(all.answer.data!)).toEqual(Array.from({ length: 15 }, () => account));
    // One per kind: credits, verified, notifications, API tokens, webhook settings.
    expect(all.sql).toHaveLength(5);
  });

  it('reads the generations of a page of chat exchanges together', async () => {
    const exchangesOf = async (n: number) => {
      const user = await readyUser(n);
      for (let i = 0; i < n; i++) {
        const row = await insertGenerationReservingCredits(stack.tdb.db, { id: randomUUID(), userId: user.userId, input: testInput(`tea ${i}`, { characterName: 'Alice' }) });
        await stack.tdb.db('generations').where({ id: row!.id }).update({ status: 'SUCCEEDED', progress: 1, finished_at: stack.tdb.db.fn.now() });
        await saveChatExchange(stack.tdb.db, (await findGeneration(stack.tdb.db, row!.id))!);
      }
      return user;
    };
    const HISTORY = `{ chatHistory(characterName: "Alice", first: 20) { edges { node { prompt generation { id status input { prompt } } } } } }`;
    const [two, ten] = [await exchangesOf(2), await exchangesOf(10)];
    const small = await counted(HISTORY, two.token);
    const large = await counted(HISTORY, ten.token);
    type Edges = { chatHistory: { edges: Array<{ node: { prompt: string; generation: { status: string; input: { prompt: string } } } }> } };
    const edges = (large.answer.data as Edges).chatHistory.edges;
    expect(edges).toHaveLength(10);
    for (const { node } of edges) expect(node.generation).toMatchObject({ status: 'SUCCEEDED', input: { prompt: node.prompt } });
    expect(large.sql).toHaveLength(small.sql.length);
  });

  it('reads the webhook tries of aliased generations together, and still refuses one the caller may not see', async () => {
    const user = await readyUser(10);
    const other = await readyUser(1);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(((await post(GENERATE, user.token, { input: INPUT })).data?.generateImage as { id: string }).id);
    const theirs = ((await post(GENERATE, other.token, { input: INPUT })).data?.generateImage as { id: string }).id;
    const query = (list: string[]) => `{ ${list.map((id, i) => `d${i}: webhookDeliveries(generationId: "${id}") { id }`).join(' ')} }`;
    const one = await counted(query(ids.slice(0, 1)), user.token);
    const four = await counted(query(ids), user.token);
    expect(four.answer).toEqual({ data: { d0: [], d1: [], d2: [], d3: [] } });
    expect(four.sql).toHaveLength(one.sql.length);
    const mixed = await post(query([ids[0]!, theirs]), user.token);
    expect(mixed.data).toEqual(null);
    expect(mixed.errors?.map((e) => [e.path, e.extensions?.code])).toEqual([[['d1'], 'NOT_FOUND']]);
  });

  it('shows a mutation its own change: each aliased generateImage sees the credits it took, each grant what it gave', async () => {
    const user = await readyUser(10);
    const twice = await post(
      `mutation($input: GenerateImageInput!) {
        a: generateImage(input: $input) { owner { photoCredits } }
        b: generateImage(input: $input) { owner { photoCredits } }
      }`,
      user.token,
      { input: INPUT },
    );
    expect(twice).toEqual({ data: { a: { owner: { photoCredits: 9 } }, b: { owner: { photoCredits: 8 } } } });

    const admin = await readyUser(3, true);
    const grants = await post(
      `mutation($id: ID!) {
        a: grantPhotoCredits(userId: $id, amount: 5, reason: "test") { photoCredits }
        b: grantPhotoCredits(userId: $id, amount: 5, reason: "test") { photoCredits }
      }`,
      admin.token,
      { id: admin.userId },
    );
    expect(grants).toEqual({ data: { a: { photoCredits: 8 }, b: { photoCredits: 13 } } });
  });
});
