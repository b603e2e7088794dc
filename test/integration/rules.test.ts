import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { WAIT_MS } from '../helpers/budgets';
import { gql } from '../helpers/graphql';
import { startStack, type Stack } from '../helpers/stack';
import { CancelDoc, GenerateDoc, GenerationDoc } from './documents';
import { events, expectWellFormedStream, generate, watch } from './helpers';

async function generationCount(stack: Stack, userId: string): Promise<number> {
  const row = await stack.tdb.db('generations').where({ user_id: userId }).count<Array<{ count: string }>>('* as count');
  return Number(row[0]?.count ?? 0);
}

describe('input, credits and failures', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { TASK_MAX_RETRIES: '1', TASK_RETRY_DELAY_S: '0.05' } });
  });
  afterAll(async () => stack?.close());

  const BAD_INPUTS: Array<[string, Record<string, unknown>, RegExp]> = [
    ['an empty prompt', { prompt: '   ' }, /prompt must not be empty/],
    ['a prompt over the limit', { prompt: 'x'.repeat(2001) }, /prompt must be at most 2000/],
    ['a width that is not a multiple of 8', { width: 513 }, /width must be a multiple of 8/],
    ['a height above the maximum', { height: 4096 }, /height must be at most 2048/],
    ['too many pixels', { width: 2048, height: 2048, batchSize: 2 }, /pixels/],
    ['zero steps', { steps: 0 }, /steps must be at least 1/],
    ['too many steps', { steps: 151 }, /steps must be at most 150/],
    ['a cfgScale out of range', { cfgScale: 31 }, /cfgScale must be at most 30/],
    ['an unknown sampler', { sampler: 'Nope 9000' }, /sampler "Nope 9000" is not offered/],
    ['a seed past 4294967295', { seed: 4294967296 }, /seed must be -1/],
    ['a seed below -1', { seed: -2 }, /seed must be -1/],
    ['a batch that is too big', { batchSize: 5 }, /batchSize must be at most 4/],
  ];

  it.each(BAD_INPUTS)('refuses %s with BAD_USER_INPUT and writes nothing', async (_name, input, message) => {
    const user = await stack.createUser(10);
    const res = await gql(stack.baseUrl, GenerateDoc, { input: { prompt: 'ok', ...input } as { prompt: string } }, user.token);
    expect(res.data).toBeNull();
    expect(res.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(res.errors?.[0]?.message).toMatch(message);
    expect(await generationCount(stack, user.userId)).toBe(0);
    expect(await stack.credits(user.userId)).toBe(10);
  });

  it('accepts the largest seed and keeps it exact', async () => {
    const user = await stack.createUser(1);
    const { id, result } = await generate(stack, user.token, { seed: 4294967295, steps: 3, width: 64, height: 64 });
    expect(result.data?.generateImage.input.seed).toBe(4294967295);
    const list = events(await watch(stack.baseUrl, id, user.token).done);
    expect(list[list.length - 1]!.images[0]?.seed).toBe(4294967295);
  });

  it('refuses a generation the user cannot pay for, with INSUFFICIENT_CREDITS and nothing written', async () => {
    const user = await stack.createUser(1);
    const res = await gql(stack.baseUrl, GenerateDoc, { input: { prompt: 'two cats', batchSize: 2 } }, user.token);
    expect(res.errors?.[0]?.extensions?.code).toBe('INSUFFICIENT_CREDITS');
    expect(await stack.credits(user.userId)).toBe(1);
    expect(await generationCount(stack, user.userId)).toBe(0);
  });

  it('never lets concurrent requests spend more credits than the user has', async () => {
    const user = await stack.createUser(3);
    const results = await Promise.all(
      Array.from({ length: 8 }, () => gql(stack.baseUrl, GenerateDoc, { input: { prompt: 'race', steps: 2, width: 64, height: 64 } }, user.token)),
    );
    const ok = results.filter((r) => r.data?.generateImage);
    const refused = results.filter((r) => r.errors?.[0]?.extensions?.code === 'INSUFFICIENT_CREDITS');
    expect(ok).toHaveLength(3);
    expect(refused).toHaveLength(5);
    expect(await stack.credits(user.userId)).toBe(0);
    await Promise.all(ok.map((r) => watch(stack.baseUrl, r.data!.generateImage.id, user.token).done));
  });

  it('a failing SD server ends the generation FAILED after its retries, with the credits back exactly once', async () => {
    const user = await stack.createUser(4);
    stack.sim.failNext('http500', 2);
    const { id } = await generate(stack, user.token, { batchSize: 2, steps: 5 });
    expect(await stack.credits(user.userId)).toBe(2);
    const list = events(await watch(stack.baseUrl, id, user.token).done);
    expectWellFormedStream(list, id);
    expect(list.some((e) => e.status === 'RETRYING' && e.error?.code === 'SD_SERVER_ERROR' && e.error.retryable)).toBe(true);
    const last = list[list.length - 1]!;
    expect(last.status).toBe('FAILED');
    expect(last.error).toMatchObject({ code: 'SD_SERVER_ERROR', retryable: true });
    expect(last.error?.message).toMatch(/CUDA out of memory/);
    expect(last.attempt).toBe(2);
    expect(await stack.credits(user.userId)).toBe(4);

    // Failing it again (a re-delivered job, a late cancel) changes nothing: the refund happened once.
    const cancel = await gql(stack.baseUrl, CancelDoc, { id }, user.token);
    expect(cancel.data?.cancelGeneration.status).toBe('FAILED');
    expect(await stack.credits(user.userId)).toBe(4);
    const row = await stack.tdb.db('generations').where({ id }).first();
    expect(row.refunded_at).not.toBeNull();
  });

  it('a request the SD server rejects fails at once, without retries', async () => {
    const user = await stack.createUser(1);
    stack.sim.failNext('bad-request', 1);
    const { id } = await generate(stack, user.token, { steps: 5 });
    const list = events(await watch(stack.baseUrl, id, user.token).done);
    expect(list.some((e) => e.status === 'RETRYING')).toBe(false);
    expect(list[list.length - 1]).toMatchObject({ status: 'FAILED', attempt: 1, error: { code: 'SD_BAD_REQUEST', retryable: false } });
    expect(await stack.credits(user.userId)).toBe(1);
  });

  it('a malformed answer from SD is retried, and the retry can succeed', async () => {
    const user = await stack.createUser(1);
    stack.sim.failNext('malformed', 1);
    const { id } = await generate(stack, user.token, { steps: 5 });
    const list = events(await watch(stack.baseUrl, id, user.token).done);
    expectWellFormedStream(list, id);
    expect(list.some((e) => e.status === 'RETRYING' && e.error?.code === 'SD_BAD_RESPONSE')).toBe(true);
    expect(list[list.length - 1]).toMatchObject({ status: 'SUCCEEDED', attempt: 2 });
    expect(await stack.credits(user.userId)).toBe(0);
  });

  it('two concurrent generations on the one-at-a-time server both finish, each with its own progress', async () => {
    const user = await stack.createUser(2);
    stack.sim.setStepMs(15);
    const a = await generate(stack, user.token, { prompt: 'first: a mountain', steps: 25, seed: 1 });
    const b = await generate(stack, user.token, { prompt: 'second: a river', steps: 25, seed: 2 });
    const [la, lb] = await Promise.all([watch(stack.baseUrl, a.id, user.token).done, watch(stack.baseUrl, b.id, user.token).done]);
    stack.sim.setStepMs(5);
    const ea = events(la);
    const eb = events(lb);
    expectWellFormedStream(ea, a.id);
    expectWellFormedStream(eb, b.id);
    expect(ea[ea.length - 1]!.status).toBe('SUCCEEDED');
    expect(eb[eb.length - 1]!.status).toBe('SUCCEEDED');
    expect(stack.sim.stats.maxConcurrentRunning).toBe(1);
    // The worker has two slots, the server one: one of the two waited at the server, and said so.
    const waited = [...ea, ...eb].filter((e) => e.status === 'STARTED' && e.queuePosition != null);
    expect(waited.length).toBeGreaterThan(0);
    expect(ea[ea.length - 1]!.images[0]!.url).not.toBe(eb[eb.length - 1]!.images[0]!.url);
    const [ia, ib] = await Promise.all(
      [ea, eb].map(async (l) => Buffer.from(await (await fetch(l[l.length - 1]!.images[0]!.url)).arrayBuffer())),
    );
    expect(ia!.equals(ib!)).toBe(false);
  });
});

describe('cancelling', () => {
  let stack: Stack;
  beforeAll(async () => {
    // One slot: while it is busy, the next generation really waits in the queue.
    stack = await startStack({ env: { WORKER_CONCURRENCY: '1' } });
  });
  afterAll(async () => stack?.close());

  it('a queued generation never reaches the GPU; a running one is let go at once; both get their credits back', async () => {
    const blocker = await stack.createUser(1);
    stack.sim.failNext('hang', 1);
    const block = await generate(stack, blocker.token, { steps: 5 });
    const blockSub = watch(stack.baseUrl, block.id, blocker.token);
    await blockSub.waitFor((r) => r.data?.generationProgress.status === 'STARTED');
    // STARTED is published just before the worker calls txt2img: wait until the server has the call.
    await vi.waitFor(() => expect(stack.sim.stats.txt2imgCalls).toBe(1), { timeout: WAIT_MS });
    const callsBefore = stack.sim.stats.txt2imgCalls;

    const user = await stack.createUser(1);
    const { id } = await generate(stack, user.token, { steps: 5 });
    const sub = watch(stack.baseUrl, id, user.token);
    const first = await sub.waitFor(() => true);
    expect(first.data?.generationProgress).toMatchObject({ status: 'QUEUED', queuePosition: 1 });
    const res = await gql(stack.baseUrl, CancelDoc, { id }, user.token);
    expect(res.data?.cancelGeneration).toMatchObject({ status: 'CANCELLED', error: { code: 'CANCELLED' } });
    const list = events(await sub.done);
    expect(list[list.length - 1]!.status).toBe('CANCELLED');
    expect(await stack.credits(user.userId)).toBe(1);
    expect((await gql(stack.baseUrl, GenerationDoc, { id }, user.token)).data?.generation?.status).toBe('CANCELLED');

    // Cancel the running one: the worker lets go of the hanging call instead of waiting for the time limit.
    await gql(stack.baseUrl, CancelDoc, { id: block.id }, blocker.token);
    const blocked = events(await blockSub.done);
    expect(blocked[blocked.length - 1]!.status).toBe('CANCELLED');
    expect(await stack.credits(blocker.userId)).toBe(1);
    await vi.waitFor(() => expect(stack.worker!.counters.active).toBe(0), { timeout: WAIT_MS });
    // The freed slot took the cancelled job from the queue and dropped it: it never reached the GPU.
    await vi.waitFor(async () => expect(await stack.redis.llen(`${stack.env.REDIS_PREFIX}:high_priority:waiting`)).toBe(0), { timeout: WAIT_MS });
    expect(stack.sim.stats.txt2imgCalls).toBe(callsBefore);
  });
});
