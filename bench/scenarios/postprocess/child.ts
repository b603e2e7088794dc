/**
 * One side of the post-processing scenario in a process of its own: a PostprocessPool at the nice
 * value it is given (BENCH_POSTPROCESS_NICE) and the same function on this process's main thread.
 * libvips' threads belong to the process and a lowered priority cannot be raised again without
 * privilege, so each nice value needs its own process for its figures to be its own.
 *
 * Told over IPC: `{ type: 'measure', way, images }` runs one measurement and answers
 * `{ type: 'measured', result }`; `{ type: 'idle', seconds }` answers `{ type: 'idle', lateP99Ms }`.
 * Reports `{ type: 'ready' }` once warmed up; SIGTERM closes the pool.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { PostprocessPool } from '../../../src/imaging/pool';
import { configureSharp, postprocessImage } from '../../../src/imaging/transform';
import { report } from '../../lib/processes';
import { probeLateness, type Lateness } from './lateness';

export const WEBP_QUALITY = 90;
export const THUMBNAIL_SIZE = 256;

export type Way = 'pool' | 'main';

export interface Measured {
  /** From the pass without the delay probe. */
  imagesPerSecond: number;
  /** p99 of how late the loop's 1 ms timer fired: the sampled interval minus the period (the probed pass). */
  lateP99Ms: number;
  lateMaxMs: number;
  /**
   * Share of the wall time the event loop was busy (event-loop utilization), from the pass without
   * the probe: the probe's own timer wakes the loop a thousand times a second, which would count.
   */
  elu: number;
  /** Of the pass without the probe. */
  seconds: number;
}

interface Pass {
  seconds: number;
  elu: number;
  eld?: Lateness;
}

const dir = process.env.BENCH_POSTPROCESS_IMAGES!;
const nice = Number(process.env.BENCH_POSTPROCESS_NICE ?? '0');
const threads = Number(process.env.BENCH_POSTPROCESS_THREADS ?? '2');
const images = readdirSync(dir)
  .sort()
  .map((f) => readFileSync(join(dir, f)));

/** The lateness p99 (ms) of this process's event loop doing nothing for `seconds`. */
async function idle(seconds: number): Promise<number> {
  const stop = probeLateness();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  return stop().lateP99Ms;
}

/** Runs `work` over every image with `inFlight` at a time, timing it and the event loop; `probe`: its lateness too. */
async function pass(list: Buffer[], inFlight: number, work: (png: Buffer) => Promise<unknown>, probe: boolean): Promise<Pass> {
  // A fresh copy of each input (the pool takes ownership of, transfers, the bytes it is given),
  // made before the clock starts: preparing inputs is the harness's work, not post-processing's.
  const inputs = list.map((png) => Buffer.from(png));
  const elu = performance.eventLoopUtilization();
  const started = performance.now();
  const stopProbe = probe ? probeLateness() : undefined;
  let next = 0;
  const lane = async () => {
    while (next < inputs.length) await work(inputs[next++]!);
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  const eld = stopProbe?.();
  return { seconds: (performance.now() - started) / 1000, elu: performance.eventLoopUtilization(elu).utilization, eld };
}

/** One pass with the delay probe (lateness), one without (throughput and busy time). */
async function measure(list: Buffer[], inFlight: number, work: (png: Buffer) => Promise<unknown>): Promise<Measured> {
  const probed = await pass(list, inFlight, work, true);
  const plain = await pass(list, inFlight, work, false);
  return {
    imagesPerSecond: list.length / plain.seconds,
    lateP99Ms: probed.eld!.lateP99Ms,
    lateMaxMs: probed.eld!.lateMaxMs,
    elu: plain.elu,
    seconds: plain.seconds,
  };
}

const pool = PostprocessPool.create({ threads, maxTasksPerThread: 1_000_000, webpQuality: WEBP_QUALITY, thumbnailSize: THUMBNAIL_SIZE, nice });
// The same libvips settings the pool threads use (one libvips thread per operation, no cache).
configureSharp();
const onMain = (png: Buffer) => postprocessImage({ kind: 'postprocess', png, webpQuality: WEBP_QUALITY, thumbnailSize: THUMBNAIL_SIZE });
const ways: Record<Way, { inFlight: number; work: (png: Buffer) => Promise<unknown> }> = {
  pool: { inFlight: threads, work: (png) => pool.process(png) },
  main: { inFlight: threads, work: onMain },
};

process.on('SIGTERM', () => {
  void pool.close().finally(() => process.exit(0));
});
process.on('message', (m: { type: 'measure'; way: Way; count: number } | { type: 'idle'; seconds: number }) => {
  void (async () => {
    if (m.type === 'idle') report({ type: 'idle', lateP99Ms: await idle(m.seconds) });
    else report({ type: 'measured', result: await measure(images.slice(0, m.count), ways[m.way].inFlight, ways[m.way].work) });
  })();
});

// Warm-up, one pass of each way: thread start-up (tsx in each thread), the JavaScript part's
// compilation in each thread and on this one, and libvips' threads (which the pool lowers after its
// first tasks at a nice value) are not what is measured.
await pass(images, threads, ways.pool.work, false);
await pass(images, threads, onMain, false);
report({ type: 'ready' });
