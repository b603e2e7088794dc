/**
 * Start deadlines over real parts: a generation that has not started by its startDeadlineSeconds
 * ends CANCELLED with DEADLINE_EXCEEDED and its credits back, without reaching the SD server, both
 * when no worker runs at all (the API processes' sweep ends it) and when the worker's only slot is
 * held by a generation whose SD sampling is paused (the worker checks before it starts it).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { graphql } from '../gql';
import { codeOf, gql } from '../helpers/graphql';
import { PROCESSES_TEST_MS } from '../helpers/budgets';
import { startStack, type Stack } from '../helpers/stack';
import { until } from '../helpers/wait';
import { events, expectWellFormedStream, watch } from '../integration/helpers';

const DeadlineGenerateDoc = graphql(`
  mutation DeadlineGenerate($input: GenerateImageInput!) {
    generateImage(input: $input) { id status startDeadlineAt createdAt }
  }
`);

const DeadlineGenerationDoc = graphql(`
  query DeadlineGeneration($id: ID!) {
    generation(id: $id) { id status attempts startedAt error { code message retryable } }
  }
`);

const INPUT = { prompt: 'a lighthouse at dusk', steps: 4, width: 64, height: 64 };

/** Creates a generation through `baseUrl` and returns its id. */
async function submit(baseUrl: string, token: string, input: Record<string, unknown>): Promise<string> {
  const r = await gql(baseUrl, DeadlineGenerateDoc, { input: { ...INPUT, ...input } }, token);
  expect(r.errors, JSON.stringify(r.errors)).toBeUndefined();
  return r.data!.generateImage.id;
}

/** The stream of a generation to its end, checked well-formed; its last event. */
async function finalEvent(stack: Stack, baseUrl: string, id: string, token: string) {
  const list = events(await watch(baseUrl, id, token).done);
  expectWellFormedStream(list, id);
  return list[list.length - 1]!;
}

describe('start deadline, with no worker running', () => {
  let stack: Stack;
  const stops: Array<() => Promise<void>> = [];
  beforeAll(async () => {
    // Short sweeps, inherited by the spawned APIs; no worker at all.
    stack = await startStack({ worker: false, env: { START_DEADLINE_SWEEP_MS: '100', RATE_LIMIT_GENERATIONS_PER_MINUTE: '0' } });
  }, PROCESSES_TEST_MS);
  afterAll(async () => {
    await Promise.all(stops.map((s) => s()));
    await stack?.close();
  });

  it('ends CANCELLED with DEADLINE_EXCEEDED, credits back, the SD server never called', async () => {
    const user = await stack.createUser(5);
    const noDeadline = await submit(stack.baseUrl, user.token, {});
    const id = await submit(stack.baseUrl, user.token, { startDeadlineSeconds: 1, batchSize: 2 });
    // Watched from the start when the machine is quick enough (the first event is QUEUED then); on a
    // slow one the deadline may pass first, and the stream opens on the final state.
    const watcher = watch(stack.baseUrl, id, user.token);

    const list = events(await watcher.done);
    expectWellFormedStream(list, id);
    const last = list[list.length - 1]!;
    expect(last).toMatchObject({ status: 'CANCELLED', error: { code: 'DEADLINE_EXCEEDED', retryable: true } });
    expect(last.error?.message).toMatch(/did not start within its startDeadlineSeconds/);
    const q = await gql(stack.baseUrl, DeadlineGenerationDoc, { id }, user.token);
    expect(q.data?.generation).toMatchObject({ status: 'CANCELLED', attempts: 0, startedAt: null, error: { code: 'DEADLINE_EXCEEDED' } });
    // Refunded once: a refund row beside the charge, and the balance back.
    expect(await stack.credits(user.userId)).toBe(4);
    const rows = await stack.tdb.db('credit_ledger').where({ generation_id: id }).orderBy('id').select('kind', 'amount');
    expect(rows).toEqual([
      { kind: 'charge', amount: -2 },
      { kind: 'refund', amount: 2 },
    ]);
    // The one without a deadline waits on; nothing reached the GPU.
    expect((await gql(stack.baseUrl, DeadlineGenerationDoc, { id: noDeadline }, user.token)).data?.generation?.status).toBe('QUEUED');
    expect(stack.sim.stats.txt2imgCalls).toBe(0);
  });

  it('three API processes sweeping at once refund each overdue generation exactly once', async () => {
    const spawned = await Promise.all([stack.spawnApi(), stack.spawnApi()]);
    stops.push(...spawned.map((s) => s.stop));
    const user = await stack.createUser(20);
    const bases = [stack.baseUrl, ...spawned.map((s) => s.baseUrl)];
    const ids = await Promise.all(Array.from({ length: 9 }, (_, i) => submit(bases[i % 3]!, user.token, { startDeadlineSeconds: 1 })));
    // Each charged (the sweeps may already be giving some back).
    expect(await stack.tdb.db('credit_ledger').whereIn('generation_id', ids).where({ kind: 'charge' }).select('generation_id')).toHaveLength(9);
    // Each watched on another process than the one that created it.
    const finals = await Promise.all(ids.map((id, i) => finalEvent(stack, bases[(i + 1) % 3]!, id, user.token)));
    for (const f of finals) expect(f).toMatchObject({ status: 'CANCELLED', error: { code: 'DEADLINE_EXCEEDED' } });
    await until(async () => (await stack.credits(user.userId)) === 20, 'every refund');
    const refunds = await stack.tdb.db('credit_ledger').whereIn('generation_id', ids).where({ kind: 'refund' }).select('generation_id');
    expect(refunds.map((r: { generation_id: string }) => r.generation_id).sort()).toEqual([...ids].sort());
    expect(stack.sim.stats.txt2imgCalls).toBe(0);
  }, PROCESSES_TEST_MS);

  it('refuses a deadline that is not a positive whole number of seconds up to START_DEADLINE_MAX_S', async () => {
    const user = await stack.createUser(5);
    for (const bad of [0, -5, 86_401]) {
      const r = await gql(stack.baseUrl, DeadlineGenerateDoc, { input: { ...INPUT, startDeadlineSeconds: bad } }, user.token);
      expect(codeOf(r), String(bad)).toBe('BAD_USER_INPUT');
      expect(r.errors?.[0]?.message).toMatch(/startDeadlineSeconds must be/);
    }
    expect(await stack.credits(user.userId)).toBe(5);
    // The largest allowed is taken, and its deadline is shown.
    const r = await gql(stack.baseUrl, DeadlineGenerateDoc, { input: { ...INPUT, startDeadlineSeconds: 86_400 } }, user.token);
    expect(r.errors).toBeUndefined();
    const g = r.data!.generateImage;
    expect(Date.parse(g.startDeadlineAt!) - Date.parse(g.createdAt)).toBe(86_400_000);
  });
});

describe('start deadline, with a worker whose only slot waits on a paused SD server', () => {
  let stack: Stack;
  beforeAll(async () => {
    // One generation slot; this stack's API does not sweep, so only the worker's own check can end
    // the overdue generation (the second test adds an API that sweeps).
    stack = await startStack({ env: { WORKER_CONCURRENCY: '1', START_DEADLINE_SWEEP_MS: '0' }, simulator: { stepMs: 5 } });
  }, PROCESSES_TEST_MS);
  afterAll(async () => {
    stack?.sim.resume();
    await stack?.close();
  });

  /** A generation without a deadline that holds the worker's only slot at the paused SD server. */
  async function holdTheSlot(token: string): Promise<string> {
    stack.sim.pause();
    const calls = stack.sim.stats.txt2imgCalls;
    const id = await submit(stack.baseUrl, token, { steps: 8 });
    await until(() => stack.sim.stats.txt2imgCalls === calls + 1, 'the first generation to reach the SD server');
    return id;
  }

  const overdue = async (id: string) =>
    (await stack.tdb.db.raw<{ rows: Array<{ overdue: boolean }> }>('SELECT start_deadline_at <= now() AS overdue FROM generations WHERE id = ?', [id])).rows[0]?.overdue === true;

  it('the worker cancels it before it starts it: DEADLINE_EXCEEDED, credits back, SD never called for it', async () => {
    const user = await stack.createUser(5);
    const holder = await holdTheSlot(user.token);
    const late = await submit(stack.baseUrl, user.token, { startDeadlineSeconds: 1 });
    const watcher = watch(stack.baseUrl, late, user.token);
    await until(() => overdue(late), 'the deadline to pass (by the database clock)');
    // Nothing sweeps here: still queued behind the held slot.
    expect((await gql(stack.baseUrl, DeadlineGenerationDoc, { id: late }, user.token)).data?.generation?.status).toBe('QUEUED');
    const callsBefore = stack.sim.stats.txt2imgCalls;
    stack.sim.resume();
    const list = events(await watcher.done);
    expectWellFormedStream(list, late);
    expect(list[list.length - 1]).toMatchObject({ status: 'CANCELLED', error: { code: 'DEADLINE_EXCEEDED' } });
    expect(list.map((e) => e.status)).not.toContain('STARTED');
    expect(await finalEvent(stack, stack.baseUrl, holder, user.token)).toMatchObject({ status: 'SUCCEEDED' });
    // The worker took the late job (its record is gone from the waiting list) and never called SD for it.
    await until(async () => (await stack.redis.llen(`${stack.env.REDIS_PREFIX}:high_priority:waiting`)) === 0, 'the late job to be taken');
    expect(stack.sim.stats.txt2imgCalls).toBe(callsBefore);
    const row = await stack.tdb.db('generations').where({ id: late }).first('attempts', 'started_at');
    expect(row).toEqual({ attempts: 0, started_at: null });
    expect(await stack.credits(user.userId)).toBe(4);
  }, PROCESSES_TEST_MS);

  it('an API that sweeps ends it while the slot is still held', async () => {
    const user = await stack.createUser(5);
    const holder = await holdTheSlot(user.token);
    const late = await submit(stack.baseUrl, user.token, { startDeadlineSeconds: 1 });
    const callsBefore = stack.sim.stats.txt2imgCalls;
    const sweeping = await stack.startApi({ START_DEADLINE_SWEEP_MS: '100' });
    expect(await finalEvent(stack, sweeping.baseUrl, late, user.token)).toMatchObject({ status: 'CANCELLED', error: { code: 'DEADLINE_EXCEEDED' } });
    expect(await stack.credits(user.userId)).toBe(4);
    // The holder is still paused mid-sampling: the late one ended without waiting for the slot.
    expect((await gql(stack.baseUrl, DeadlineGenerationDoc, { id: holder }, user.token)).data?.generation?.status).toMatch(/STARTED|GENERATING/);
    stack.sim.resume();
    expect(await finalEvent(stack, stack.baseUrl, holder, user.token)).toMatchObject({ status: 'SUCCEEDED' });
    await until(async () => (await stack.redis.llen(`${stack.env.REDIS_PREFIX}:high_priority:waiting`)) === 0, 'the late job to be taken');
    expect(stack.sim.stats.txt2imgCalls).toBe(callsBefore);
    expect(await stack.credits(user.userId)).toBe(4);
  }, PROCESSES_TEST_MS);
});
