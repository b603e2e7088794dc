/**
 * Scenario 5: post-processing 1024×1024 PNGs (strip metadata, WebP, thumbnail, blurhash, sha256)
 * in the Piscina pool against the same function on the main thread, like for like: the same images
 * with the same number in flight on both sides, and the main thread's event-loop lateness while
 * each runs. The pool is not there for throughput (libvips works off the event loop either way) but
 * to keep the worker's event loop free: the targets say so.
 *
 * Two processes (./postprocess/child.ts) measure side by side, taking turns: one with the worker's
 * default POSTPROCESS_NICE (the pool's and libvips' threads below the event loop), one with 0 (as
 * before that setting). The targets are the default's; the other is the before figure. Meanwhile
 * this process probes its own idle event loop too: a bystander that shares only the CPUs with the
 * measuring process, which tells the machine's share of the lateness from the worker's own.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { envDefaults } from '../../src/config';
import { renderPicture } from '../../src/sd/simulator/picture';
import { encodePng } from '../../src/sd/simulator/png';
import { forkTs, type BenchChild } from '../lib/processes';
import { median, round } from '../lib/stats';
import type { Scenario } from '../lib/types';
import type { Measured, Way } from './postprocess/child';
import { probeLateness } from './postprocess/lateness';

const SIZE = 1024;
const THREADS = 2;
const WAYS: Way[] = ['pool', 'main'];

interface Side {
  nice: number;
  child: BenchChild;
  runs: Record<Way, Measured[]>;
  /** This process's own event-loop lateness p99 while the child measured each way: a bystander's. */
  bystanderLateP99: Record<Way, number[]>;
  idleLateP99: number[];
  /** This process's own lateness p99 meanwhile. */
  bystanderIdleLateP99: number[];
}

export const scenario: Scenario = {
  id: 'postprocess',
  title: 'Post-processing 1024×1024 PNGs: Piscina pool vs the main thread',
  async run(ctx) {
    const count = ctx.quick ? 6 : 24;
    // Five rounds: throughput and lateness move by a tenth from one round to the next on this shared machine.
    const rounds = ctx.quick ? 1 : 5;
    const defaultNice = envDefaults().POSTPROCESS_NICE as number;
    const dir = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-bench-postprocess-'));
    const sides: Side[] = [];
    try {
      // Half-denoised pictures: noisy like real model output, so PNG decoding and WebP encoding work as hard.
      for (let i = 0; i < count; i++) {
        const png = encodePng(SIZE, SIZE, renderPicture({ prompt: `benchmark ${i}`, seed: i }, SIZE, SIZE, 0.6), [
          { keyword: 'parameters', text: `benchmark ${i}\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: ${i}, Size: 1024x1024` },
        ]);
        await writeFile(path.join(dir, `${String(i).padStart(3, '0')}.png`), png);
      }
      for (const nice of [defaultNice, 0]) {
        const child = forkTs(new URL('./postprocess/child.ts', import.meta.url), {
          env: { BENCH_POSTPROCESS_IMAGES: dir, BENCH_POSTPROCESS_NICE: String(nice), BENCH_POSTPROCESS_THREADS: String(THREADS) },
        });
        sides.push({ nice, child, runs: { pool: [], main: [] }, bystanderLateP99: { pool: [], main: [] }, idleLateP99: [], bystanderIdleLateP99: [] });
        await child.next<{ type: string }>((m) => m.type === 'ready', 300_000);
      }
      for (let r = 0; r < rounds; r++) {
        // The two processes take turns, in the other order each round.
        for (const side of r % 2 === 0 ? sides : [...sides].reverse()) {
          for (const way of WAYS) {
            ctx.log(`  round ${r + 1}/${rounds}: POSTPROCESS_NICE=${side.nice}, ${way}`);
            // Meanwhile this process, which shares nothing with the child but the CPUs, probes its own
            // idle event loop: what the child's work does to any loop on the machine.
            const stopBystander = probeLateness();
            side.child.send({ type: 'measure', way, count });
            const { result } = await side.child.next<{ type: string; result: Measured }>((m) => m.type === 'measured', 600_000);
            side.runs[way].push(result);
            side.bystanderLateP99[way].push(stopBystander().lateP99Ms);
          }
          // The measure's own floor: this process's event loop with nothing to do, as long as a pool run.
          const stopIdleBystander = probeLateness();
          side.child.send({ type: 'idle', seconds: side.runs.pool.at(-1)!.seconds });
          side.idleLateP99.push((await side.child.next<{ type: string; lateP99Ms: number }>((m) => m.type === 'idle')).lateP99Ms);
          side.bystanderIdleLateP99.push(stopIdleBystander().lateP99Ms);
        }
      }
    } finally {
      await Promise.all(sides.map((s) => s.child.stop(30_000)));
      await rm(dir, { recursive: true, force: true });
    }

    const figures = (list: Measured[], bystander: number[]) => ({
      'images/s': round(median(list.map((m) => m.imagesPerSecond))),
      'event-loop lateness p99 ms': round(median(list.map((m) => m.lateP99Ms)), 2),
      'event-loop lateness max ms': round(median(list.map((m) => m.lateMaxMs)), 1),
      'event-loop busy %': round(median(list.map((m) => m.elu * 100)), 1),
      'bystander process lateness p99 ms': round(median(bystander), 2),
    });
    /** The median over rounds of pool/main within one process and round. */
    const ratio = (side: Side, of: (m: Measured) => number) =>
      round(median(side.runs.pool.map((m, i) => of(m) / Math.max(of(side.runs.main[i]!), 0.001))));
    const [after, before] = sides as [Side, Side];
    const label = (side: Side, way: Way) =>
      `${way === 'pool' ? `Piscina pool, ${THREADS} threads` : 'main thread'}, ${THREADS} images in flight, POSTPROCESS_NICE=${side.nice}${side.nice === defaultNice ? ' (default)' : ''}`;
    const poolAfter = figures(after.runs.pool, after.bystanderLateP99.pool);
    const mainAfter = figures(after.runs.main, after.bystanderLateP99.main);
    /** The median over rounds of the bystander's lateness during the pool runs / the worker's own during the main-thread runs. */
    const bystanderRatio = round(median(after.bystanderLateP99.pool.map((b, i) => b / Math.max(after.runs.main[i]!.lateP99Ms, 0.001))));
    const idle = round(median(after.idleLateP99), 2);
    return {
      rows: sides.flatMap((side) => WAYS.map((way) => ({ label: label(side, way), figures: figures(side.runs[way], side.bystanderLateP99[way]) }))),
      targets: [
        {
          description: `pool throughput ≥ 0.95× the main thread's, ${THREADS} images in flight on both`,
          value: ratio(after, (m) => m.imagesPerSecond),
          bound: 0.95,
          better: 'higher',
        },
        {
          description: "worker's event-loop lateness p99 with the pool ≤ 0.2× the main thread's (same images in flight)",
          value: ratio(after, (m) => m.lateP99Ms),
          bound: 0.2,
          better: 'lower',
        },
        {
          description: "worker's event-loop busy time with the pool ≤ 0.2× the main thread's (same images in flight)",
          value: ratio(after, (m) => m.elu),
          bound: 0.2,
          better: 'lower',
        },
      ],
      notes: [
        `${count} distinct ${SIZE}×${SIZE} PNGs (noisy, with A1111's parameters text chunk), ${rounds} round(s); the two ways alternate within each process, and the two processes (POSTPROCESS_NICE=${defaultNice}, the default, and 0) take turns. Figures are medians; a ratio is the median over rounds of pool / main thread within one process and round.`,
        `Each way runs twice per round: once with the delay probe, for the event-loop lateness (monitorEventLoopDelay samples the time between two ticks of a 1 ms timer; lateness is that minus the 1 ms period, what the event loop owed its timers, as @fastify/under-pressure reports it), and once without it, for throughput and busy time (the probe's timer wakes the loop a thousand times a second, which would count as busy time on both sides). Each input is copied before the clock starts (the pool takes its bytes), so the harness's copying is not counted on either side.`,
        `Like for like: ${THREADS} images in flight on both sides. The work is mostly inside libvips, which runs off the event loop either way, so throughput is about the same. What the pool adds: none of the JavaScript part (decoding checks, blurhash, hashing, copies) runs on the worker's event loop (busy ${poolAfter['event-loop busy %']}% against ${mainAfter['event-loop busy %']}%), and its threads and libvips' run at nice ${defaultNice}, so the loop waits less for a core when it wakes (lateness p99 ${poolAfter['event-loop lateness p99 ms']} ms against ${mainAfter['event-loop lateness p99 ms']} ms).`,
        `Before POSTPROCESS_NICE (the same in a process at 0, measured in the same rounds): lateness p99 ${ratio(before, (m) => m.lateP99Ms)}× the main thread's, throughput ${ratio(before, (m) => m.imagesPerSecond)}×, busy time ${ratio(before, (m) => m.elu)}×. With more images in flight than cores, libvips keeps every core busy and the event loop waits for one each time it wakes, whichever thread started the work.`,
        `A bystander: while each way ran (both its passes), the bench process, which shares nothing with the measuring process but the machine's CPUs, probed its own idle event loop the same way (late by ${round(median(after.bystanderIdleLateP99), 2)} ms at p99 while nothing ran). During the pool runs it was late by ${poolAfter['bystander process lateness p99 ms']} ms at p99, against ${poolAfter['event-loop lateness p99 ms']} ms for the pool process's own loop, and ${bystanderRatio}× the main-thread runs' lateness. ${
          poolAfter['bystander process lateness p99 ms'] >= poolAfter['event-loop lateness p99 ms']
            ? 'A loop with no work of its own was as late as the worker\'s, or later: what is left of the pool\'s figure is how the kernel shares the CPUs between libvips\' threads and any loop that wakes, not work on the worker\'s loop (README, Performance).'
            : poolAfter['bystander process lateness p99 ms'] >= 0.8 * poolAfter['event-loop lateness p99 ms']
              ? 'A loop with no work of its own was almost as late as the worker\'s: most of what is left of the pool\'s figure is how the kernel shares the CPUs between libvips\' threads and any loop that wakes (README, Performance).'
              : 'The worker\'s own loop was later than a loop with no work of its own: part of its lateness is its own work.'
        }`,
        `The measure's floor: the same process's event loop with nothing to do is late by ${idle} ms at p99 (${round(idle / Math.max(mainAfter['event-loop lateness p99 ms'], 0.001))}× the main thread's lateness).`,
        `In the default process libvips' threads are at nice ${defaultNice} for the main-thread runs too (they belong to the process), so its main-thread figures are the stricter comparison.`,
      ],
    };
  },
};
