/**
 * Redis stopped under load, and started again (issue 13): a private redis-server with its
 * append-only file on, an API process (spawned `node`) and a worker on it, clients submitting
 * generateImage in a loop. While Redis is away every request answers SERVICE_UNAVAILABLE (with
 * Retry-After) without waiting for Redis to return, /health names Redis as down, a new progress
 * stream and a read of a generation answer too; once it is back everything recovers by itself, every
 * generation that was accepted SUCCEEDED, each charged once, and the refused ones kept nothing.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESSES_TEST_MS, WAIT_MS } from '../helpers/budgets';
import { subscribe, type Subscription } from '../helpers/graphql';
import { expectLoadSettled, LOAD_ENV, startGenerationLoad, watchLatest } from '../helpers/generationLoad';
import { startRedis, stopRedis } from '../helpers/redisServer';
import { freePort, startStack, type Stack } from '../helpers/stack';
import { until } from '../helpers/wait';
import { graphql } from '../gql';

/** The API's bound on a Redis command (REDIS_COMMAND_TIMEOUT_MS). */
const COMMAND_TIMEOUT_MS = 1000;
/** How long Redis stays stopped once the API has been seen refusing: an outage of several seconds. */
const OUTAGE_MS = 4000;
const CREDITS = 10_000;

const ProgressDoc = graphql(`
  subscription OutageProgress($id: ID!) {
    generationProgress(id: $id) {
      status
    }
  }
`);

interface Reply {
  sentAt: number;
  answeredAt: number;
  status: number;
  body: { data?: unknown; errors?: Array<{ extensions?: { code?: string } }> } & Record<string, unknown>;
  retryAfter: string | null;
}

async function probe(url: string, init: RequestInit = {}): Promise<Reply> {
  const sentAt = performance.now();
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(WAIT_MS) });
  const body = (await res.json()) as Reply['body'];
  return { sentAt, answeredAt: performance.now(), status: res.status, body, retryAfter: res.headers.get('retry-after') };
}

describe('a Redis outage under load', () => {
  let redisPort: number;
  let redis: ChildProcess;
  let aofDir: string;
  let stack: Stack;
  let api: { baseUrl: string; stop(): Promise<void> };

  beforeAll(async () => {
    redisPort = await freePort();
    aofDir = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-aof-'));
    redis = await startRedis(redisPort, { appendOnlyDir: aofDir });
    stack = await startStack({
      env: {
        REDIS_URL: `redis://127.0.0.1:${redisPort}/0`,
        REDIS_COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS),
        HEALTH_TIMEOUT_MS: '1000',
        // A job Redis lost (none should be, with fsync always) would be queued again within seconds.
        STRANDED_SWEEP_INTERVAL_MS: '1000',
        STRANDED_MIN_AGE_S: '5',
        ...LOAD_ENV,
      },
    });
    api = await stack.spawnApi();
  }, PROCESSES_TEST_MS);
  afterAll(async () => {
    // Redis back first, so that the stack closes its connections normally.
    if (redis && (redis.exitCode !== null || redis.signalCode !== null)) redis = await startRedis(redisPort, { appendOnlyDir: aofDir });
    await api?.stop();
    await stack?.close();
    if (redis) await stopRedis(redis);
    if (aofDir) await rm(aofDir, { recursive: true, force: true });
  });

  it('answers SERVICE_UNAVAILABLE fast while it is down, names it in /health, and loses and double-charges nothing', { timeout: PROCESSES_TEST_MS }, async () => {
    const users = await Promise.all([0, 1, 2].map(() => stack.createUser(CREDITS)));
    const load = startGenerationLoad(() => api.baseUrl, users.map((u) => u.token));
    let streams: Array<Subscription<unknown>> = [];
    try {
      await until(() => load.accepted().length >= 6, 'generations to be accepted before the outage');
      // Streams open across the outage: each must still get its generation's terminal state.
      const watched = watchLatest(load, 3, (id, client) => subscribe(api.baseUrl, ProgressDoc, { id }, users[client]!.token));
      streams = watched.streams;
      // Open: each has sent its first state (so it listens) before Redis goes.
      await watched.listening;

      await stopRedis(redis);
      const downAt = performance.now();
      const owner = users[0]!;
      const someId = load.answers.find((a) => a.client === 0 && a.id)!.id!;
      const [health, read, stream] = await Promise.all([
        probe(`${api.baseUrl}/health`),
        probe(`${api.baseUrl}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${owner.token}` },
          body: JSON.stringify({ query: 'query R($id: ID!) { generation(id: $id) { id status } }', variables: { id: someId } }),
        }),
        (async () => {
          const sentAt = performance.now();
          const s = subscribe(api.baseUrl, ProgressDoc, { id: someId }, owner.token);
          const first = await s.waitFor(() => true, WAIT_MS);
          s.close();
          return { sentAt, answeredAt: performance.now(), first };
        })(),
      ]);
      await until(() => load.answers.filter((a) => a.sentAt > downAt).length >= 6, 'answers while Redis is down');
      // The outage lasts a few seconds more: a deliberate length, not a wait for a state.
      await new Promise((r) => setTimeout(r, OUTAGE_MS));

      redis = await startRedis(redisPort, { appendOnlyDir: aofDir });
      const upAt = performance.now();
      await until(() => load.answers.filter((a) => a.sentAt > upAt && a.id).length >= 3, 'generations to be accepted again once Redis is back');
      await load.stop();

      // Everything asked while Redis was down was answered before it returned (nothing waited for
      // it), and named the dependency: /health with Redis down, the others with SERVICE_UNAVAILABLE.
      expect(health.answeredAt).toBeLessThan(upAt);
      expect(health.status).toBe(503);
      expect(health.body).toMatchObject({ ok: false, checks: { redis: { ok: false }, database: { ok: true } } });
      expect(read.answeredAt).toBeLessThan(upAt);
      // The row is Postgres's; its live state is Redis's: either the recorded row or "unavailable".
      if (read.body.errors) expect([read.body.errors[0]?.extensions?.code, read.retryAfter]).toEqual(['SERVICE_UNAVAILABLE', '5']);
      else expect(read.body.data).toMatchObject({ generation: { id: someId } });
      expect(stream.answeredAt).toBeLessThan(upAt);
      // A new stream is refused with the code, or starts from the state Postgres recorded.
      if (stream.first.errors) expect(stream.first.errors[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE');
      else expect(stream.first.data).toMatchObject({ generationProgress: { status: expect.any(String) } });
      if (process.env.FAULT_REPORT) console.info(`while down: read ${JSON.stringify(read.body)}, new stream ${JSON.stringify(stream.first)}`);

      const during = load.answers.filter((a) => a.sentAt > downAt && a.sentAt < upAt);
      // A request sent well before Redis came back had its answer before that.
      const early = during.filter((a) => a.sentAt < upAt - 2 * COMMAND_TIMEOUT_MS);
      expect(early.length).toBeGreaterThanOrEqual(6);
      expect(early.filter((a) => a.answeredAt >= upAt)).toEqual([]);
      // Every answer came back (status 0: none did) with an id or a code: no 500, no masked error.
      expect(load.answers.filter((a) => a.status !== 200 || (!a.id && a.code !== 'SERVICE_UNAVAILABLE'))).toEqual([]);
      expect(during.filter((a) => a.code === 'SERVICE_UNAVAILABLE' && a.retryAfter !== '5')).toEqual([]);
      expect(during.filter((a) => a.answeredAt < upAt && a.id)).toEqual([]);
      const slowest = Math.max(...early.map((a) => a.answeredAt - a.sentAt));
      if (process.env.FAULT_REPORT) console.info(`redis outage: ${early.length} refused while down, slowest ${Math.round(slowest)} ms; ${load.accepted().length} accepted`);

      // Every accepted generation finishes, each charged once; the open streams end with it.
      await expectLoadSettled(stack.tdb.db, users, CREDITS, load, streams, PROCESSES_TEST_MS / 2);
    } finally {
      for (const s of streams) s.close();
      await load.stop();
    }
  });
});
