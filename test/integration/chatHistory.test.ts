/**
 * The chat history: a generation that succeeds with a character becomes one exchange of that
 * character's chat (saveChatHistory on low_priority), once however often the job runs.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { saveChatExchange } from '../../src/chat/history';
import { insertGenerationReservingCredits } from '../../src/db/statements';
import type { GenerationInput } from '../../src/generation/input';
import { findGeneration, type GenerationRow } from '../../src/generation/repository';
import { JobProducer, jobsKey, waitingKey } from '../../src/jobs/queues';
import { createLogger } from '../../src/logger';
import type { Worker } from '../../workers/worker';
import { WAIT_MS } from '../helpers/budgets';
import { startStack, type Stack } from '../helpers/stack';
import { events, generate, watch } from './helpers';

const log = createLogger('silent');
const INPUT: GenerationInput = { prompt: 'tea with a dragon', negativePrompt: '', characterName: null, width: 64, height: 64, steps: 3, cfgScale: 7, sampler: 'Euler a', seed: 5, batchSize: 1 };

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

describe('chat history', () => {
  let stack: Stack;
  let producer: JobProducer;
  beforeAll(async () => {
    // This worker leaves low_priority alone: the test starts a worker for it when it wants one.
    stack = await startStack({ env: { WORKER_QUEUES: 'high_priority,normal_priority' } });
    producer = new JobProducer(stack.config, log);
  });
  afterAll(async () => {
    await producer?.close();
    await stack?.close();
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
      const lowWaiting = waitingKey(stack.config, 'low_priority');
      expect(await stack.redis.llen(lowWaiting)).toBe(3);

      const { id } = await generate(stack, user.token, { characterName: 'Finn', steps: 5, width: 64, height: 64 });
      const list = events(await watch(stack.baseUrl, id, user.token).done);
      expect(list.at(-1)).toMatchObject({ status: 'SUCCEEDED' });
      // Its own chat job queues behind the backlog, which has not moved.
      await vi.waitFor(async () => expect(await stack.redis.llen(lowWaiting)).toBe(4), { timeout: WAIT_MS });
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
