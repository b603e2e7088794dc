/**
 * Scenario 5: post-processing 1024×1024 PNGs (strip metadata, WebP, thumbnail, blurhash, sha256)
 * in the Piscina pool against the same function on the main thread, like for like: the same images
 * with the same number in flight on both sides, and the main thread's event-loop delay while each
 * runs. The pool is not there for throughput (libvips works off the event loop either way) but to
 * keep the worker's event loop free: the targets say so.
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { PostprocessPool } from '../../src/imaging/pool';
import { configureSharp, postprocessImage } from '../../src/imaging/transform';
import { renderPicture } from '../../src/sd/simulator/picture';
import { encodePng } from '../../src/sd/simulator/png';
import { median, round } from '../lib/stats';
import type { Scenario } from '../lib/types';

const SIZE = 1024;
const WEBP_QUALITY = 90;
const THUMBNAIL_SIZE = 256;

interface Measured {
  imagesPerSecond: number;
  eldP99Ms: number;
  eldMaxMs: number;
  /** Share of the wall time the event loop was busy running JavaScript (event-loop utilization). */
  elu: number;
  seconds: number;
}

/** The event-loop delay p99 (ms) of this process doing nothing for `seconds`. */
async function idleP99(seconds: number): Promise<number> {
  const eld = monitorEventLoopDelay({ resolution: 1 });
  eld.enable();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  eld.disable();
  return eld.percentile(99) / 1e6;
}

/** Runs `work` over every image with `inFlight` at a time, timing it and the event loop. */
async function measure(images: Buffer[], inFlight: number, work: (png: Buffer) => Promise<unknown>): Promise<Measured> {
  const eld = monitorEventLoopDelay({ resolution: 1 });
  const started = performance.now();
  const elu = performance.eventLoopUtilization();
  eld.enable();
  let next = 0;
  const lane = async () => {
    while (next < images.length) {
      const png = images[next++]!;
      // A fresh copy per run: the pool takes ownership of (transfers) the bytes it is given.
      await work(Buffer.from(png));
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  eld.disable();
  const busy = performance.eventLoopUtilization(elu).utilization;
  const seconds = (performance.now() - started) / 1000;
  return {
    imagesPerSecond: images.length / seconds,
    eldP99Ms: eld.percentile(99) / 1e6,
    eldMaxMs: eld.max / 1e6,
    elu: busy,
    seconds,
  };
}

export const scenario: Scenario = {
  id: 'postprocess',
  title: 'Post-processing 1024×1024 PNGs: Piscina pool vs the main thread',
  async run(ctx) {
    const count = ctx.quick ? 6 : 24;
    const rounds = ctx.quick ? 1 : 3;
    // Half-denoised pictures: noisy like real model output, so PNG decoding and WebP encoding work as hard.
    const images = Array.from({ length: count }, (_, i) =>
      encodePng(SIZE, SIZE, renderPicture({ prompt: `benchmark ${i}`, seed: i }, SIZE, SIZE, 0.6), [
        { keyword: 'parameters', text: `benchmark ${i}\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: ${i}, Size: 1024x1024` },
      ]),
    );
    const threads = 2;
    const pool = PostprocessPool.create({ threads, maxTasksPerThread: 1_000_000, webpQuality: WEBP_QUALITY, thumbnailSize: THUMBNAIL_SIZE });
    // The same libvips settings the pool threads use (one libvips thread per operation, no cache).
    configureSharp();
    const task = (png: Buffer) => ({ kind: 'postprocess' as const, png, webpQuality: WEBP_QUALITY, thumbnailSize: THUMBNAIL_SIZE });
    const systems: Record<string, { inFlight: number; work: (png: Buffer) => Promise<unknown> }> = {
      [`Piscina pool, ${threads} threads, ${threads} images in flight`]: { inFlight: threads, work: (png) => pool.process(png) },
      [`main thread, ${threads} images in flight`]: { inFlight: threads, work: (png) => postprocessImage(task(png)) },
      'main thread, one image at a time': { inFlight: 1, work: (png) => postprocessImage(task(png)) },
    };
    const results: Record<string, Measured[]> = Object.fromEntries(Object.keys(systems).map((k) => [k, []]));
    // The measure's own floor: an event loop with nothing to do (its 1 ms timer included), as long as a pool round.
    const idleDelays: number[] = [];
    try {
      // Warm-up: thread start-up (tsx in each thread) and sharp's first use are not what we measure.
      await measure(images.slice(0, threads * 2), threads * 2, (png) => pool.process(png));
      await measure(images.slice(0, 1), 1, (png) => postprocessImage(task(png)));
      for (let r = 0; r < rounds; r++) {
        for (const [name, s] of Object.entries(systems)) {
          ctx.log(`  round ${r + 1}/${rounds}: ${name}`);
          results[name]!.push(await measure(images, s.inFlight, s.work));
        }
        idleDelays.push(await idleP99(results[Object.keys(systems)[0]!]!.at(-1)!.seconds));
      }
    } finally {
      await pool.close();
    }
    const summary = Object.fromEntries(
      Object.entries(results).map(([name, list]) => [
        name,
        {
          'images/s': round(median(list.map((m) => m.imagesPerSecond))),
          'event-loop delay p99 ms': round(median(list.map((m) => m.eldP99Ms)), 1),
          'event-loop delay max ms': round(median(list.map((m) => m.eldMaxMs)), 1),
          'event-loop busy %': round(median(list.map((m) => m.elu * 100)), 1),
        },
      ]),
    );
    const [poolName, mainName, oneName] = Object.keys(systems) as [string, string, string];
    const pool_ = summary[poolName]!;
    const main = summary[mainName]!;
    const idle = round(median(idleDelays), 1);
    return {
      rows: Object.entries(summary).map(([label, figures]) => ({ label, figures })),
      targets: [
        {
          description: `pool throughput ≥ 0.95× the main thread's, ${threads} images in flight on both`,
          value: round(pool_['images/s'] / main['images/s']),
          bound: 0.95,
          better: 'higher',
        },
        {
          description: "worker's event-loop delay p99 with the pool ≤ 0.2× the main thread's (same images in flight)",
          value: round(pool_['event-loop delay p99 ms'] / Math.max(main['event-loop delay p99 ms'], 0.001)),
          bound: 0.2,
          better: 'lower',
        },
        {
          description: "worker's event-loop busy time with the pool ≤ 0.2× the main thread's (same images in flight)",
          value: round(pool_['event-loop busy %'] / Math.max(main['event-loop busy %'], 0.001)),
          bound: 0.2,
          better: 'lower',
        },
      ],
      notes: [
        `${count} distinct ${SIZE}×${SIZE} PNGs (noisy, with A1111's parameters text chunk), ${rounds} round(s) alternating the three ways, medians.`,
        `Like for like: ${threads} images in flight on both sides. The work is mostly inside libvips, which runs off the event loop either way, so throughput is about the same; what the pool adds is that nothing of it (decoding checks, blurhash, hashing, copies) touches the worker's event loop (p99 ${pool_['event-loop delay p99 ms']} ms against ${main['event-loop delay p99 ms']} ms), and threads that are replaced after WORKER_MAX_TASKS_PER_CHILD tasks each.`,
        `Event-loop delay p99 measures when timers wake up, which on a machine with no more cores than pool threads is set by the operating system's scheduling while libvips keeps every core busy, whichever thread runs it; event-loop busy time (utilization) measures what the work itself costs the worker's loop: ${pool_['event-loop busy %']}% with the pool against ${main['event-loop busy %']}% without.`,
        `The measure's floor: the event loop of this process with nothing to do has a delay p99 of ${idle} ms (its 1 ms timer included), ${round(idle / Math.max(main['event-loop delay p99 ms'], 0.001))}× the main thread's; no way of running the work can bring the ratio below that, so a bound of 0.2× is out of reach whenever the main thread's p99 is under ${round(idle * 5, 1)} ms.`,
        `For context, one image at a time on the main thread: ${summary[oneName]!['images/s']} images/s.`,
      ],
    };
  },
};
