/**
 * The chat history: a generation that succeeds with a character becomes one exchange of that
 * character's chat (saveChatHistory on low_priority), once however often the job runs; the caller
 * pages through it (`chatHistory`), sees each character's last exchange (`characters`), and pages
 * through their generations (`generations`); nobody sees another user's.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { saveChatExchange } from '../../src/chat/history';
import { insertGenerationReservingCredits } from '../../src/db/statements';
import { findGeneration, type GenerationRow } from '../../src/generation/repository';
import { JobProducer, jobsKey, waitingKey } from '../../src/jobs/queues';
import { createLogger } from '../../src/logger';
import { createWorker, type Worker } from '../../workers/worker';
import type { GenerationsQuery } from '../gql/graphql';
import { WAIT_MS } from '../helpers/budgets';
import { gql, type GqlResult } from '../helpers/graphql';
import { startStack, type Stack } from '../helpers/stack';
import { CharactersDoc, ChatHistoryDoc, GenerationsDoc } from './documents';
import { events, generate, testInput, watch } from './helpers';

const log = createLogger('silent');
const INPUT = testInput('tea with a dragon');

/** Jobs of `kind` this worker finished, however they ended. */
function jobsRun(worker: Worker, kind: string): number {
  const m = worker.metrics.snapshot().byKind[kind];
  return m ? m.outcomes.succeeded + m.outcomes.failed : 0;
}

/**
 * A generation that ended (SUCCEEDED unless told otherwise) without running, for tests of what is
 * read: inserted with its credits, then given its end at `at` (an SQL timestamp, to the microsecond).
 */
async function endedGeneration(stack: Stack, userId: string, opts: { character?: string; prompt?: string; at?: string; status?: string } = {}): Promise<GenerationRow> {
  const db = stack.tdb.db;
  const input = { ...INPUT, characterName: opts.character ?? null, prompt: opts.prompt ?? INPUT.prompt };
  const row = await insertGenerationReservingCredits(db, { id: crypto.randomUUID(), userId, input });
  const at = opts.at ? db.raw('?::timestamptz', [opts.at]) : db.fn.now();
  await db('generations').where({ id: row!.id }).update({ status: opts.status ?? 'SUCCEEDED', progress: 1, created_at: at, finished_at: at });
  return (await findGeneration(db, row!.id))!;
}

/** Rows of a count(*) query, as a number. */
const counted = async (q: Promise<Array<{ n: string | number }>>): Promise<number> => Number((await q)[0]?.n);

const exchangesOf = (stack: Stack, generationId: string) =>
  counted(stack.tdb.db('chat_exchanges').where({ generation_id: generationId }).count<Array<{ n: string }>>('* as n'));

/** saveChatHistory jobs waiting on low_priority (the owner's images-ready mail waits there too). */
async function chatJobsWaiting(stack: Stack): Promise<number> {
  const ids = await stack.redis.lrange(waitingKey(stack.config, 'low_priority'), 0, -1);
  return ids.filter((id) => id.startsWith('saveChatHistory:')).length;
}

describe('chat history', () => {
  let stack: Stack;
  let producer: JobProducer;
  let lowWorker: Worker | undefined;
  beforeAll(async () => {
    // This worker leaves low_priority alone: the test starts a worker for it when it wants one.
    stack = await startStack({ env: { WORKER_QUEUES: 'high_priority,normal_priority' } });
    producer = new JobProducer(stack.config, log);
  });
  afterAll(async () => {
    await lowWorker?.close();
    await producer?.close();
    await stack?.close();
  });

  it('files a succeeded generation once as an exchange of its character, with its images, however often the job is queued or run', async () => {
    const user = await stack.createUser(5);
    const lowJobs = jobsKey(stack.config, 'low_priority');
    const upload = stack.worker!;
    const { id } = await generate(stack, user.token, { characterName: '  Alice ', batchSize: 2, steps: 3, width: 64, height: 64 });
    const final = events(await watch(stack.baseUrl, id, user.token).done).at(-1)!;
    expect(final).toMatchObject({ status: 'SUCCEEDED' });
    expect(final.images).toHaveLength(2);

    // The upload queued the chat job; nobody consumes low_priority yet, so it waits.
    await vi.waitFor(async () => expect(await stack.redis.hexists(lowJobs, `saveChatHistory:${id}`)).toBe(1), { timeout: WAIT_MS });
    // A re-delivered upload finds the generation SUCCEEDED and queues the follow-up again: refused while one waits.
    await producer.enqueue('uploadToCloud', id, { generationId: id });
    await vi.waitFor(() => expect(jobsRun(upload, 'uploadToCloud')).toBe(2), { timeout: WAIT_MS });
    expect(await chatJobsWaiting(stack)).toBe(1);

    // A worker for low_priority alone: no Stable Diffusion server, no post-processing threads.
    lowWorker = createWorker({ config: stack.config, db: stack.tdb.db, log, storage: stack.storage, queues: ['low_priority'] });
    await lowWorker.start();
    await vi.waitFor(async () => expect(await exchangesOf(stack, id)).toBe(1), { timeout: WAIT_MS });

    const res = await gql(stack.baseUrl, ChatHistoryDoc, { characterName: 'Alice' }, user.token);
    expect(res.errors).toBeUndefined();
    const edges = res.data!.chatHistory.edges;
    expect(edges).toHaveLength(1);
    const row = (await findGeneration(stack.tdb.db, id))!;
    expect(edges[0]!.node).toMatchObject({
      characterName: 'Alice',
      prompt: 'a red fox in snow',
      generationId: id,
      createdAt: row.finished_at!.toISOString(),
      generation: { id, status: 'SUCCEEDED', input: { prompt: 'a red fox in snow', characterName: 'Alice' } },
    });
    // The same images, through the same type, as the generation's own. Each answer signs its URLs
    // afresh (their expiry may differ by a second), so the objects they name are compared.
    const named = (images: Array<{ url: string; thumbnailUrl: string }>) =>
      images.map((i) => ({ ...i, url: new URL(i.url).pathname, thumbnailUrl: new URL(i.thumbnailUrl).pathname }));
    expect(named(edges[0]!.node.images)).toEqual(named(final.images));

    // The job delivered a second time (queued again once the first had ended) saves nothing more.
    await producer.enqueue('saveChatHistory', id, { generationId: id });
    await vi.waitFor(() => expect(jobsRun(lowWorker!, 'saveChatHistory')).toBe(2), { timeout: WAIT_MS });
    expect(await exchangesOf(stack, id)).toBe(1);

    // An upload that died between recording the success and queuing the chat job: its re-delivery queues it.
    await stack.tdb.db('chat_exchanges').where({ generation_id: id }).delete();
    await producer.enqueue('uploadToCloud', id, { generationId: id });
    await vi.waitFor(() => expect(jobsRun(lowWorker!, 'saveChatHistory')).toBe(3), { timeout: WAIT_MS });
    expect(await exchangesOf(stack, id)).toBe(1);
    expect(lowWorker.metrics.snapshot().byKind.saveChatHistory?.outcomes).toMatchObject({ succeeded: 3, failed: 0 });
  });

  it('saves one exchange when the job runs twice at the same time, and none for a generation without a character', async () => {
    const user = await stack.createUser(2);
    const named = await endedGeneration(stack, user.userId, { character: 'Bob' });
    const saved = await Promise.all([saveChatExchange(stack.tdb.db, named), saveChatExchange(stack.tdb.db, named)]);
    expect(saved.filter(Boolean)).toHaveLength(1);
    expect(await exchangesOf(stack, named.id)).toBe(1);

    const uploadsBefore = jobsRun(stack.worker!, 'uploadToCloud');
    const { id } = await generate(stack, user.token, { steps: 3, width: 64, height: 64 });
    expect(events(await watch(stack.baseUrl, id, user.token).done).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    await vi.waitFor(() => expect(jobsRun(stack.worker!, 'uploadToCloud')).toBe(uploadsBefore + 1), { timeout: WAIT_MS });
    expect(await stack.redis.hexists(jobsKey(stack.config, 'low_priority'), `saveChatHistory:${id}`)).toBe(0);
    expect(await exchangesOf(stack, id)).toBe(0);
  });

  /** An answer with its signed URLs' expiry and signature left out. */
  const unsigned = (answer: unknown): unknown => JSON.parse(JSON.stringify(answer).replace(/\?expires=\d+&signature=[^"]*/g, ''));

  it('chatHistory pages newest first with stable cursors, to the microsecond, and bounds `first`', async () => {
    const user = await stack.createUser(10);
    const db = stack.tdb.db;
    // Ends within one millisecond, two of them at the very same time (their order is by id).
    const times = ['2026-03-01 10:00:00.000001+00', '2026-03-01 10:00:00.000002+00', '2026-03-01 10:00:00.000003+00', '2026-03-01 10:00:00.000003+00', '2026-03-01 10:00:00.000900+00', '2026-03-01 10:00:01+00', '2026-03-02 09:00:00+00'];
    for (const [i, at] of times.entries()) {
      const g = await endedGeneration(stack, user.userId, { character: 'Cleo', prompt: `message ${i}`, at });
      // Each exchange's own image, to tell them apart on a page read in one query.
      await db('generated_images').insert({ generation_id: g.id, index: 0, storage_key: `k${i}`, thumbnail_key: `t${i}`, url: `u${i}`, thumbnail_url: `v${i}`, width: 64, height: 64, blurhash: 'x', seed: 1000 + i, sha256: 'h', bytes: 1 });
      await saveChatExchange(db, g);
    }
    const expected = (await db('chat_exchanges').where({ user_id: user.userId }).orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }]).select('id', 'prompt')).map((r: { id: string }) => r.id);
    const page = async (first: number | null, after: string | null) => {
      const res = await gql(stack.baseUrl, ChatHistoryDoc, { characterName: 'Cleo', first, after }, user.token);
      expect(res.errors).toBeUndefined();
      return res.data!.chatHistory;
    };

    const p1 = await page(3, null);
    const p2 = await page(3, p1.pageInfo.endCursor);
    // A newer exchange arriving meanwhile moves nothing on the pages after a cursor.
    const newer = await endedGeneration(stack, user.userId, { character: 'Cleo', prompt: 'newest' });
    await saveChatExchange(db, newer);
    // The image URLs are signed afresh per answer (their expiry may differ by a second): compare the rest.
    expect(unsigned(await page(3, p1.pageInfo.endCursor))).toEqual(unsigned(p2));
    const p3 = await page(3, p2.pageInfo.endCursor);

    expect([p1, p2, p3].map((p) => p.edges.length)).toEqual([3, 3, 1]);
    expect([p1, p2, p3].map((p) => [p.pageInfo.hasNextPage, p.pageInfo.hasPreviousPage])).toEqual([[true, false], [true, true], [false, true]]);
    expect([p1, p2, p3].flatMap((p) => p.edges.map((e) => e.node.id))).toEqual(expected);
    for (const p of [p1, p2, p3]) {
      expect(p.pageInfo.startCursor).toBe(p.edges[0]!.cursor);
      expect(p.pageInfo.endCursor).toBe(p.edges.at(-1)!.cursor);
      for (const e of p.edges) expect(e.node.images.map((i) => i.seed)).toEqual([1000 + Number(e.node.prompt.split(' ')[1])]);
    }
    // Any edge's cursor continues after that edge.
    expect((await page(2, p1.edges[0]!.cursor)).edges.map((e) => e.node.id)).toEqual(expected.slice(1, 3));

    // Without `first`: 20 at most; with 0: no edges, and whether there are any.
    const all = await page(null, null);
    expect(all.edges.map((e) => e.node.prompt)).toEqual(['newest', ...p1.edges.map((e) => e.node.prompt), ...p2.edges.map((e) => e.node.prompt), ...p3.edges.map((e) => e.node.prompt)]);
    expect(await page(0, null)).toMatchObject({ edges: [], pageInfo: { hasNextPage: true, startCursor: null, endCursor: null } });

    const refused = async (variables: { first?: number; after?: string }, message: RegExp) => {
      const res = await gql(stack.baseUrl, ChatHistoryDoc, { characterName: 'Cleo', ...variables }, user.token);
      expect(res.data).toBeNull();
      expect(res.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' } });
      expect(res.errors?.[0]?.message).toMatch(message);
    };
    await refused({ first: stack.config.limits.pageSizeMax + 1 }, /first must be at most 100 \(PAGE_SIZE_MAX\)/);
    await refused({ first: -1 }, /first must not be negative/);
    await refused({ after: 'not-a-cursor' }, /after must be a cursor this list returned/);
    const generationsCursor = (await gql(stack.baseUrl, GenerationsDoc, { first: 1 }, user.token)).data!.generations.pageInfo.endCursor!;
    await refused({ after: generationsCursor }, /after must be a cursor this list returned/);
  });

  it('characters shows each character with its last exchange, newest chat first; other users see none of it', async () => {
    const user = await stack.createUser(5);
    const other = await stack.createUser(1);
    const db = stack.tdb.db;
    const save = async (character: string, prompt: string, at: string) => saveChatExchange(db, await endedGeneration(stack, user.userId, { character, prompt, at }));
    await save('Dora', 'first to Dora', '2026-04-01 10:00:00+00');
    await save('Dora', 'second to Dora', '2026-04-01 12:00:00+00');
    await save('Emil', 'only to Emil', '2026-04-01 11:00:00+00');
    await save('Dora', 'an older one', '2026-04-01 09:00:00+00');

    const res = await gql(stack.baseUrl, CharactersDoc, {}, user.token);
    expect(res.errors).toBeUndefined();
    expect(res.data!.characters.map((c) => [c.name, c.lastExchange.prompt])).toEqual([
      ['Dora', 'second to Dora'],
      ['Emil', 'only to Emil'],
    ]);
    expect(res.data!.characters[0]!.lastExchange.createdAt).toBe('2026-04-01T12:00:00.000Z');

    expect((await gql(stack.baseUrl, CharactersDoc, {}, other.token)).data!.characters).toEqual([]);
    expect((await gql(stack.baseUrl, ChatHistoryDoc, { characterName: 'Dora' }, other.token)).data!.chatHistory.edges).toEqual([]);
    const anonymous = await gql(stack.baseUrl, CharactersDoc, {}, undefined);
    expect(anonymous.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });

  it('generations pages through the caller\'s own generations, newest first, optionally of one status', async () => {
    const user = await stack.createUser(5);
    const other = await stack.createUser(1);
    const made = [
      await endedGeneration(stack, user.userId, { prompt: 'g0', at: '2026-05-01 10:00:00.000001+00', status: 'SUCCEEDED' }),
      await endedGeneration(stack, user.userId, { prompt: 'g1', at: '2026-05-01 10:00:00.000002+00', status: 'FAILED' }),
      await endedGeneration(stack, user.userId, { prompt: 'g2', at: '2026-05-01 10:00:00.000002+00', status: 'SUCCEEDED' }),
      await endedGeneration(stack, user.userId, { prompt: 'g3', at: '2026-05-01 10:00:00.000003+00', status: 'CANCELLED' }),
      await endedGeneration(stack, user.userId, { prompt: 'g4', at: '2026-05-01 11:00:00+00', status: 'SUCCEEDED' }),
    ];
    const theirs = await endedGeneration(stack, other.userId, { prompt: 'not yours' });
    // Newest first; the two made at the same instant in the order of their ids, descending.
    const sameTime = [made[1]!, made[2]!].sort((a, b) => (a.id < b.id ? 1 : -1));
    const expected = [made[4]!, made[3]!, ...sameTime, made[0]!].map((g) => g.id);

    const ids: string[] = [];
    let after: string | null = null;
    for (let pages = 0; ; pages++) {
      const res: GqlResult<GenerationsQuery> = await gql(stack.baseUrl, GenerationsDoc, { first: 2, after }, user.token);
      expect(res.errors).toBeUndefined();
      const conn = res.data!.generations;
      ids.push(...conn.edges.map((e) => e.node.id));
      if (!conn.pageInfo.hasNextPage) {
        expect(pages).toBe(2);
        break;
      }
      after = conn.pageInfo.endCursor;
    }
    expect(ids).toEqual(expected);
    expect(ids).not.toContain(theirs.id);

    const succeeded = await gql(stack.baseUrl, GenerationsDoc, { first: 2, status: 'SUCCEEDED' }, user.token);
    expect(succeeded.data!.generations.edges.map((e) => e.node.input.prompt)).toEqual(['g4', 'g2']);
    expect(succeeded.data!.generations.pageInfo.hasNextPage).toBe(true);
    const rest = await gql(stack.baseUrl, GenerationsDoc, { first: 2, status: 'SUCCEEDED', after: succeeded.data!.generations.pageInfo.endCursor }, user.token);
    expect(rest.data!.generations).toMatchObject({ edges: [{ node: { input: { prompt: 'g0' }, status: 'SUCCEEDED' } }], pageInfo: { hasNextPage: false } });
    const failed = await gql(stack.baseUrl, GenerationsDoc, { status: 'FAILED' }, user.token);
    expect(failed.data!.generations.edges.map((e) => e.node.id)).toEqual([made[1]!.id]);

    const theirList = await gql(stack.baseUrl, GenerationsDoc, {}, other.token);
    expect(theirList.data!.generations.edges.map((e) => e.node.id)).toEqual([theirs.id]);
    expect((await gql(stack.baseUrl, GenerationsDoc, {}, undefined)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });
});

describe('a backlog of slow low_priority jobs', () => {
  let stack: Stack;
  let producer: JobProducer;
  beforeAll(async () => {
    stack = await startStack({ env: { LOW_PRIORITY_CONCURRENCY: '2' } });
    producer = new JobProducer(stack.config, log);
  });
  afterAll(async () => {
    await producer?.close();
    await stack?.close();
  });

  it('does not delay a generation: it succeeds while every low_priority slot is stuck and jobs wait behind them', async () => {
    const user = await stack.createUser(10);
    const db = stack.tdb.db;
    const backlog = await Promise.all(Array.from({ length: 5 }, (_, i) => endedGeneration(stack, user.userId, { character: 'Finn', prompt: `backlog ${i}` })));
    // Every chat job hangs on this lock until the test lets go: as slow as a job can be.
    const lock = await db.transaction();
    try {
      await lock.raw('LOCK TABLE chat_exchanges IN ACCESS EXCLUSIVE MODE');
      for (const g of backlog) await producer.enqueue('saveChatHistory', g.id, { generationId: g.id });
      const stuck = async () =>
        Number((await db.raw<{ rows: Array<{ n: string }> }>(
          `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%chat_exchanges%'`,
        )).rows[0]!.n);
      await vi.waitFor(async () => expect(await stuck()).toBe(2), { timeout: WAIT_MS });
      expect(await chatJobsWaiting(stack)).toBe(3);

      const { id } = await generate(stack, user.token, { characterName: 'Finn', steps: 5, width: 64, height: 64 });
      const list = events(await watch(stack.baseUrl, id, user.token).done);
      expect(list.at(-1)).toMatchObject({ status: 'SUCCEEDED' });
      // Its own chat job queues behind the backlog, which has not moved.
      await vi.waitFor(async () => expect(await chatJobsWaiting(stack)).toBe(4), { timeout: WAIT_MS });
      expect(await stuck()).toBe(2);
      expect(await counted(lock('chat_exchanges').count<Array<{ n: string }>>('* as n'))).toBe(0);
    } finally {
      await lock.rollback();
    }
    // Once the lock is gone, the backlog and the generation are all saved.
    await vi.waitFor(
      async () => expect(await counted(db('chat_exchanges').where({ user_id: user.userId }).count<Array<{ n: string }>>('* as n'))).toBe(6),
      { timeout: WAIT_MS },
    );
  });
});
