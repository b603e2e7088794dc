/**
 * Piscina thread entry for image post-processing. Loaded through postprocess.thread.cjs and postprocess.thread.mjs, which
 * registers tsx first (a worker thread cannot load TypeScript on its own); the pool that starts
 * these threads is src/imaging/pool.ts.
 *
 * A failed task rejects (Piscina sends the error back to the caller); nothing here exits or
 * throws outside the task, so a bad image never takes the thread or the process down.
 */
import { threadId, workerData } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { keepInput } from '../src/imaging/keptInput';
import { LibvipsThreadPriority, lowerThisThread } from '../src/imaging/priority';
import { configureSharp, postprocessImage, previewImage } from '../src/imaging/transform';
import type { FaultResult, FaultTask, ImagingResult, ImagingTask, PostprocessResult } from '../src/imaging/tasks';

let sharpConfigured = false;
/** POSTPROCESS_NICE: this thread and libvips' threads run at this nice value (0: unchanged). */
const nice = (workerData as { nice?: number } | null)?.nice ?? 0;
const libvipsPriority = new LibvipsThreadPriority(nice);
/** Tasks this thread has run (what the pool's per-thread limit is about). */
let tasksRun = 0;

/**
 * Resolves with the task's `ImagingResult`; a postprocess result is wrapped by `Piscina.move`,
 * which Piscina unwraps before it reaches the pool.
 */
export default async function runImagingTask(task: ImagingTask): Promise<ImagingResult | MovedResult> {
  // Once per thread, on the first task rather than at import, so importing this module has no
  // side effects (tests may import it directly).
  if (!sharpConfigured) {
    configureSharp();
    lowerThisThread(nice);
    sharpConfigured = true;
  }
  tasksRun += 1;
  try {
    return await run(task);
  } finally {
    // libvips starts threads on demand: the ones this task started are lowered before it returns.
    libvipsPriority.sweep();
  }
}

async function run(task: ImagingTask): Promise<ImagingResult | MovedResult> {
  switch (task.kind) {
    case 'postprocess':
      // First a copy the pool can run the task again from, should this thread die under it.
      if (task.keep) keepInput(task.keep, task.png);
      return transferResult(await postprocessImage(task));
    case 'preview':
      if (task.keep) keepInput(task.keep, task.image);
      return previewImage(task);
    case 'fault':
      // Registered only when the pool was created for tests (faultTasksForTests).
      if ((workerData as { faultTasksForTests?: unknown } | null)?.faultTasksForTests !== true) throw new Error('Unknown imaging task kind: "fault"');
      return runFault(task);
    default: {
      const unknownTask: never = task;
      throw new Error(`Unknown imaging task kind: ${JSON.stringify((unknownTask as { kind?: unknown }).kind)}`);
    }
  }
}

type MovedResult = ReturnType<typeof Piscina.move>;

/**
 * Hands the two byte arrays to the main thread without copying them again. Piscina only looks
 * for a movable value at the top level of a result, so the whole result is wrapped in one
 * Transferable whose transfer list names both buffers. The object literal cannot be typed as
 * Piscina's Transferable (its keys are unique symbols that Piscina exports only as `symbol`).
 */
function transferResult(result: PostprocessResult): MovedResult {
  const transferable = {
    [Piscina.transferableSymbol]: [result.webp.buffer, result.thumbnail.buffer],
    [Piscina.valueSymbol]: result,
  };
  return Piscina.move(transferable as unknown as Parameters<typeof Piscina.move>[0]);
}

/** Tests only (see FaultTask): reports on this thread, or kills it the way `task.mode` says. */
async function runFault(task: FaultTask): Promise<FaultResult> {
  if (task.png && task.keep) keepInput(task.keep, task.png);
  const armed = task.armed;
  if (task.mode !== 'probe' && armed !== undefined && Atomics.sub(armed, 0, 1) > 0) {
    switch (task.mode) {
      case 'crash':
        // An error thrown outside any task: the thread's 'error' event, as a native crash would be.
        setImmediate(() => {
          throw new Error('post-processing thread crashed (a fault task)');
        });
        return new Promise<never>(() => {});
      case 'exit':
        process.exit(3);
      // falls through (process.exit does not return)
      case 'oom': {
        // Grows the JavaScript heap until Node stops the thread (resourceLimits).
        const hoard: number[][] = [];
        for (;;) hoard.push(Array.from({ length: 100_000 }, (_, i) => i + hoard.length));
      }
    }
  }
  const png = task.png;
  if (!png) return { threadId, tasksRun };
  const image = await postprocessImage({ kind: 'postprocess', png, webpQuality: 80, thumbnailSize: 64 });
  return { threadId, tasksRun, image: { width: image.width, height: image.height, sha256: image.sha256 } };
}
