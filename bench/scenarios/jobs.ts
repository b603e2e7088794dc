/**
 * Scenario 1, job layer throughput: no-op jobs through the project's own job layer (the wrapper
 * real jobs run in, with state tracking, time limits and metrics) against raw Bee-Queue and BullMQ,
 * at worker concurrency 2 and 20. For each measurement a producer child fills a fresh queue (its own
 * Redis prefix) in bulk, then a worker child drains it; jobs/s is counted from the worker's first
 * job to its last. The systems take turns within each round; a system's figure is its median over
 * the rounds, a ratio the median of the ratios within each round.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { forkTs, type BenchChild } from '../lib/processes';
import { deleteKeys } from '../lib/redisKeys';
import { median, round } from '../lib/stats';
import type { BenchContext, Row, Scenario, ScenarioResult, Target } from '../lib/types';
import { isMessage, SYSTEMS, type FromProducer, type FromWorker, type SystemId, type ToProducer, type ToWorker } from './jobs/systems';

export interface JobsBenchOptions {
  jobs: number;
  rounds: number;
  systems: SystemId[];
  concurrencies: readonly number[];
}

interface Measurement {
  jobsPerS: number;
  enqueuePerS: number;
  cpuUsPerJob: number;
}

type Done = Extract<FromWorker, { type: 'done' }>;

const WARM_UP_JOBS = 500;

/** Rotates the systems so that none always runs first (or right after the same neighbour). */
const rotate = <T>(xs: readonly T[], by: number): T[] => xs.map((_, i) => xs[(i + by) % xs.length]!);

/** A worker child for one system, loaded and waiting for `prepare`. */
async function spawnWorker(ctx: BenchContext, system: SystemId): Promise<BenchChild> {
  const worker = forkTs(new URL('./jobs/worker.ts', import.meta.url), { args: [`--system=${system}`], env: { BENCH_REDIS_URL: ctx.redisUrl } });
  try {
    await worker.next(isMessage<FromWorker>('up'), 60_000);
    return worker;
  } catch (err) {
    await worker.stop();
    throw err;
  }
}

async function stopWorker(worker: BenchChild): Promise<void> {
  if (worker.child.connected) {
    const closed = worker.next(isMessage<FromWorker>('closed'), 30_000).catch(() => undefined);
    worker.send({ type: 'close' } satisfies ToWorker);
    await closed;
  }
  await worker.stop();
}

async function measure(
  producer: BenchChild,
  worker: BenchChild,
  system: SystemId,
  concurrency: number,
  prefix: string,
  jobs: number,
): Promise<Measurement & { done: Done }> {
  // The worker connects to its queue before the queue is filled, and drains it alone: neither
  // start-up nor the producer competes with the drain for the two cores.
  const ready = worker.next(isMessage<FromWorker>('ready'), 60_000);
  worker.send({ type: 'prepare', prefix, concurrency, jobs } satisfies ToWorker);
  await ready;
  const filled = producer.next<Extract<FromProducer, { type: 'filled' }>>(isMessage('filled'), 120_000);
  producer.send({ type: 'fill', system, prefix, jobs } satisfies ToProducer);
  const { seconds: fillSeconds } = await filled;
  const done = worker.next<Done>(isMessage('done'), Math.max(60_000, jobs * 10));
  worker.send({ type: 'start' } satisfies ToWorker);
  const result = await done;
  const released = worker.next(isMessage<FromWorker>('released'), 30_000);
  worker.send({ type: 'release' } satisfies ToWorker);
  await released;
  if (result.jobs !== jobs) throw new Error(`${system}: ${result.jobs} of ${jobs} jobs ran`);
  if ((system === 'own' || system === 'own-bee') && result.counted !== jobs) throw new Error(`${system}: ${result.counted} jobs counted in Redis for ${jobs} jobs`);
  return { jobsPerS: jobs / result.seconds, enqueuePerS: jobs / fillSeconds, cpuUsPerJob: result.cpuUsPerJob, done: result };
}

/**
 * Each worker drains one small queue, all at the same time and unmeasured, so that no measurement
 * is the one that compiles the code (a quick run's 1,000 jobs are over in well under a second).
 */
async function warmUp(producer: BenchChild, workers: Map<SystemId, BenchChild>, prefixOf: (s: SystemId) => string, jobs: number): Promise<void> {
  const entries = [...workers.entries()];
  for (const [system, worker] of entries) {
    const prefix = prefixOf(system);
    const ready = worker.next(isMessage<FromWorker>('ready'), 60_000);
    worker.send({ type: 'prepare', prefix, concurrency: 20, jobs } satisfies ToWorker);
    await ready;
    const filled = producer.next(isMessage<FromProducer>('filled'), 60_000);
    producer.send({ type: 'fill', system, prefix, jobs } satisfies ToProducer);
    await filled;
  }
  await Promise.all(
    entries.map(async ([, worker]) => {
      const done = worker.next(isMessage<FromWorker>('done'), 60_000);
      worker.send({ type: 'start' } satisfies ToWorker);
      await done;
      const released = worker.next(isMessage<FromWorker>('released'), 30_000);
      worker.send({ type: 'release' } satisfies ToWorker);
      await released;
    }),
  );
}

/** The scenario with explicit sizes (the scenario picks them from the mode; handy for trying one system). */
export async function runJobsBench(ctx: BenchContext, opts: JobsBenchOptions): Promise<ScenarioResult> {
  const { jobs, rounds, systems, concurrencies } = opts;
  const t0 = performance.now();
  const root = `benchjobs${randomBytes(4).toString('hex')}`;
  const redis = new Redis(ctx.redisUrl);
  const results = new Map<string, Measurement[]>();
  const keyOf = (s: SystemId, c: number) => `${s}@${c}`;
  const ownFlushes: number[] = [];
  const ownCalls = new Map<number, number[]>();
  const producer = forkTs(new URL('./jobs/producer.ts', import.meta.url), { env: { BENCH_REDIS_URL: ctx.redisUrl } });
  const producerReady = producer.next(isMessage<FromProducer>('ready'), 60_000);
  producerReady.catch(() => undefined); // awaited below; a failure there must not go unhandled meanwhile
  // One worker process per system, started together up front and reused for all its measurements:
  // start-up (tsx, modules) would otherwise be most of a quick run, and every system is treated alike.
  const workers = new Map<SystemId, BenchChild>();
  let n = 0;
  try {
    const started = await Promise.allSettled(systems.map((s) => spawnWorker(ctx, s)));
    started.forEach((w, i) => w.status === 'fulfilled' && workers.set(systems[i]!, w.value));
    const failed = started.find((w) => w.status === 'rejected');
    if (failed) throw failed.reason;
    await producerReady;
    try {
      await warmUp(producer, workers, (s) => `${root}:warm-${s}`, WARM_UP_JOBS);
    } finally {
      await deleteKeys(redis, `${root}:warm-*`);
    }
    ctx.log(`  ${systems.length} worker processes and the producer started and warmed up in ${round((performance.now() - t0) / 1000, 1)} s`);
    for (let r = 0; r < rounds; r++) {
      for (const [ci, concurrency] of concurrencies.entries()) {
        for (const system of rotate(systems, r + ci)) {
          const prefix = `${root}:${n++}`;
          const worker = workers.get(system)!;
          try {
            const m = await measure(producer, worker, system, concurrency, prefix, jobs);
            const list = results.get(keyOf(system, concurrency)) ?? [];
            list.push(m);
            results.set(keyOf(system, concurrency), list);
            if (system === 'own' && m.done.flushes) ownFlushes.push(m.done.flushes);
            if (system === 'own' && m.done.calls) ownCalls.set(concurrency, [...(ownCalls.get(concurrency) ?? []), m.done.calls]);
            ctx.log(`  round ${r + 1}/${rounds}, concurrency ${concurrency}, ${system}: ${Math.round(m.jobsPerS)} jobs/s, worker CPU ${round(m.cpuUsPerJob, 1)} µs/job (enqueue ${Math.round(m.enqueuePerS)} jobs/s)`);
          } finally {
            await deleteKeys(redis, `${prefix}:*`);
          }
        }
      }
    }
  } finally {
    await Promise.all([...workers.values()].map(stopWorker));
    const closed = producer.next(isMessage<FromProducer>('closed'), 10_000).catch(() => undefined);
    if (producer.child.connected) producer.send({ type: 'close' } satisfies ToProducer);
    await closed;
    await producer.stop();
    await deleteKeys(redis, `${root}:*`);
    redis.disconnect();
  }

  const listOf = (s: SystemId, c: number) => results.get(keyOf(s, c)) ?? [];
  const med = (s: SystemId, c: number, f: keyof Measurement) => median(listOf(s, c).map((m) => m[f]));
  // A ratio is taken within each round, where the two systems ran back to back (a burst of someone
  // else's load hits both alike), and the median over the rounds is reported.
  const ratio = (a: SystemId, b: SystemId, c: number) => {
    const bs = listOf(b, c);
    return median(listOf(a, c).flatMap((m, r) => (bs[r] ? [m.jobsPerS / bs[r].jobsPerS] : [])));
  };
  const rows: Row[] = [];
  const targets: Target[] = [];
  const ofMedians: string[] = [];
  for (const c of concurrencies) {
    for (const s of systems) {
      const list = listOf(s, c);
      const figures: Record<string, number> = {
        'jobs/s (median)': Math.round(med(s, c, 'jobsPerS')),
        'min jobs/s': Math.round(Math.min(...list.map((m) => m.jobsPerS))),
        'max jobs/s': Math.round(Math.max(...list.map((m) => m.jobsPerS))),
        'worker CPU µs/job': round(med(s, c, 'cpuUsPerJob'), 1),
        'enqueue jobs/s': Math.round(med(s, c, 'enqueuePerS')),
      };
      if (s === 'own' || s === 'own-bee') {
        figures['× raw Bee-Queue'] = round(ratio(s, 'bee', c));
        figures['× BullMQ'] = round(ratio(s, 'bullmq', c));
      }
      rows.push({ label: `${SYSTEMS[s]}, concurrency ${c}`, figures });
    }
    targets.push(
      { description: `own job layer ≥ 0.8× raw Bee-Queue (concurrency ${c})`, value: round(ratio('own', 'bee', c)), bound: 0.8, better: 'higher' },
      { description: `own job layer ≥ 1.2× BullMQ (concurrency ${c})`, value: round(ratio('own', 'bullmq', c)), bound: 1.2, better: 'higher' },
    );
    ofMedians.push(`concurrency ${c}: ${round(med('own', c, 'jobsPerS') / med('bee', c, 'jobsPerS'))}× raw Bee-Queue, ${round(med('own', c, 'jobsPerS') / med('bullmq', c, 'jobsPerS'))}× BullMQ`);
  }

  const notes = [
    `${jobs.toLocaleString('en')} no-op jobs per measurement; ${rounds} round(s) × ${systems.length} systems × concurrency ${concurrencies.join(' and ')}. Within a round the systems take turns (the order rotates from one round and concurrency to the next); the median per system is reported. A ratio ("× raw Bee-Queue", targets) is the median over the rounds of the ratio within each round, where the two systems ran back to back. The machine is shared and noisy: compare the ratios, not the absolute figures.`,
    `Producer and worker are separate child processes. For each measurement the worker connects to a fresh queue (its own Redis prefix, deleted afterwards), the producer fills it in bulk (Bee-Queue saveAll, BullMQ addBulk, 5,000 jobs per call), then the worker drains it alone. jobs/s runs from the first job's start to the last job's end in the worker; "worker CPU" is that process's CPU time over the same span; the enqueue rate is context only. Each system has one worker process, started before the first measurement and reused (connecting to each new queue), so start-up is never measured and all systems are treated alike.`,
    'All systems get the same jobs: the envelope {kind: "generateImage", payload: {generationId}} with a UUID job id. Bee-Queue jobs carry what JobProducer sets (retries, fixed backoff, a timeout); BullMQ jobs attempts, fixed backoff, removeOnComplete/removeOnFail.',
    "Raw Bee-Queue: the project's queue settings (createQueue: removeOnSuccess/Failure, no events, no stored jobs) and a no-op handler on queue.process(). Per job Bee-Queue itself does BRPOPLPUSH, HGET, SREM (stall guard) and MULTI LREM/SREM/HDEL: three round trips to Redis, plus a stall-guard timer and a timeout timer.",
    'Own layer: JobConsumer (src/jobs/consumer.ts) on the same Bee-Queue keys, createJobHandler and the JobOutcomeTracker exactly as workers/worker.ts builds them, a no-op processor registered as generateImage. The consumer makes one Lua call per batch: it finishes every job that ended since the last call and takes as many waiting jobs as there are free slots, with their records; stall guarding is one call per half stall interval for all running jobs, not a timer per job. Per job the wrapper adds one time-limit timer (soft, then hard), abort signals and a log child only if the processor asks for them, metrics, and an active and an end state handed to the tracker without waiting. The tracker counts the ends in memory and writes what has accumulated at most every JOB_STATE_FLUSH_MS (20 ms): one Lua call adding the counts to the totals of the queue and to the hash of this minute, however many jobs ended. The timed span includes writing the last counts; afterwards the scenario checks that every job was counted in Redis.',
    `BullMQ: a Worker with a no-op processor, stalledInterval = STALL_INTERVAL_MS, otherwise defaults (Lua moveToActive / moveToFinished, which also fetches the next job, lock renewal, the events stream).${systems.includes('own-bee') ? " \"On Bee-Queue's process() loop (before)\": the same wrapper and tracker run by Bee-Queue's own loop, which the worker used before JobConsumer; measured in the same run." : ''}`,
  ];
  if (rounds > 1) notes.push(`The own layer's ratios taken between the medians instead: ${ofMedians.join('; ')}.`);
  const callsNote = concurrencies
    .filter((c) => ownCalls.get(c)?.length)
    .map((c) => {
      const calls = median(ownCalls.get(c)!);
      return `concurrency ${c}: ${Math.round(calls)} (${round(jobs / calls, 1)} jobs per call)`;
    });
  if (callsNote.length) notes.push(`Own layer: consumer calls (finish + take) per ${jobs.toLocaleString('en')} jobs, median: ${callsNote.join('; ')}.`);
  if (ownFlushes.length) notes.push(`Own layer: ${Math.round(median(ownFlushes))} tracker writes per ${jobs.toLocaleString('en')} jobs (median), about ${round(jobs / median(ownFlushes), 0)} jobs per write.`);
  if (ctx.quick) notes.push('Quick mode: one small round; the ratios are indicative only.');
  return { rows, targets, notes };
}

export const scenario: Scenario = {
  id: 'jobs',
  title: 'Job layer throughput: own layer vs raw Bee-Queue vs BullMQ (no-op jobs)',
  run: (ctx) =>
    runJobsBench(ctx, {
      jobs: ctx.quick ? 1000 : 20_000,
      // Five rounds: the machine is shared; a median of five shrugs off two disturbed rounds.
      rounds: ctx.quick ? 1 : 5,
      // The wrapper on Bee-Queue's own loop only in full runs, as the "before" of the consumer.
      systems: ctx.quick ? ['own', 'bee', 'bullmq'] : ['own', 'bee', 'bullmq', 'own-bee'],
      concurrencies: [2, 20],
    }),
};
