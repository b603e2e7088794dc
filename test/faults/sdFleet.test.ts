/**
 * A fleet of SD servers over real HTTP: one worker with one slot per server spreads generations
 * over them and never sends two at once to one; a server killed mid-generation hands its job to
 * another without counting it as the job's failure, and is back in use once it restarts on its
 * port; two workers sharing one list hold leases in Redis and never share a server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listWorkers } from '../../src/jobs/presence';
import { sdLeaseKey } from '../../src/sd/fleet';
import { createLogger } from '../../src/logger';
import { createWorker, type Worker } from '../../workers/worker';
import { events, expectWellFormedStream, generate, statusPath, watch } from '../integration/helpers';
import { startStack, type Stack } from '../helpers/stack';
import { until } from '../helpers/wait';

const FLEET_ENV = {
  SD_SERVER_CHECK_INTERVAL_MS: '50',
  WORKER_HEARTBEAT_INTERVAL_MS: '100',
  WORKER_HEARTBEAT_TTL_MS: '5000',
  RATE_LIMIT_GENERATIONS_PER_MINUTE: '0',
  MAX_UNFINISHED_GENERATIONS_PER_USER: '0',
};

/** Generations of `token`, each watched from the start; resolves with each stream's events. */
async function generateMany(stack: Stack, token: string, n: number) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const { id } = await generate(stack, token, { steps: 4, width: 64, height: 64, prompt: `fleet ${i}` });
    out.push({ id, stream: watch(stack.baseUrl, id, token) });
  }
  return out;
}

async function expectAllSucceeded(stack: Stack, gens: Awaited<ReturnType<typeof generateMany>>) {
  for (const g of gens) {
    const list = events(await g.stream.done);
    expectWellFormedStream(list, g.id);
    expect(list.at(-1)).toMatchObject({ status: 'SUCCEEDED', attempt: 1 });
    // A move to another server is not a retry: no RETRYING, and one attempt in Postgres.
    expect(statusPath(list)).not.toContain('RETRYING');
    expect(await stack.tdb.db('generations').where({ id: g.id }).first()).toMatchObject({ status: 'SUCCEEDED', attempts: 1 });
  }
}

const inFlight = (stack: Stack) => stack.sims.map((s) => s.stats.txt2imgInFlight);

describe('one worker, three SD servers', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ sdServers: 3, env: FLEET_ENV });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('gives each server its own slot: nine generations spread over the three, never two at once on one', async () => {
    const { token } = await stack.createUser(20);
    // Held mid-sampling: the worker must have one job on each server, and no fourth sent anywhere.
    for (const s of stack.sims) s.pause();
    const gens = await generateMany(stack, token, 9);
    await until(() => inFlight(stack).every((n) => n === 1), 'one job on each of the three servers');
    expect(stack.sims.reduce((n, s) => n + s.stats.txt2imgCalls, 0)).toBe(3);
    for (const s of stack.sims) s.resume();
    await expectAllSucceeded(stack, gens);
    const calls = stack.sims.map((s) => s.stats.txt2imgCalls);
    expect(calls.reduce((a, b) => a + b, 0)).toBe(9);
    for (const c of calls) expect(c).toBeGreaterThan(0);
    for (const s of stack.sims) expect(s.stats.maxConcurrentTxt2img).toBe(1);
    // Every job left its lease behind it.
    expect(await stack.redis.keys(`${stack.env.REDIS_PREFIX}:sd:lease:*`)).toEqual([]);
  });

  it('a server killed mid-generation: its job finishes on another, not as a retry; the server is back after it restarts', async () => {
    const { token } = await stack.createUser(20);
    const before = stack.sims.map((s) => s.stats.txt2imgCalls);
    for (const s of stack.sims) s.pause();
    const gens = await generateMany(stack, token, 3);
    await until(() => inFlight(stack).every((n) => n === 1), 'one job on each server');
    // Each of the three is GENERATING (sampling, held at a step) before the kill.
    await until(async () => (await stack.tdb.db('generations').whereIn('id', gens.map((g) => g.id)).where({ status: 'GENERATING' })).length === 3, 'all three generating');
    const killedUrl = stack.env.APP_SD_API_URL!.split(',')[1]!;
    await stack.sims[1]!.close();
    const workerId = stack.worker!.id;
    const serverState = async (url: string) =>
      (await listWorkers(stack.redis, stack.env.REDIS_PREFIX!)).find((w) => w.id === workerId)?.sdServers.find((s) => s.url === killedUrl)?.state;
    await until(async () => (await serverState(killedUrl)) === 'down', 'the killed server to be reported down');
    for (const i of [0, 2]) stack.sims[i]!.resume();
    await expectAllSucceeded(stack, gens);
    // The killed server's job ran again on one of the two others.
    const moved = [0, 2].reduce((n, i) => n + stack.sims[i]!.stats.txt2imgCalls - before[i]!, 0);
    expect(moved).toBe(3);
    expect(stack.worker!.metrics.snapshot().byKind.generateImage?.outcomes.retrying ?? 0).toBe(0);

    // Back on the same port: the check puts it back, and it takes a job of its own again.
    const back = await stack.restartSimulator(1);
    await until(async () => (await serverState(killedUrl)) === 'up', 'the restarted server to be reported up');
    for (const s of stack.sims) s.pause();
    const more = await generateMany(stack, token, 3);
    await until(() => inFlight(stack).every((n) => n === 1), 'one job on each server, the restarted one included');
    expect(back.stats.txt2imgCalls).toBe(1);
    for (const s of stack.sims) s.resume();
    await expectAllSucceeded(stack, more);
    for (const s of stack.sims) expect(s.stats.maxConcurrentTxt2img).toBe(1);
  });
});

describe('two workers sharing one list of two SD servers', () => {
  let stack: Stack;
  let second: Worker;
  beforeAll(async () => {
    // Steps slow enough that both workers' four slots want the two servers at once.
    stack = await startStack({ sdServers: 2, env: { ...FLEET_ENV, SD_LEASE_TTL_MS: '3000' }, simulator: { stepMs: 20 } });
    second = createWorker({ config: stack.config, db: stack.tdb.db, log: createLogger('silent'), storage: stack.storage, sdUrl: stack.env.APP_SD_API_URL });
    await second.start();
  });
  afterAll(async () => {
    await second?.close();
    await stack?.close();
  });

  it('never send two jobs to one server at once (a lease per server in Redis)', async () => {
    const { token } = await stack.createUser(20);
    const gens = await generateMany(stack, token, 10);
    await expectAllSucceeded(stack, gens);
    for (const s of stack.sims) {
      expect(s.stats.maxConcurrentTxt2img).toBe(1);
      expect(s.stats.txt2imgCalls).toBeGreaterThan(0);
    }
    expect(stack.sims.reduce((n, s) => n + s.stats.txt2imgCalls, 0)).toBe(10);
    // Both workers took generations (each has two slots; together four for two servers).
    const ran = (w: Worker) => w.metrics.snapshot().byKind.generateImage?.outcomes.succeeded ?? 0;
    expect(ran(stack.worker!) + ran(second)).toBe(10);
    expect(ran(stack.worker!)).toBeGreaterThan(0);
    expect(ran(second)).toBeGreaterThan(0);
  });

  it('a job whose lease another holder took stops on that server at once and finishes on the other, not as a retry', async () => {
    const { token } = await stack.createUser(5);
    for (const s of stack.sims) s.pause();
    const gens = await generateMany(stack, token, 1);
    await until(() => inFlight(stack).includes(1), 'the job to reach a server');
    const taken = inFlight(stack).indexOf(1);
    const other = 1 - taken;
    const url = stack.env.APP_SD_API_URL!.split(',')[taken]!;
    const key = sdLeaseKey(stack.env.REDIS_PREFIX!, url);
    // Someone else holds the server's lease now (it expired and was taken, say): at its next renewal
    // the worker must notice and hang up on that server, before it sends anything more there.
    await stack.redis.set(key, 'intruder', 'PX', 60_000);
    await until(() => stack.sims[taken]!.stats.txt2imgInFlight === 0 && stack.sims[other]!.stats.txt2imgInFlight === 1, 'the job to move to the other server');
    stack.sims[other]!.resume();
    await expectAllSucceeded(stack, gens);
    expect(await stack.redis.get(key)).toBe('intruder');
    await stack.redis.del(key);
    stack.sims[taken]!.resume();
    for (const s of stack.sims) expect(s.stats.maxConcurrentTxt2img).toBe(1);
  });
});
