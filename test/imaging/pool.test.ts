/**
 * PostprocessPool against real threads and real sharp (no mocks). Every test owns its pool and
 * closes it; `afterEach` fails the test if a pool still has threads.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { getPriority } from 'node:os';
import { isBlurhashValid } from 'blurhash';
import sharp from 'sharp';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ImageDecodeError, ImagingAbortError, PoolClosedError } from '../../src/imaging/errors';
import { PostprocessPool } from '../../src/imaging/pool';
import type { PostprocessOptions } from '../../src/imaging/pool';
import { encodePng, gradientPixel } from './png';

// Threads load TypeScript through tsx when they start, which takes a few hundred ms each.
vi.setConfig({ testTimeout: 30_000, hookTimeout: 30_000 });

const PROMPT = 'a red fox in the snow, highly detailed, golden hour';
const PARAMETERS = `${PROMPT}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234567, Size: 96x64, Model: sd_xl_base_1.0`;

// One thread unless a test needs more: every thread start costs a few hundred ms.
const DEFAULTS: PostprocessOptions = { threads: 1, maxTasksPerThread: 1000, webpQuality: 80, thumbnailSize: 64 };

const open: PostprocessPool[] = [];
function createPool(overrides: Partial<PostprocessOptions> = {}): PostprocessPool {
  const pool = PostprocessPool.create({ ...DEFAULTS, ...overrides });
  open.push(pool);
  return pool;
}

afterEach(async () => {
  const pools = open.splice(0);
  await Promise.all(pools.map((pool) => pool.close()));
  for (const pool of pools) expect(pool.stats.threads).toBe(0);
});

function a1111Png(width: number, height: number): Buffer {
  return encodePng({ width, height, pixel: gradientPixel(width, height), text: { parameters: PARAMETERS } });
}

function isWebp(bytes: Buffer): boolean {
  return bytes.subarray(0, 4).toString('latin1') === 'RIFF' && bytes.subarray(8, 12).toString('latin1') === 'WEBP';
}

/** Resolves once the pool has nothing running or queued (tasks whose callers gave up included). */
async function settled(pool: PostprocessPool, completed: number): Promise<void> {
  await vi.waitFor(() => expect(pool.stats.completed).toBe(completed), { timeout: 10_000, interval: 20 });
}

describe('PostprocessPool.process', () => {
  it('re-encodes to WebP without any metadata and with a correct thumbnail, blurhash and checksum', async () => {
    const pool = createPool();
    const png = a1111Png(96, 64);
    // The input really carries A1111's metadata, so its absence below means something.
    expect(png.includes('parameters', 0, 'latin1')).toBe(true);
    expect(png.includes(PROMPT, 0, 'latin1')).toBe(true);
    const inputStats = await sharp(png).stats();

    const out = await pool.process(png);

    expect(isWebp(out.webp)).toBe(true);
    expect(isWebp(out.thumbnail)).toBe(true);
    for (const bytes of [out.webp, out.thumbnail]) {
      expect(bytes.includes('parameters', 0, 'latin1')).toBe(false);
      expect(bytes.includes(PROMPT, 0, 'latin1')).toBe(false);
      expect(bytes.includes('Seed', 0, 'latin1')).toBe(false);
      const meta = await sharp(bytes).metadata();
      expect(meta.format).toBe('webp');
      expect(meta.exif).toBeUndefined();
      expect(meta.icc).toBeUndefined();
      expect(meta.xmp).toBeUndefined();
      expect(meta.comments).toBeUndefined();
    }

    const meta = await sharp(out.webp).metadata();
    expect([meta.width, meta.height]).toEqual([96, 64]);
    expect([out.width, out.height]).toEqual([96, 64]);
    // Same pixels, give or take lossy compression.
    const outputStats = await sharp(out.webp).stats();
    for (const [i, channel] of inputStats.channels.entries()) {
      expect(Math.abs((outputStats.channels[i]?.mean ?? Number.NaN) - channel.mean)).toBeLessThan(4);
    }

    // fit 'inside' 64×64 keeps the 3:2 aspect ratio.
    const thumbMeta = await sharp(out.thumbnail).metadata();
    expect([thumbMeta.width, thumbMeta.height]).toEqual([64, 43]);
    expect([out.thumbnailWidth, out.thumbnailHeight]).toEqual([64, 43]);

    expect(isBlurhashValid(out.blurhash)).toEqual({ result: true });
    // 4×3 components: 1 (size) + 1 (max AC) + 4 (DC) + 2 × 11 (AC) characters.
    expect(out.blurhash).toHaveLength(28);

    expect(out.sha256).toBe(createHash('sha256').update(out.webp).digest('hex'));
    expect(out.bytes).toBe(out.webp.byteLength);
  });

  it('handles RGBA input and never enlarges a thumbnail', async () => {
    const pool = createPool({ thumbnailSize: 256 });
    const gradient = gradientPixel(40, 30);
    const png = encodePng({
      width: 40,
      height: 30,
      channels: 4,
      pixel: (x, y) => {
        const [r, g, b] = gradient(x, y);
        return [r, g, b, x < 20 ? 255 : 96];
      },
      text: { parameters: PARAMETERS },
    });
    const out = await pool.process(png);
    expect([out.width, out.height]).toEqual([40, 30]);
    expect([out.thumbnailWidth, out.thumbnailHeight]).toEqual([40, 30]);
    expect((await sharp(out.webp).metadata()).hasAlpha).toBe(true);
    expect(isBlurhashValid(out.blurhash).result).toBe(true);
  });

  it('processes a 1024×1024 image', async () => {
    const pool = createPool({ thumbnailSize: 256 });
    const png = a1111Png(1024, 1024);
    const pngBytes = png.byteLength;
    await pool.process(Buffer.from(png)); // warm-up: thread start (tsx, sharp) and JIT

    const timings: number[] = [];
    let out = await pool.process(Buffer.from(png));
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      out = await pool.process(Buffer.from(png));
      timings.push(performance.now() - started);
    }
    console.info(
      `1024×1024 postprocess: ${timings.map((ms) => ms.toFixed(0)).join(', ')} ms (PNG ${pngBytes} B → WebP ${out.bytes} B)`,
    );

    expect([out.width, out.height]).toEqual([1024, 1024]);
    expect([out.thumbnailWidth, out.thumbnailHeight]).toEqual([256, 256]);
    expect(out.webp.includes(PROMPT, 0, 'latin1')).toBe(false);
    expect(isBlurhashValid(out.blurhash).result).toBe(true);
  });

  it('moves a Buffer that owns its memory, but copies a slice of the shared Buffer pool', async () => {
    const pool = createPool();
    const owned = a1111Png(64, 64);
    expect(owned.byteLength).toBe(owned.buffer.byteLength);
    await pool.process(owned);
    expect(owned.byteLength).toBe(0); // transferred to the thread: documented ownership

    // Small Buffers share one 8 KiB slab; transferring it would wipe out the neighbour too.
    const small = Buffer.from(encodePng({ width: 4, height: 4, pixel: () => [200, 10, 10] }));
    const neighbour = Buffer.from('neighbour');
    expect(small.buffer).toBe(neighbour.buffer);
    const out = await pool.process(small);
    expect([out.width, out.height]).toEqual([4, 4]);
    expect(small.byteLength).toBeGreaterThan(0);
    expect(neighbour.toString()).toBe('neighbour');
  });

  it('queues tasks beyond the thread count and runs them all', async () => {
    const pool = createPool({ threads: 2 });
    const results = Array.from({ length: 6 }, (_, i) => pool.process(a1111Png(32 + i, 32)));
    expect(pool.stats.queued).toBe(4);
    const outs = await Promise.all(results);
    expect(outs.map((out) => out.width)).toEqual([32, 33, 34, 35, 36, 37]);
    expect(pool.stats).toMatchObject({ completed: 6, queued: 0 });
  });
});

describe('recycling', () => {
  it('replaces a thread after maxTasksPerThread tasks of its own and keeps working', async () => {
    const pool = createPool({ maxTasksPerThread: 2 });
    await pool.process(a1111Png(16, 16));
    expect(pool.stats.recycled).toBe(0);
    await pool.process(a1111Png(16, 16));
    expect(pool.stats.recycled).toBe(1);

    // Tasks after recycling run on the new threads, sequentially and concurrently.
    const after = [await pool.process(a1111Png(20, 20))];
    after.push(...(await Promise.all([pool.process(a1111Png(21, 21)), pool.process(a1111Png(22, 22))])));
    expect(after.map((out) => out.width)).toEqual([20, 21, 22]);
    expect(pool.stats).toMatchObject({ completed: 5, recycled: 2 });

    // Retired threads close once idle; only the current one is left.
    await vi.waitFor(() => expect(pool.stats.threads).toBe(1), { timeout: 10_000, interval: 20 });
  });
});

describe('bad input', () => {
  it('rejects garbage, truncated and unsupported images with a decode error, and keeps working', async () => {
    const pool = createPool();
    const png = a1111Png(64, 64);
    const inputs: Array<[string, Buffer]> = [
      ['garbage', Buffer.from('this is not an image at all')],
      ['empty', Buffer.alloc(0)],
      ['truncated PNG', Buffer.from(png.subarray(0, Math.floor(png.byteLength / 2)))],
      ['SVG', Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')],
    ];
    for (const [label, input] of inputs) {
      const error: unknown = await pool.process(input).then(
        () => new Error(`${label} was accepted`),
        (rejection: unknown) => rejection,
      );
      expect(error, label).toBeInstanceOf(ImageDecodeError);
      expect(error, label).toMatchObject({ code: 'IMAGE_DECODE_FAILED' });
      expect((error as Error).message, label).toMatch(/^The image could not be decoded: /);
    }
    await expect(pool.preview(Buffer.from('nope'), 32)).rejects.toThrow(/could not be decoded/);

    // The thread survived: same single thread, and it still does real work.
    expect(pool.stats.threads).toBe(1);
    const out = await pool.process(png);
    expect([out.width, out.height]).toEqual([64, 64]);
  });

  it('validates its options before starting threads', () => {
    expect(() => PostprocessPool.create({ ...DEFAULTS, threads: 0 })).toThrow(RangeError);
    expect(() => PostprocessPool.create({ ...DEFAULTS, webpQuality: 101 })).toThrow(/webpQuality/);
    expect(() => PostprocessPool.create({ ...DEFAULTS, nice: 20 })).toThrow(/nice/);
  });
});

describe('CPU priority (POSTPROCESS_NICE)', () => {
  /** This process's threads: id, name, nice value. */
  const threads = () =>
    readdirSync('/proc/self/task').map((entry) => {
      const tid = Number(entry);
      return { tid, name: readFileSync(`/proc/self/task/${entry}/comm`, 'utf8').trim(), nice: getPriority(tid) };
    });

  // Skipped where this test process already runs at nice 7 or more: there would be nothing to see.
  it.runIf(process.platform === 'linux' && getPriority(process.pid) < 7)('runs its thread and libvips\' threads at the nice value given, and leaves the event loop\'s thread alone', async () => {
    const mainNice = getPriority(process.pid);
    const pool = createPool({ nice: 7 });
    const out = await pool.process(a1111Png(512, 512));
    expect(out.width).toBe(512);
    // The thread lowers libvips' threads after its task, before the result comes back.
    const libvips = threads().filter((t) => t.name === 'libvips worker');
    expect(libvips.length).toBeGreaterThan(0);
    for (const t of libvips) expect(t.nice).toBeGreaterThanOrEqual(7);
    // The pool's one thread lowered itself; nothing else in this process is at 7.
    expect(threads().filter((t) => t.name !== 'libvips worker' && t.nice === 7)).toHaveLength(1);
    expect(getPriority(process.pid)).toBe(mainNice);
  });
});

describe('PostprocessPool.preview', () => {
  it('returns a small WebP data URI from a PNG or a JPEG', async () => {
    const pool = createPool();
    const png = a1111Png(300, 200);
    const jpeg = await sharp(png).jpeg({ quality: 80 }).toBuffer();
    for (const input of [png, jpeg]) {
      const uri = await pool.preview(input, 64);
      expect(uri).toMatch(/^data:image\/webp;base64,[A-Za-z0-9+/]+=*$/);
      const bytes = Buffer.from(uri.slice('data:image/webp;base64,'.length), 'base64');
      expect(isWebp(bytes)).toBe(true);
      expect(bytes.includes(PROMPT, 0, 'latin1')).toBe(false);
      const meta = await sharp(bytes).metadata();
      expect([meta.width, meta.height]).toEqual([64, 43]);
    }
  });
});

describe('abort', () => {
  it('rejects at once without running the task when the signal is already aborted', async () => {
    const pool = createPool();
    await expect(pool.process(a1111Png(16, 16), AbortSignal.abort())).rejects.toBeInstanceOf(ImagingAbortError);
    expect(pool.stats).toMatchObject({ completed: 0, queued: 0 });
  });

  it('drops a queued task when its signal aborts', async () => {
    const pool = createPool();
    const running = pool.process(a1111Png(512, 512));
    const controller = new AbortController();
    const queued = pool.process(a1111Png(16, 16), controller.signal);
    expect(pool.stats.queued).toBe(1);
    controller.abort();
    await expect(queued).rejects.toMatchObject({ name: 'AbortError', code: 'IMAGING_ABORTED' });
    expect(pool.stats.queued).toBe(0);
    await running;
    await settled(pool, 1); // the aborted task never ran
  });

  it('rejects a running task at once but lets its thread finish it', async () => {
    const pool = createPool();
    await pool.process(a1111Png(16, 16)); // thread is up
    const controller = new AbortController();
    const task = pool.process(a1111Png(1024, 1024), controller.signal);
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort(new Error('client went away'));
    await expect(task).rejects.toMatchObject({ name: 'AbortError', cause: new Error('client went away') });
    // Rejected before the thread was done, and the thread was not terminated.
    expect(pool.stats.completed).toBe(1);
    await settled(pool, 2);
    expect(pool.stats.threads).toBe(1);
    const out = await pool.process(a1111Png(16, 16));
    expect(out.width).toBe(16);
  });
});

describe('close', () => {
  it('waits for running tasks, rejects queued and new ones, and can be called twice', async () => {
    const pool = createPool();
    const running = pool.process(a1111Png(256, 256));
    const queued = pool.process(a1111Png(16, 16));
    const first = pool.close();
    const second = pool.close();
    expect(second).toBe(first);
    await expect(queued).rejects.toBeInstanceOf(PoolClosedError);
    await expect(pool.process(a1111Png(16, 16))).rejects.toMatchObject({ code: 'IMAGING_POOL_CLOSED' });
    expect((await running).width).toBe(256);
    await first;
    await pool.close();
    expect(pool.stats).toMatchObject({ threads: 0, completed: 1 });
  });
});
