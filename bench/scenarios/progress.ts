/**
 * Scenario 3, progress latency: from the worker's publish (the project's ProgressPublisher, Lua
 * script and all) to an SSE client's receipt of the event, with many subscriptions open on the API,
 * against a raw Redis PUBLISH → ioredis subscriber round trip measured in the same run, probe for
 * probe (the two kinds alternate, in alternating order).
 *
 * The API runs in a child (the real server, config and database); clients, publisher and the raw
 * subscriber run here. Probes go one at a time, so each measures latency, not queueing; the send
 * time travels in `etaSeconds` and the receiver subtracts it from its own clock.
 *
 * Knobs (environment): BENCH_COMPARE_SRC=<another copy of src/> runs that implementation's API too,
 * in alternating rounds (before/after in one run); BENCH_PROFILE_DIR=<dir> writes the API child's
 * CPU profile.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database';
import { ProgressPublisher } from '../../src/progress/publisher';
import { percentile, round } from '../lib/stats';
import type { BenchContext, Row, Scenario, ScenarioResult, Target } from '../lib/types';
import { apiVariants, startApiProcess, stopApiProcess, type ApiProcess } from './progress/apiProcess';
import { ask, waitForNoConnections } from './progress/control';
import { forEachLimited, nowMs, SseClients, waitUntil } from './progress/sse';
import { deletePrefix, generatingUpdate, seedGenerations, WATCH_QUERY, type WatchedGeneration } from './progress/workload';
import { BENCH_LIMITS_ENV } from '../lib/limits';

/** Send times are epoch milliseconds: anything this large in etaSeconds is a probe. */
const PROBE_MARK = 1e12;
const PROBE_TIMEOUT_MS = 10_000;

interface Sizes {
  subscriptions: number;
  probesPerRound: number;
  warmupProbes: number;
  rounds: number;
  idleMs: number;
}

interface VariantSamples {
  sse: number[];
  raw: number[];
  /** API CPU per second of wall time while the subscriptions sat idle (timers, re-reads). */
  idleCpu: number[];
  /** API CPU per second of wall time while probing. */
  probeCpu: number[];
  /** Events out of seq order or repeated (must stay 0). */
  disorder: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const scenario: Scenario = {
  id: 'progress',
  title: 'Progress latency: worker publish → SSE client, against a raw Redis pub/sub round trip',
  run: runProgress,
};

async function runProgress(ctx: BenchContext): Promise<ScenarioResult> {
  const sizes: Sizes = ctx.quick
    ? { subscriptions: 200, probesPerRound: 300, warmupProbes: 30, rounds: 1, idleMs: 1000 }
    : { subscriptions: 1000, probesPerRound: 1500, warmupProbes: 100, rounds: 2, idleMs: 6000 };
  const prefix = `bench-progress-${randomBytes(4).toString('hex')}`;
  const redis = new Redis(ctx.redisUrl);
  const rawSub = new Redis(ctx.redisUrl);
  // Whatever started is stopped in `finally`, also when another start failed.
  const starting: Array<Promise<ApiProcess>> = [];
  let tdb: TestDatabase | null = null;
  try {
    tdb = await createTestDatabase({ adminUrl: ctx.adminDatabaseUrl });
    const publisher = new ProgressPublisher(redis, prefix, 600);
    const env = { REDIS_URL: ctx.redisUrl, REDIS_PREFIX: prefix, DATABASE_URL: tdb.url, ...BENCH_LIMITS_ENV };
    starting.push(...apiVariants().map((v) => startApiProcess(v, env)));
    const [generations, apis] = await Promise.all([seedGenerations(tdb.db, publisher, sizes.subscriptions), Promise.all(starting)]);
    const raw = await rawChannel(redis, rawSub, `${prefix}:raw`);
    const samples = new Map(apis.map((a) => [a, { sse: [], raw: [], idleCpu: [], probeCpu: [], disorder: 0 } as VariantSamples]));
    let step = 1;
    for (let r = 0; r < sizes.rounds; r++) {
      const order = r % 2 === 0 ? apis : [...apis].reverse();
      for (const api of order) {
        ctx.log(`  round ${r + 1}/${sizes.rounds}: ${api.variant.label}, ${sizes.subscriptions} subscriptions`);
        step = await measureRound(api, generations, sizes, { publisher, raw, step }, samples.get(api)!);
      }
    }
    return summarise(sizes, apis.map((a) => [a.variant.label, samples.get(a)!] as const));
  } finally {
    const started = await Promise.allSettled(starting);
    await Promise.allSettled(started.map((r) => (r.status === 'fulfilled' ? stopApiProcess(r.value) : undefined)));
    await deletePrefix(redis, prefix).catch(() => undefined);
    rawSub.disconnect();
    redis.disconnect();
    await tdb?.drop();
  }
}

interface RawChannel {
  /** PUBLISHes `message` (carrying its send time) and resolves with the round trip in ms. */
  roundTrip(message: (sentAt: number) => string): Promise<number>;
}

/**
 * A plain ioredis subscriber in this process; one message in flight at a time. `pub` is the
 * connection the progress publisher uses: same client, same path to Redis.
 */
async function rawChannel(pub: Redis, sub: Redis, channel: string): Promise<RawChannel> {
  await sub.subscribe(channel);
  let waiting: ((receivedAt: number, sentAt: number) => void) | null = null;
  sub.on('message', (_ch: string, message: string) => {
    const receivedAt = nowMs();
    const sentAt = (JSON.parse(message) as { etaSeconds: number }).etaSeconds;
    waiting?.(receivedAt, sentAt);
  });
  return {
    roundTrip(message) {
      return new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('raw pub/sub probe lost')), PROBE_TIMEOUT_MS);
        waiting = (receivedAt, sentAt) => {
          clearTimeout(timer);
          waiting = null;
          resolve(receivedAt - sentAt);
        };
        const sentAt = nowMs();
        pub.publish(channel, message(sentAt)).catch((err: unknown) => {
          clearTimeout(timer);
          reject(err instanceof Error ? err : new Error(String(err)));
        });
      });
    },
  };
}

interface Probing {
  publisher: ProgressPublisher;
  raw: RawChannel;
  /** The next GENERATING step to publish (kept rising across rounds so progress never has to be clamped). */
  step: number;
}

/** One round on one API: open the subscriptions, sit idle, probe, close. Returns the next step. */
async function measureRound(api: ApiProcess, generations: WatchedGeneration[], sizes: Sizes, p: Probing, out: VariantSamples): Promise<number> {
  const clients = new SseClients(api.origin, sizes.subscriptions + 16);
  const firstSeen = new Array<boolean>(generations.length).fill(false);
  const lastSeq = new Array<number>(generations.length).fill(-1);
  const pending = new Map<string, (receivedAt: number, sentAt: number) => void>();
  const firstWaiters = new Map<number, () => void>();
  const failures: string[] = [];
  let opened = 0;
  try {
    await forEachLimited(sizes.subscriptions, 64, async (i) => {
      const g = generations[i]!;
      const first = new Promise<void>((resolve) => firstWaiters.set(i, resolve));
      await clients.subscribe({ query: WATCH_QUERY, variables: { id: g.id }, token: g.token }, (event, data) => {
        if (event !== 'next') return;
        const receivedAt = nowMs();
        const msg = JSON.parse(data) as { data?: { generationProgress?: { seq: number; etaSeconds: number | null } }; errors?: unknown };
        const e = msg.data?.generationProgress;
        if (!e) {
          failures.push(`subscription ${g.id} failed: ${data.slice(0, 300)}`);
          firstWaiters.get(i)?.();
          return;
        }
        if (e.seq <= lastSeq[i]!) out.disorder++;
        lastSeq[i] = e.seq;
        if (!firstSeen[i]) {
          firstSeen[i] = true;
          opened++;
          firstWaiters.get(i)?.();
          firstWaiters.delete(i);
        }
        if (e.etaSeconds !== null && e.etaSeconds > PROBE_MARK) pending.get(g.id)?.(receivedAt, e.etaSeconds);
      });
      await first;
    });
    if (failures.length) throw new Error(`${failures.length} subscriptions failed, first: ${failures[0]}`);
    await waitUntil(() => opened === sizes.subscriptions, 30_000, () => `${opened}/${sizes.subscriptions} subscriptions got their first event`);

    // Idle: what the open streams cost while nothing is published (timers, snapshot re-reads).
    const idleStart = await ask<number>(api.child, 'cpu');
    const idleT0 = performance.now();
    await sleep(sizes.idleMs);
    out.idleCpu.push(((await ask<number>(api.child, 'cpu')) - idleStart) / 1000 / ((performance.now() - idleT0) / 1000));

    const cpuStart = await ask<number>(api.child, 'cpu');
    const t0 = performance.now();
    let step = p.step;
    for (let k = 0; k < sizes.probesPerRound; k++) {
      const g = generations[k % generations.length]!;
      if (k > 0 && k % generations.length === 0) step = Math.min(step + 1, 19);
      const sseFirst = k % 2 === 0;
      let sse = 0;
      let raw = 0;
      for (const kind of sseFirst ? (['sse', 'raw'] as const) : (['raw', 'sse'] as const)) {
        if (kind === 'raw') raw = await p.raw.roundTrip((sentAt) => rawMessage(g.id, step, sentAt));
        else sse = await sseProbe(p.publisher, pending, g.id, step);
      }
      if (k >= sizes.warmupProbes) {
        out.sse.push(sse);
        out.raw.push(raw);
      }
      await sleep(1 + Math.random() * 2);
    }
    out.probeCpu.push(((await ask<number>(api.child, 'cpu')) - cpuStart) / 1000 / ((performance.now() - t0) / 1000));
    return Math.min(step + 1, 19);
  } finally {
    await clients.close();
    await waitForNoConnections(api.child);
  }
}

/** The message a raw probe sends: the same JSON the publish script sends, so the same size. */
function rawMessage(generationId: string, step: number, sentAt: number): string {
  const u = generatingUpdate(generationId, step, sentAt);
  return JSON.stringify({ seq: 1, ...u });
}

function sseProbe(
  publisher: ProgressPublisher,
  pending: Map<string, (receivedAt: number, sentAt: number) => void>,
  generationId: string,
  step: number,
): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      pending.delete(generationId);
      reject(new Error(`progress probe for ${generationId} not received within ${PROBE_TIMEOUT_MS} ms`));
    }, PROBE_TIMEOUT_MS);
    const sentAt = nowMs();
    pending.set(generationId, (receivedAt, sent) => {
      if (sent !== sentAt) return; // an older probe's event (cannot happen one at a time, but be exact)
      clearTimeout(timer);
      pending.delete(generationId);
      resolve(receivedAt - sentAt);
    });
    publisher.publish(generatingUpdate(generationId, step, sentAt)).catch((err: unknown) => {
      clearTimeout(timer);
      pending.delete(generationId);
      reject(err instanceof Error ? err : new Error(String(err)));
    });
  });
}

const mean = (v: readonly number[]) => v.reduce((a, b) => a + b, 0) / Math.max(1, v.length);

function summarise(sizes: Sizes, variants: ReadonlyArray<readonly [string, VariantSamples]>): ScenarioResult {
  const rows: Row[] = [];
  const targets: Target[] = [];
  const allRaw = variants.flatMap(([, s]) => s.raw);
  rows.push({
    label: 'raw Redis PUBLISH → ioredis subscriber (bench process)',
    figures: { 'p50 ms': round(percentile(allRaw, 50), 3), 'p99 ms': round(percentile(allRaw, 99), 3), samples: allRaw.length },
  });
  const p50s = new Map<string, number>();
  for (const [label, s] of variants) {
    const rawP50 = percentile(s.raw, 50);
    const rawP99 = percentile(s.raw, 99);
    const p50 = percentile(s.sse, 50);
    const p99 = percentile(s.sse, 99);
    p50s.set(label, p50 / rawP50);
    rows.push({
      label: `publish → SSE client, ${sizes.subscriptions} open subscriptions (${label})`,
      figures: {
        'p50 ms': round(p50, 3),
        'p99 ms': round(p99, 3),
        samples: s.sse.length,
        'p50 × raw': round(p50 / rawP50, 2),
        'p99 × raw': round(p99 / rawP99, 2),
        'API CPU idle ms/s': round(mean(s.idleCpu), 1),
        'API CPU probing ms/s': round(mean(s.probeCpu), 1),
      },
    });
    if (s.disorder > 0) throw new Error(`${label}: ${s.disorder} events arrived out of seq order or twice`);
    if (label === 'current') {
      targets.push({
        description: `p50 publish → SSE client ≤ 5× the raw Redis pub/sub round trip (${sizes.subscriptions} open subscriptions)`,
        value: round(p50 / rawP50, 2),
        bound: 5,
        better: 'lower',
      });
    }
  }
  const notes = [
    `${sizes.subscriptions} subscriptions on ${sizes.subscriptions} seeded GENERATING generations (one each), all open during the probes; probes rotate over them, so every subscription receives events. ${sizes.rounds} round(s) × ${sizes.probesPerRound} probes of each kind (first ${sizes.warmupProbes} per round dropped as warm-up), one at a time, SSE and raw alternating in alternating order, 1–3 ms apart.`,
    'SSE path: bench ProgressPublisher (Lua: seq, clamp, snapshot, PUBLISH) → Redis → the API child\'s hub → stream → yoga (execute, SSE frame) → undici client in the bench process. Raw path: PUBLISH of a same-size JSON message on the same connection → a plain ioredis subscriber in the bench process.',
    `API CPU idle = CPU the API child spent per second of wall time during ${sizes.idleMs} ms with the subscriptions open and nothing published (timers, snapshot re-reads); PROGRESS_RESYNC_MS is the default 5000.`,
  ];
  const before = p50s.get('before');
  const current = p50s.get('current');
  if (before !== undefined && current !== undefined) {
    notes.push(`Before/after (BENCH_COMPARE_SRC, same run, alternating rounds): p50 × raw ${round(before, 2)} → ${round(current, 2)}.`);
  }
  return { rows, targets, notes };
}
