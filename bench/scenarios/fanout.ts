/**
 * Scenario 4, subscription fan-out: many open `generationProgress` subscriptions on ONE API process,
 * every one receiving every event of its generation, and the memory each costs, against bare
 * graphql-yoga (createYoga + createSchema, subscription straight from createPubSub) holding the same
 * number of SSE subscriptions, measured in the same run in alternating order.
 *
 * Memory per subscription = (memory with N subscriptions open and all events delivered − memory
 * before opening them) / N, both after full garbage collections in the server process. The clients
 * run here, one socket each.
 *
 * Knobs (environment): BENCH_COMPARE_SRC=<another copy of src/> adds that implementation's API as a
 * third subject (before/after in one run); BENCH_HEAP_DIR=<dir> writes heap snapshots before and
 * with all subscriptions open; BENCH_PROFILE_DIR=<dir> writes the API child's CPU profile.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database';
import { ProgressPublisher } from '../../src/progress/publisher';
import type { BenchChild } from '../lib/processes';
import { forkTs } from '../lib/processes';
import { round } from '../lib/stats';
import type { BenchContext, Row, Scenario, ScenarioResult, Target } from '../lib/types';
import { apiVariants, startApiProcess, stopApiProcess } from './progress/apiProcess';
import { ask, waitForNoConnections, type MemoryFigures } from './progress/control';
import { forEachLimited, SseClients, waitUntil } from './progress/sse';
import { deletePrefix, generatingUpdate, seedGenerations, WATCH_QUERY, type WatchedGeneration } from './progress/workload';
import { BENCH_LIMITS_ENV } from '../lib/limits';

interface Sizes {
  subscriptions: number;
  /** Events published to every generation while its subscription is open. */
  events: number;
  rounds: number;
  warmup: number;
}

interface Subject {
  label: string;
  kind: 'api' | 'bare';
  child: BenchChild;
  origin: string;
  stop(): Promise<void>;
}

interface RoundFigures {
  heapPerSub: number;
  rssPerSub: number;
  /** Heap still held per subscription after every client went away (a leak shows here). */
  heapLeftPerSub: number;
  openSeconds: number;
  deliverSeconds: number;
  /** Server CPU per subscription opened, and per event delivered to one subscription. */
  openCpuMs: number;
  deliverCpuUs: number;
  /** Events a subscription never got (it skipped from an older state to a newer one). */
  missed: number;
  sent: number;
}

const NO_MEMORY: MemoryFigures = { heapUsed: 0, rss: 0, external: 0, arrayBuffers: 0 };

export const scenario: Scenario = {
  id: 'fanout',
  title: 'Subscription fan-out: memory per open SSE subscription on one API process, against bare graphql-yoga',
  run: runFanout,
};

async function runFanout(ctx: BenchContext): Promise<ScenarioResult> {
  const sizes: Sizes = ctx.quick
    ? { subscriptions: 500, events: 2, rounds: 1, warmup: 50 }
    : { subscriptions: 10_000, events: 5, rounds: 2, warmup: 500 };
  const started = performance.now();
  const prefix = `bench-fanout-${randomBytes(4).toString('hex')}`;
  const redis = new Redis(ctx.redisUrl);
  // Children start while the database is created; whatever started is stopped in `finally`.
  const starting: Array<Promise<Subject>> = [startBareYoga()];
  let tdb: TestDatabase | null = null;
  try {
    tdb = await createTestDatabase({ adminUrl: ctx.adminDatabaseUrl });
    const publisher = new ProgressPublisher(redis, prefix, 600);
    const env = { REDIS_URL: ctx.redisUrl, REDIS_PREFIX: prefix, DATABASE_URL: tdb.url, ...BENCH_LIMITS_ENV };
    for (const v of apiVariants()) {
      starting.push(
        startApiProcess(v, env).then((a): Subject => ({ label: `project API (${a.variant.label})`, kind: 'api', child: a.child, origin: a.origin, stop: () => stopApiProcess(a) })),
      );
    }
    const [generations, subjects] = await Promise.all([seedGenerations(tdb.db, publisher, sizes.subscriptions), Promise.all(starting)]);
    ctx.log(`  setup done in ${round((performance.now() - started) / 1000, 1)} s`);
    for (const s of subjects) await fanOut(s, generations.slice(0, sizes.warmup), 1, publisher, { measure: false });
    ctx.log(`  warm-up done in ${round((performance.now() - started) / 1000, 1)} s`);
    const figures = new Map<Subject, RoundFigures[]>(subjects.map((s) => [s, []]));
    for (let r = 0; r < sizes.rounds; r++) {
      const order = r % 2 === 0 ? subjects : [...subjects].reverse();
      for (const s of order) {
        ctx.log(`  round ${r + 1}/${sizes.rounds}: ${s.label}, ${sizes.subscriptions} subscriptions`);
        figures.get(s)!.push(await fanOut(s, generations, sizes.events, publisher, { measure: true, log: ctx.log }));
      }
    }
    return summarise(sizes, subjects.map((s) => [s, figures.get(s)!] as const));
  } finally {
    const started = await Promise.allSettled(starting);
    await Promise.allSettled(started.map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
    await deletePrefix(redis, prefix).catch(() => undefined);
    redis.disconnect();
    await tdb?.drop();
  }
}

async function startBareYoga(): Promise<Subject> {
  const child = forkTs(new URL('./fanout/bareYogaChild.ts', import.meta.url), { gc: true, env: { NODE_ENV: 'production' } });
  const ready = await child.next<{ ready?: string }>((m) => typeof m === 'object' && m !== null && 'ready' in m, 60_000);
  if (!ready.ready) throw new Error('bare yoga child reported no address');
  return { label: 'bare graphql-yoga + createPubSub', kind: 'bare', child, origin: ready.ready, stop: () => child.stop() };
}

/**
 * Opens one subscription per generation on `s`, publishes `events` states to every generation,
 * waits until every subscription has its generation's last state, measures, closes.
 */
async function fanOut(
  s: Subject,
  generations: WatchedGeneration[],
  events: number,
  publisher: ProgressPublisher,
  opts: { measure: boolean; log?: (m: string) => void },
): Promise<RoundFigures> {
  const n = generations.length;
  const { log } = opts;
  // A warm-up round only runs the code paths; it skips the (full-GC) memory measurements.
  const memory = (): Promise<MemoryFigures> => (opts.measure ? ask<MemoryFigures>(s.child, 'memory') : Promise.resolve(NO_MEMORY));
  const before = await memory();
  // BENCH_HEAP_DIR: heap snapshots before and with every subscription open, to see what one holds.
  const heapDir = opts.measure ? process.env.BENCH_HEAP_DIR : undefined;
  const snapshot = (stage: string) =>
    heapDir ? ask(s.child, 'heapSnapshot', `${heapDir}/${s.kind}-${s.label.replace(/\W+/g, '_')}-${n}-${stage}.heapsnapshot`, 600_000) : null;
  await snapshot('before');
  const clients = new SseClients(s.origin, n + 16);
  const received = new Int32Array(n);
  const lastSeq = new Float64Array(n).fill(-1);
  /** The seq of each generation's last published state (the project API); bare yoga counts events. */
  const finalSeq = new Float64Array(n);
  const failures: string[] = [];
  // The project's stream sends the current state first; bare yoga only what is published.
  const expected = s.kind === 'api' ? events + 1 : events;
  const cpu0 = await ask<number>(s.child, 'cpu');
  let cpu1 = cpu0;
  const t0 = performance.now();
  let t1 = t0;
  try {
    await forEachLimited(n, 128, async (i) => {
      const g = generations[i]!;
      await clients.subscribe({ query: WATCH_QUERY, variables: { id: g.id }, token: g.token }, (event, data) => {
        if (event !== 'next') return;
        const e = (JSON.parse(data) as { data?: { generationProgress?: { seq: number } } }).data?.generationProgress;
        if (!e) {
          failures.push(data.slice(0, 300));
          return;
        }
        if (e.seq <= lastSeq[i]!) failures.push(`${g.id}: seq ${e.seq} after ${lastSeq[i]}`);
        lastSeq[i] = e.seq;
        received[i]!++;
      });
      if (s.kind === 'api') await waitUntil(() => received[i]! > 0 || failures.length > 0, 60_000, () => `first event of ${g.id}`);
    });
    if (s.kind === 'bare') {
      // createPubSub attaches a listener lazily, when yoga first pulls: wait until all are attached.
      const deadline = performance.now() + 60_000;
      let listeners = 0;
      while ((listeners = await ask<number>(s.child, 'listeners')) < n) {
        if (performance.now() > deadline) throw new Error(`${listeners}/${n} pubsub listeners attached`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    t1 = performance.now();
    cpu1 = await ask<number>(s.child, 'cpu');
    log?.(`    ${n} open in ${round((t1 - t0) / 1000, 1)} s`);
    if (s.kind === 'api') {
      for (let e = 0; e < events; e++) {
        for (let i = 0; i < n; i += 1000) {
          await Promise.all(
            generations.slice(i, i + 1000).map(async (g, k) => {
              const stored = await publisher.publish(generatingUpdate(g.id, Math.min(19, 2 + e), 20 - e));
              if (!stored) throw new Error(`publish to ${g.id} was refused`);
              finalSeq[i + k] = stored.seq;
            }),
          );
        }
      }
    } else {
      await ask(s.child, 'publish', { topics: generations.map((g) => g.id), events });
    }
    const arrived = (i: number) => (s.kind === 'api' ? lastSeq[i]! >= finalSeq[i]! : received[i]! >= expected);
    const done = () => {
      for (let i = 0; i < n; i++) if (!arrived(i)) return false;
      return true;
    };
    await waitUntil(() => done() || failures.length > 0, 180_000, () => `${n - received.filter((_c, i) => !arrived(i)).length}/${n} subscriptions got their last state (events received: ${histogram(received)})`);
    if (failures.length) throw new Error(`${s.label}: ${failures.length} bad events, first: ${failures[0]}`);
    const extra = received.findIndex((c) => c > expected);
    if (extra !== -1) throw new Error(`${s.label}: subscription ${extra} got ${received[extra]} events, expected ${expected}`);
  } catch (err) {
    await clients.close();
    throw err;
  }
  const t2 = performance.now();
  const cpu2 = await ask<number>(s.child, 'cpu');
  log?.(`    ${n * events} events delivered in ${round((t2 - t1) / 1000, 1)} s`);
  const open = await memory();
  await snapshot('open');
  await clients.close();
  await waitForNoConnections(s.child);
  const after = await memory();
  return {
    heapPerSub: (open.heapUsed - before.heapUsed) / n,
    rssPerSub: (open.rss - before.rss) / n,
    heapLeftPerSub: (after.heapUsed - before.heapUsed) / n,
    openSeconds: (t1 - t0) / 1000,
    deliverSeconds: (t2 - t1) / 1000,
    openCpuMs: (cpu1 - cpu0) / 1000 / n,
    deliverCpuUs: (cpu2 - cpu1) / (n * events),
    missed: received.reduce((sum, c) => sum + (expected - c), 0),
    sent: n * expected,
  };
}

/** "count×n" pairs, e.g. "6×9950 5×50". */
function histogram(values: Int32Array): string {
  const h = new Map<number, number>();
  for (const v of values) h.set(v, (h.get(v) ?? 0) + 1);
  return [...h].sort((a, b) => b[0] - a[0]).map(([v, c]) => `${v}×${c}`).join(' ');
}

const mean = (v: readonly number[]) => v.reduce((a, b) => a + b, 0) / Math.max(1, v.length);
const kb = (bytes: number) => round(bytes / 1024, 2);

function summarise(sizes: Sizes, results: ReadonlyArray<readonly [Subject, RoundFigures[]]>): ScenarioResult {
  const rows: Row[] = [];
  const targets: Target[] = [];
  const bare = results.find(([s]) => s.kind === 'bare')?.[1] ?? [];
  const bareHeap = mean(bare.map((f) => f.heapPerSub));
  const bareRss = mean(bare.map((f) => f.rssPerSub));
  for (const [s, f] of results) {
    const heap = mean(f.map((x) => x.heapPerSub));
    const rss = mean(f.map((x) => x.rssPerSub));
    rows.push({
      label: `${s.label}, ${sizes.subscriptions} subscriptions`,
      figures: {
        'heap KiB/sub': kb(heap),
        'RSS KiB/sub': kb(rss),
        ...(s.kind === 'api' ? { 'heap × bare': round(heap / bareHeap, 2), 'RSS × bare': round(rss / bareRss, 2) } : {}),
        'heap left after close KiB/sub': kb(mean(f.map((x) => x.heapLeftPerSub))),
        'events missed %': round((100 * f.reduce((a, x) => a + x.missed, 0)) / Math.max(1, f.reduce((a, x) => a + x.sent, 0)), 2),
        'open s': round(mean(f.map((x) => x.openSeconds)), 2),
        'server CPU ms/open': round(mean(f.map((x) => x.openCpuMs)), 2),
        'deliver s': round(mean(f.map((x) => x.deliverSeconds)), 2),
        'server CPU µs/event': round(mean(f.map((x) => x.deliverCpuUs)), 1),
      },
    });
    if (s.label === 'project API (current)') {
      targets.push({
        description: `every subscription receives every event of its generation (events missed, ${sizes.subscriptions} subscriptions)`,
        value: f.reduce((a, x) => a + x.missed, 0),
        bound: 0,
        better: 'lower',
      });
      targets.push({
        description: `heap per subscription ≤ 1.2× bare graphql-yoga's (${sizes.subscriptions} open SSE subscriptions)`,
        value: round(heap / bareHeap, 2),
        bound: 1.2,
        better: 'lower',
      });
    }
  }
  return {
    rows,
    targets,
    notes: [
      `${sizes.subscriptions} subscriptions, one per seeded GENERATING generation (the usual case: an owner watches their own generation; the costliest for the project, one Redis channel each); ${sizes.events} events published to every generation while all are open, each subscription checked to receive all of them in seq order. ${sizes.rounds} round(s), subjects in alternating order, after a ${sizes.warmup}-subscription warm-up each.`,
      'Memory per subscription = (after all events delivered − before opening) / N, measured in the server process after full GCs (--expose-gc). The target is on heapUsed: it is what the implementation controls (streams, timers, closures, yoga execution state) and after a full GC it is exact; RSS adds the same native socket and HTTP parser cost to both sides plus V8 heap reservations and allocator slack that move with GC timing, so it is shown as context.',
      "events missed %: published states a subscription never received because it went from an older state straight to a newer one. The contract allows that (seq order, no duplicates), the scenario does not: every subscription must end on its generation's last state, and the current implementation must miss none.",
      'The project API does more per subscription than bare yoga by design: token check and owner check against Postgres, the current state first (Redis snapshot), a Redis channel per generation and a snapshot re-read when the stream is quiet.',
    ],
  };
}
