/**
 * Post-processing threads that die under a task, with real threads and real sharp: a thread that
 * crashes (an uncaught error), exits, or runs out of its heap (resourceLimits) fails only that
 * task's run, which runs once more on another thread (inside the job: the SD call is not repeated),
 * and the pool goes on; a task whose second thread dies too fails with IMAGING_THREAD_DIED. And each
 * thread is replaced after its own maxTasksPerThread tasks without failing one.
 *
 * How a thread is killed: no real input kills a thread (a bad image is a decode error, tested in
 * test/imaging/pool.test.ts), so these tests use the `fault` task kind, which the threads handle
 * only in a pool created with `faultTasksForTests` (the worker never sets it). The out-of-memory
 * case is real: the task grows the thread's JavaScript heap until Node stops the thread at its
 * resourceLimits (POSTPROCESS_THREAD_HEAP_MB), small here so that it happens quickly.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { toJobFailure } from '../../src/jobs/errors';
import { ImagingThreadDiedError } from '../../src/imaging/errors';
import { PostprocessPool, type PostprocessOptions } from '../../src/imaging/pool';
import type { FaultMode } from '../../src/imaging/tasks';
import { encodePng, gradientPixel } from '../imaging/png';

// Threads load TypeScript through tsx when they start, which takes a few hundred ms each, and
// seconds on a busy machine; these tests start a dozen.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 60_000 });

const open: PostprocessPool[] = [];
function createPool(overrides: Partial<PostprocessOptions> = {}): { pool: PostprocessPool; errors: Error[] } {
  const errors: Error[] = [];
  const pool = PostprocessPool.create({
    threads: 2,
    maxTasksPerThread: 1000,
    webpQuality: 80,
    thumbnailSize: 64,
    threadHeapMb: 96,
    faultTasksForTests: true,
    onError: (error) => errors.push(error),
    ...overrides,
  });
  open.push(pool);
  return { pool, errors };
}

afterEach(async () => {
  const pools = open.splice(0);
  await Promise.all(pools.map((pool) => pool.close()));
  for (const pool of pools) expect(pool.stats.threads).toBe(0);
});

const png = (size: number) => encodePng({ width: size, height: size, pixel: gradientPixel(size, size) });

/** A countdown shared with the threads: a fault task kills its thread while it is above 0. */
function armed(times: number): Int32Array {
  const counter = new Int32Array(new SharedArrayBuffer(4));
  counter[0] = times;
  return counter;
}

describe('a thread that dies under a task', () => {
  const modes: FaultMode[] = ['crash', 'exit', 'oom'];

  it.each(modes)('%s: only that task is affected; it runs again on another thread, and the next tasks are fine', async (mode) => {
    const { pool, errors } = createPool();
    // Both threads up and known.
    const before = await Promise.all([pool.runFaultForTests('probe'), pool.runFaultForTests('probe')]);
    expect(new Set(before.map((p) => p.threadId)).size).toBe(2);

    // A real image on one thread while the other dies under the fault task.
    const [image, retried] = await Promise.all([pool.process(png(256)), pool.runFaultForTests(mode, armed(1))]);
    expect([image.width, image.height]).toEqual([256, 256]);
    expect(pool.stats).toMatchObject({ died: 1, retried: 1 });
    // The death is reported (logged by the worker), naming the thread and its own error.
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(ImagingThreadDiedError);
    const dead = (errors[0] as ImagingThreadDiedError).threadId;
    expect(before.map((p) => p.threadId)).toContain(dead);
    // The second run went to another thread: the live one, or the dead one's replacement.
    expect(retried.threadId).not.toBe(dead);
    if (mode === 'oom') expect((errors[0]!.cause as { code?: string }).code).toBe('ERR_WORKER_OUT_OF_MEMORY');
    if (mode === 'crash') expect((errors[0]!.cause as Error).message).toMatch(/crashed/);

    // The pool goes on with two threads, and real work succeeds on both.
    const after = await Promise.all([png(64), png(96), png(128), png(160)].map((input) => pool.process(input)));
    expect(after.map((out) => out.width)).toEqual([64, 96, 128, 160]);
    await vi.waitFor(() => expect(pool.stats.threads).toBe(2), { timeout: 30_000, interval: 20 });
    expect(pool.stats.died).toBe(1);
  });

  it('runs a real image again from the copy its first thread kept before dying, with the same result', async () => {
    const { pool } = createPool();
    const input = png(200);
    const expected = await pool.process(Buffer.from(input));
    // The first task's kept-input buffer waits for the next task, which takes it.
    expect(pool.stats.keptIdle).toBe(1);
    const caller = Buffer.from(input);
    const again = await pool.runFaultForTests('crash', armed(1), caller);
    // The caller's bytes moved to the first thread (gone with it); the second run used the copy.
    expect(caller.byteLength).toBe(0);
    expect(pool.stats).toMatchObject({ died: 1, retried: 1 });
    expect(again.image).toEqual({ width: 200, height: 200, sha256: expected.sha256 });
    // The second run finished normally, so nothing reads its buffer any more: it waits for reuse.
    expect(pool.stats.keptIdle).toBe(1);
  });

  it('fails the task with IMAGING_THREAD_DIED when its second thread dies too: a permanent failure, the job is not retried', async () => {
    const { pool, errors } = createPool({ threads: 1 });
    // A kept-input buffer from an earlier task, which the failing task takes.
    await pool.process(png(32));
    expect(pool.stats.keptIdle).toBe(1);
    const error: unknown = await pool.runFaultForTests('crash', armed(2), png(48)).then(
      () => new Error('the task succeeded'),
      (rejection: unknown) => rejection,
    );
    expect(error).toBeInstanceOf(ImagingThreadDiedError);
    expect(error).toMatchObject({ code: 'IMAGING_THREAD_DIED', runs: 2 });
    // The job's one error table: not retried (the SD call would run again for the same result).
    expect(toJobFailure(error)).toMatchObject({ code: 'IMAGING_THREAD_DIED', retryable: false });
    expect(pool.stats).toMatchObject({ died: 2, retried: 1 });
    expect(errors).toHaveLength(2);
    // Its second run read the input in place from that buffer when its thread died, so the buffer
    // is dropped rather than reused (libvips may still be reading it for the dead thread).
    expect(pool.stats.keptIdle).toBe(0);
    // And the pool still works.
    expect((await pool.process(png(32))).width).toBe(32);
    expect(pool.stats.keptIdle).toBe(1);
  });

  it('refuses fault tasks in a pool created without faultTasksForTests', async () => {
    const { pool } = createPool({ threads: 1, faultTasksForTests: false });
    await expect(pool.runFaultForTests('crash', armed(1))).rejects.toThrow(/faultTasksForTests/);
    expect((await pool.process(png(32))).width).toBe(32);
  });
});

describe('replacing threads after WORKER_MAX_TASKS_PER_CHILD tasks each', () => {
  it('no thread runs more than maxTasksPerThread tasks, and no task fails for it', async () => {
    const perThread = 3;
    const { pool, errors } = createPool({ maxTasksPerThread: perThread });
    // 18 tasks at once, more than the threads: every third a real image, the rest probes that
    // report the thread they ran on and how many tasks that thread had run (counted in the thread).
    const tasks = Array.from({ length: 18 }, (_, i) => (i % 3 === 0 ? pool.process(png(24 + i)) : pool.runFaultForTests('probe')));
    const results = await Promise.all(tasks);
    const probes = results.filter((r): r is { threadId: number; tasksRun: number } => 'tasksRun' in r);
    const images = results.filter((r) => 'webp' in r);
    expect(images).toHaveLength(6);
    expect(probes).toHaveLength(12);
    expect(Math.max(...probes.map((p) => p.tasksRun))).toBeLessThanOrEqual(perThread);
    // Each thread ran its tasks in order and none past the limit.
    const byThread = new Map<number, number[]>();
    for (const p of probes) byThread.set(p.threadId, [...(byThread.get(p.threadId) ?? []), p.tasksRun]);
    for (const counts of byThread.values()) expect(counts).toEqual([...counts].sort((a, b) => a - b));
    // 18 tasks, at most 3 per thread: each of the two slots went through threads of 3 tasks,
    // replaced as they took their third (6, or 5 when the slots did not split the tasks evenly).
    expect(pool.stats).toMatchObject({ completed: 18, died: 0, retried: 0 });
    expect(pool.stats.recycled).toBeGreaterThanOrEqual(5);
    expect(byThread.size).toBeGreaterThanOrEqual(4);
    expect(errors).toEqual([]);
    // Retired threads close once idle; the two current ones stay.
    await vi.waitFor(() => expect(pool.stats.threads).toBe(2), { timeout: 30_000, interval: 20 });
  });
});
