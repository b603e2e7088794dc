/**
 * Piscina thread entry for image post-processing. Loaded through postprocess.thread.cjs and postprocess.thread.mjs, which
 * registers tsx first (a worker thread cannot load TypeScript on its own); the pool that starts
 * these threads is src/imaging/pool.ts.
 *
 * A failed task rejects (Piscina sends the error back to the caller); nothing here exits or
 * throws outside the task, so a bad image never takes the thread or the process down.
 */
import { Piscina } from 'piscina';
import { configureSharp, postprocessImage, previewImage } from '../src/imaging/transform';
import type { ImagingResult, ImagingTask, PostprocessResult } from '../src/imaging/tasks';

let sharpConfigured = false;

/**
 * Resolves with the task's `ImagingResult`; a postprocess result is wrapped by `Piscina.move`,
 * which Piscina unwraps before it reaches the pool.
 */
export default async function runImagingTask(task: ImagingTask): Promise<ImagingResult | MovedResult> {
  // Once per thread, on the first task rather than at import, so importing this module has no
  // side effects (tests may import it directly).
  if (!sharpConfigured) {
    configureSharp();
    sharpConfigured = true;
  }
  switch (task.kind) {
    case 'postprocess':
      return transferResult(await postprocessImage(task));
    case 'preview':
      return previewImage(task);
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
