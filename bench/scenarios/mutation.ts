/**
 * Scenario 2: `generateImage` (authentication, validation, credit reservation, insert, enqueue) under
 * load, against a bare graphql-yoga mutation that does nothing, in the same run.
 *
 * Three processes: the real API (bench/scenarios/mutation/api.child.ts, its own scratch database and
 * Redis prefix, no worker: the jobs pile up in Redis and are deleted afterwards), the bare yoga server
 * (mutation/bare.child.ts), and this one, which drives autocannon at 50 connections. Rounds alternate
 * bare / own / bare / own so drift on this shared machine hits both alike; each round's own/bare
 * ratio is taken side by side and the targets use the median of those ratios. Two cases: one hot
 * user (every request reserves credits on the same row) and many users (requests rotate over them).
 *
 * Every response is checked (GraphQL errors arrive in a 200): a non-2xx, a connection error or a body
 * that is not a generated id fails the scenario. Afterwards the database must account for every
 * credit (credits left + credits reserved = credits given) and Redis must hold one job per row.
 *
 * BENCH_MUTATION_CPU_PROFILE=<file.cpuprofile> writes a CPU profile of the API process.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { forkTs, type BenchChild } from '../lib/processes';
import { median, round } from '../lib/stats';
import type { BenchContext, Row, Scenario, ScenarioResult, Target } from '../lib/types';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database';
import { createUsers, deleteRedisPrefix } from './mutation/fixtures';
import { cpuMicros, runLoad, sampleRequest, type LoadResult } from './mutation/load';
import { BENCH_LIMITS_ENV } from '../lib/limits';

const CONNECTIONS = 50;
const HOT_CREDITS = 100_000_000;
const SPREAD_CREDITS = 1_000_000;
const TARGET_RPS_RATIO = 0.5;
const TARGET_P99_RATIO = 4;

interface Plan {
  rounds: number;
  durationS: number;
  warmupS: number;
  users: number;
}

// Five rounds: on this shared machine one round in three lands far from the others; a median of five shrugs off two.
const FULL: Plan = { rounds: 5, durationS: 10, warmupS: 2, users: 1000 };
const QUICK: Plan = { rounds: 1, durationS: 1, warmupS: 0.3, users: 1000 };

interface Case {
  id: 'hot' | 'spread';
  label: string;
  tokens: string[];
}

interface Measured extends LoadResult {
  /** CPU time of the server process per response, µs: steadier than req/s on a shared machine. */
  cpuPerRequest: number;
}

interface Server {
  name: 'bare' | 'own';
  url: string;
  child: BenchChild;
}

async function startChild(file: string, env: Record<string, string> = {}): Promise<{ child: BenchChild; url: string }> {
  const child = forkTs(new URL(file, import.meta.url), { env });
  try {
    const ready = await child.next<{ type: string; url: string }>((m) => m.type === 'ready', 60_000);
    return { child, url: ready.url };
  } catch (err) {
    await child.stop();
    throw err;
  }
}

/** Throws unless every response of a run was a generated id. */
function assertClean(server: Server, c: Case, what: string, r: LoadResult): void {
  const bad = r.non2xx + r.errors + r.mismatches;
  if (bad === 0) return;
  throw new Error(
    `mutation bench: the ${server.name === 'own' ? 'API' : 'bare yoga server'} answered ${bad} bad response(s) ` +
      `during ${what} (${c.label}): ${r.non2xx} non-2xx, ${r.errors} connection errors/timeouts, ` +
      `${r.mismatches} without a generated id; first bad body: ${r.firstBadBody ?? '(none)'}`,
  );
}

async function assertSample(server: Server, token: string, when: string): Promise<void> {
  const s = await sampleRequest(server.url, token);
  if (!s.ok) throw new Error(`mutation bench: ${server.name} ${when}: HTTP ${s.status} ${s.body.slice(0, 500)}`);
}

export async function runMutationScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const plan = ctx.quick ? QUICK : FULL;
  const prefix = `bench-mut-${randomBytes(4).toString('hex')}`;
  let tdb: TestDatabase | undefined;
  /** Every child started, for the clean-up. */
  const children: BenchChild[] = [];
  const start = async (name: Server['name'], file: string, env?: Record<string, string>): Promise<Server> => {
    const started = await startChild(file, env);
    children.push(started.child);
    return { name, ...started };
  };
  // The bare server needs nothing: it starts while the database is made.
  const bareStarting = start('bare', './mutation/bare.child.ts');
  // Awaited below; this only keeps a failure while the database is being made from going unhandled.
  bareStarting.catch(() => undefined);
  try {
    tdb = await createTestDatabase({ adminUrl: ctx.adminDatabaseUrl, poolMax: 2 });
    const [hot] = await createUsers(tdb.db, { count: 1, credits: HOT_CREDITS, emailPrefix: 'hot' });
    const spread = await createUsers(tdb.db, { count: plan.users, credits: SPREAD_CREDITS, emailPrefix: 'spread' });
    const cases: Case[] = [
      { id: 'hot', label: 'one hot user', tokens: [hot!.token] },
      { id: 'spread', label: `${plan.users} users`, tokens: spread.map((u) => u.token) },
    ];
    const apiEnv: Record<string, string> = {
      NODE_ENV: 'production',
      LOG_LEVEL: 'silent',
      REDIS_URL: ctx.redisUrl,
      REDIS_PREFIX: prefix,
      DATABASE_URL: tdb.url,
      HOST: '127.0.0.1',
      PORT: '0',
      FILES_URL_SECRET: randomBytes(32).toString('hex'),
      ...BENCH_LIMITS_ENV,
      // No worker runs, so the hot user's generations pile up by the ten thousand, a state the
      // limit exists to prevent: counting them on every request would measure that, not the limit
      // (over the partial index a user's count is a few entries; see README "Abuse limits").
      MAX_UNFINISHED_GENERATIONS_PER_USER: '0',
    };
    const profile = process.env.BENCH_MUTATION_CPU_PROFILE;
    const own = await start('own', './mutation/api.child.ts', {
      BENCH_API_ENV: JSON.stringify(apiEnv),
      ...(profile ? { BENCH_CPU_PROFILE: profile } : {}),
    });
    const bare = await bareStarting;
    const servers: Server[] = [bare, own];
    ctx.log(`  mutation: API ${own.url}, bare yoga ${bare.url}; ${plan.rounds} round(s) of ${plan.durationS} s per case`);

    let ownGenerated = 0;
    const measured = new Map<string, Measured[]>();
    for (const c of cases) {
      for (const s of servers) {
        await assertSample(s, c.tokens[0]!, `before ${c.label}`);
        // The API sees every token once before measuring: its token cache is warm, as it is for users
        // who send more than one request per AUTH_CACHE_TTL_MS (a full run's warm-up does that anyway).
        const once = ctx.quick && s.name === 'own' && c.tokens.length > 1 ? { amount: c.tokens.length } : {};
        const w = await runLoad({ url: s.url, tokens: c.tokens, connections: CONNECTIONS, durationS: plan.warmupS, ...once });
        assertClean(s, c, 'the warm-up', w);
        if (s.name === 'own') ownGenerated += w.responses + 1;
      }
      for (let r = 0; r < plan.rounds; r++) {
        for (const s of servers) {
          const cpuBefore = await cpuMicros(s.child);
          const load = await runLoad({ url: s.url, tokens: c.tokens, connections: CONNECTIONS, durationS: plan.durationS });
          const res = { ...load, cpuPerRequest: ((await cpuMicros(s.child)) - cpuBefore) / Math.max(1, load.responses) };
          assertClean(s, c, `round ${r + 1}`, res);
          await assertSample(s, c.tokens[r % c.tokens.length]!, `after round ${r + 1} of ${c.label}`);
          if (s.name === 'own') ownGenerated += res.responses + 1;
          const key = `${c.id}/${s.name}`;
          measured.set(key, [...(measured.get(key) ?? []), res]);
          ctx.log(`  ${c.label}, round ${r + 1}, ${s.name}: ${Math.round(res.rps)} req/s, p50 ${res.p50} ms, p99 ${res.p99} ms, ${Math.round(res.cpuPerRequest)} µs CPU/req`);
        }
      }
    }

    const accounting = await checkAccounting(tdb, ctx.redisUrl, prefix, HOT_CREDITS + plan.users * SPREAD_CREDITS);
    if (accounting.generations < ownGenerated) {
      throw new Error(`mutation bench: ${ownGenerated} successful responses but only ${accounting.generations} generations in Postgres`);
    }

    const rows: Row[] = [];
    const targets: Target[] = [];
    for (const c of cases) {
      const b = measured.get(`${c.id}/bare`) ?? [];
      const o = measured.get(`${c.id}/own`) ?? [];
      for (const [name, runs] of [['bare graphql-yoga mutation', b], ['generateImage', o]] as const) {
        rows.push({
          label: `${name}, ${c.label}`,
          figures: {
            'req/s': Math.round(median(runs.map((x) => x.rps))),
            'p50 ms': round(median(runs.map((x) => x.p50))),
            'p99 ms': round(median(runs.map((x) => x.p99))),
            'server CPU µs/req': Math.round(median(runs.map((x) => x.cpuPerRequest))),
          },
        });
      }
      const rpsRatio = median(o.map((x, i) => x.rps / b[i]!.rps));
      const p99Ratio = median(o.map((x, i) => x.p99 / Math.max(1, b[i]!.p99)));
      targets.push(
        { description: `${c.label}: generateImage req/s ≥ ${TARGET_RPS_RATIO}× bare yoga's`, value: round(rpsRatio), bound: TARGET_RPS_RATIO, better: 'higher' },
        { description: `${c.label}: generateImage p99 ≤ ${TARGET_P99_RATIO}× bare yoga's`, value: round(p99Ratio), bound: TARGET_P99_RATIO, better: 'lower' },
      );
    }

    return {
      rows,
      targets,
      notes: [
        `${CONNECTIONS} connections, ${plan.rounds} round(s) of ${plan.durationS} s per server and case after a warm-up (${plan.warmupS} s${ctx.quick ? '; the API gets one request per user' : ''}), alternating bare / own; figures are medians over rounds, ratios the median of each round's own/bare ratio. Server CPU is the server process's user + system time per response.`,
        `Many users: ${plan.users} users with a token each, every connection cycling through its own ${plan.users / CONNECTIONS}; the API caches tokens for AUTH_CACHE_TTL_MS (30 s), so a full run also looks each token up again every 30 s.`,
        `The document: \`mutation($input: GenerateImageInput!){ generateImage(input:$input){ id status } }\` with a 512×512, 20-step input; the bare server takes the same document and returns a constant.`,
        `The API: NODE_ENV=production, LOG_LEVEL=silent, default pool and cache settings, its own database; no worker runs, so ${accounting.generations} jobs piled up in Redis (deleted afterwards).`,
        `Checked: every response was a generated id (no non-2xx, no GraphQL errors); credits left + reserved = credits given; one queued job per row.`,
      ],
    };
  } finally {
    await bareStarting.catch(() => undefined);
    await Promise.allSettled(children.map((c) => c.stop()));
    const cleanup = await Promise.allSettled([tdb?.drop(), deleteRedisPrefix(ctx.redisUrl, prefix)]);
    for (const c of cleanup) if (c.status === 'rejected') ctx.log(`  mutation: clean-up failed: ${String(c.reason)}`);
  }
}

/**
 * Every credit accounted for and one waiting job per generation; returns the number of generations.
 * Requests the load abandoned at the end of a run may still be finishing: wait until the counts
 * settle (a few seconds at most) before comparing them.
 */
async function checkAccounting(tdb: TestDatabase, redisUrl: string, prefix: string, creditsGiven: number): Promise<{ generations: number }> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 3 });
  try {
    const deadline = Date.now() + 5000;
    for (;;) {
      const row = (await tdb.db.first(
        tdb.db.raw('(SELECT sum(photo_credits)::bigint FROM users) AS left_'),
        tdb.db.raw('(SELECT min(photo_credits) FROM users) AS lowest'),
        tdb.db.raw('(SELECT coalesce(sum(credits_reserved), 0)::bigint FROM generations) AS reserved'),
        tdb.db.raw('(SELECT count(*)::int FROM generations) AS generations'),
        tdb.db.raw(`(SELECT count(*)::int FROM generations WHERE status <> 'QUEUED' OR refunded_at IS NOT NULL) AS other`),
      )) as { left_: number; lowest: number; reserved: number; generations: number; other: number };
      if (row.lowest < 0 || row.left_ + row.reserved !== creditsGiven || row.other !== 0) {
        throw new Error(`mutation bench: credits do not add up: ${JSON.stringify(row)}, given ${creditsGiven}`);
      }
      const waiting = await redis.llen(`${prefix}:high_priority:waiting`);
      if (waiting === row.generations) return { generations: row.generations };
      if (Date.now() > deadline) throw new Error(`mutation bench: ${row.generations} generations but ${waiting} waiting jobs`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } finally {
    redis.disconnect();
  }
}

export const scenario: Scenario = {
  id: 'mutation',
  title: 'generateImage under load vs a bare graphql-yoga mutation (50 connections)',
  run: runMutationScenario,
};
