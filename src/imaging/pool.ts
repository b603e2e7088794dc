/**
 * The owner of the post-processing thread pool: it starts the Piscina threads, queues tasks,
 * replaces threads after a number of tasks, and closes everything in `close()`.
 *
 * Glossary:
 * - generation: one Piscina instance. Recycling starts a new generation and retires the old one.
 * - started: a task handed to a thread. Until then it waits in this class's own queue, which is
 *   what lets an abort remove a task that has not started without touching any thread.
 * - running: started and not yet finished in the thread (even if its caller stopped waiting).
 *
 * Threads are never terminated while they run a task. sharp runs libvips on libuv's thread pool;
 * terminating a worker thread in the middle of a sharp operation has crashed the whole process
 * (lovell/sharp#2263), and Piscina terminates the thread when a running task's signal aborts or
 * when `close()` times out. So this class never passes a signal to Piscina, and it only closes a
 * generation once nothing runs on it.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { ImageDecodeError, ImagingAbortError, PoolClosedError } from './errors';
import type { ImagingResult, ImagingTask } from './tasks';

export interface PostprocessOptions {
  /**
   * Threads per generation; each runs one task at a time. sharp's work runs on libuv's thread
   * pool, which is shared by the whole process and has UV_THREADPOOL_SIZE slots (default 4):
   * above 4 threads, start the process with a larger UV_THREADPOOL_SIZE or the extra threads wait.
   */
  threads: number;
  /**
   * Replace the threads after threads × maxTasksPerThread tasks, like Celery's
   * worker_max_tasks_per_child (Piscina has no such option, piscina#512). Counted per generation,
   * not per thread: Piscina picks the thread, so one thread may run more than this.
   */
  maxTasksPerThread: number;
  /** WebP quality of the image and its thumbnail, 1–100. */
  webpQuality: number;
  /** The thumbnail fits inside thumbnailSize×thumbnailSize. */
  thumbnailSize: number;
  /**
   * Errors that belong to no task, e.g. a thread that crashed while idle (Piscina replaces it).
   * Default: `process.emitWarning`.
   */
  onError?: (error: Error) => void;
  /**
   * Told when a task ends in its thread: its kind, the seconds it ran there (its wait for a free
   * thread not included), whether it succeeded. For metrics: must be quick and must not throw.
   */
  onTaskDone?: (kind: ImagingTask['kind'], seconds: number, ok: boolean) => void;
}

export interface ProcessedImage {
  webp: Buffer;
  thumbnail: Buffer;
  width: number;
  height: number;
  thumbnailWidth: number;
  thumbnailHeight: number;
  blurhash: string;
  /** Lower-case hex SHA-256 of `webp`. */
  sha256: string;
  /** `webp.byteLength`. */
  bytes: number;
}

export interface PostprocessStats {
  /** Tasks that finished in a thread, successfully or not (aborted ones included once they end). */
  completed: number;
  /** Generations replaced because they reached threads × maxTasksPerThread tasks. */
  recycled: number;
  /** Live threads, counting a retiring generation's threads until it has closed. */
  threads: number;
  /** Tasks waiting for a free thread. */
  queued: number;
}

/**
 * A CommonJS shim Piscina can require() safely; on the first task it imports the ES bootstrap, which
 * registers tsx in the thread and loads postprocess.thread.ts.
 */
const THREAD_FILE = fileURLToPath(new URL('../../workers/postprocess.thread.cjs', import.meta.url));

interface Generation {
  readonly piscina: Piscina<ImagingTask, unknown>;
  /** Tasks handed to this generation; it retires when this reaches the recycling threshold. */
  started: number;
  running: number;
  retired: boolean;
  /** Set once Piscina's close() was called, which only happens when nothing runs on it. */
  closed: Promise<void> | null;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

interface QueuedTask {
  readonly task: ImagingTask;
  readonly transferList: ArrayBuffer[];
  readonly resolve: (result: unknown) => void;
  readonly reject: (error: unknown) => void;
  /** True once the caller's promise is settled (by the result, an error or an abort). */
  settled: boolean;
  /** Removes the abort listener. */
  detach: () => void;
  /** performance.now() when a thread took it. */
  startedAt: number;
}

export class PostprocessPool {
  readonly #options: Readonly<PostprocessOptions>;
  readonly #recycleAfter: number;
  readonly #generations = new Set<Generation>();
  #current: Generation;
  readonly #queue: QueuedTask[] = [];
  #running = 0;
  #completed = 0;
  #recycled = 0;
  #closing: Promise<void> | null = null;
  #onIdle: Array<() => void> = [];

  /** Starts `threads` threads. The caller owns the pool and must `close()` it. */
  static create(options: PostprocessOptions): PostprocessPool {
    validateOptions(options);
    // sharp's native module must be loaded by the main thread before a worker loads it; otherwise
    // it is tied to the first worker that loaded it and breaks when that worker exits (sharp's
    // documentation on worker threads). Loaded here rather than at import: no side effects at import.
    createRequire(import.meta.url)('sharp');
    return new PostprocessPool(options);
  }

  private constructor(options: PostprocessOptions) {
    this.#options = Object.freeze({ ...options });
    this.#recycleAfter = options.threads * options.maxTasksPerThread;
    this.#current = this.#startGeneration();
  }

  /**
   * Strips metadata, encodes WebP and a thumbnail, computes a blurhash and the SHA-256.
   *
   * Takes ownership of `png`: if it is the only view of its memory, that memory moves to the
   * thread and `png` is left empty (length 0); a slice of a larger buffer (such as Node's shared
   * pool for small Buffers) is copied first, so other Buffers are never detached.
   *
   * Abort: before the task starts, it is dropped and the promise rejects at once. Once it runs,
   * the promise still rejects at once with an AbortError, but the thread finishes the task and its
   * result is thrown away: killing the thread mid-operation can crash the process (sharp#2263).
   */
  async process(png: Buffer, signal?: AbortSignal): Promise<ProcessedImage> {
    const { bytes, transferList } = takeBytes(png);
    const result = await this.#submit(
      {
        kind: 'postprocess',
        png: bytes,
        webpQuality: this.#options.webpQuality,
        thumbnailSize: this.#options.thumbnailSize,
      },
      transferList,
      signal,
    );
    return {
      ...result,
      // Views over the transferred memory, no copy.
      webp: Buffer.from(result.webp.buffer, result.webp.byteOffset, result.webp.byteLength),
      thumbnail: Buffer.from(result.thumbnail.buffer, result.thumbnail.byteOffset, result.thumbnail.byteLength),
    };
  }

  /**
   * A `data:image/webp;base64,…` URI of a live preview (PNG or JPEG) fitting inside size×size.
   * Takes ownership of `image` like `process()` does.
   */
  async preview(image: Buffer, size: number, signal?: AbortSignal): Promise<string> {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`preview size must be a positive integer, got ${size}`);
    const { bytes, transferList } = takeBytes(image);
    const { dataUri } = await this.#submit({ kind: 'preview', image: bytes, size }, transferList, signal);
    return dataUri;
  }

  get stats(): PostprocessStats {
    let threads = 0;
    for (const generation of this.#generations) threads += generation.piscina.threads.length;
    return { completed: this.#completed, recycled: this.#recycled, threads, queued: this.#queue.length };
  }

  /**
   * Stops intake (new calls reject with PoolClosedError), rejects the tasks that have not started
   * with PoolClosedError, waits for the running ones, then closes every thread. Safe to call twice.
   * No deadline here: a running task is one image and cannot be stopped safely anyway; a process
   * entry that needs a deadline races this promise and exits.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    for (const queued of this.#queue.splice(0)) this.#settle(queued, { ok: false, error: new PoolClosedError() });
    if (this.#running > 0) await new Promise<void>((resolve) => this.#onIdle.push(resolve));
    // Every generation is idle now, so closing them terminates no running task.
    for (const generation of this.#generations) this.#retire(generation);
    await Promise.all([...this.#generations].map((generation) => generation.closed));
  }

  #submit<T extends ImagingTask>(
    task: T,
    transferList: ArrayBuffer[],
    signal: AbortSignal | undefined,
  ): Promise<ImagingResult<T['kind']>> {
    if (this.#closing !== null) return Promise.reject(new PoolClosedError());
    if (signal?.aborted) return Promise.reject(new ImagingAbortError(signal.reason));
    return new Promise<ImagingResult<T['kind']>>((resolve, reject) => {
      const queued: QueuedTask = {
        task,
        transferList,
        // The thread's handler maps each task kind to its result type (tasks.ts); the value that
        // comes back through Piscina is typed unknown, so this is the one place it is trusted.
        resolve: (result) => resolve(result as ImagingResult<T['kind']>),
        reject,
        settled: false,
        detach: () => {},
        startedAt: 0,
      };
      if (signal !== undefined) {
        const onAbort = () => this.#abort(queued, signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        queued.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.#queue.push(queued);
      this.#startQueued();
    });
  }

  #abort(queued: QueuedTask, reason: unknown): void {
    const index = this.#queue.indexOf(queued);
    // Not started: drop it, it never reaches a thread.
    if (index !== -1) this.#queue.splice(index, 1);
    // Started: reject now and let the thread finish (see the class comment); #finish ignores the
    // result, and the task keeps its thread slot until it really ends.
    this.#settle(queued, { ok: false, error: new ImagingAbortError(reason) });
  }

  #startQueued(): void {
    while (this.#running < this.#options.threads) {
      const queued = this.#queue.shift();
      if (queued === undefined) return;
      this.#start(queued);
    }
  }

  #start(queued: QueuedTask): void {
    const generation = this.#current;
    generation.started += 1;
    generation.running += 1;
    this.#running += 1;
    queued.startedAt = performance.now();
    let run: Promise<unknown>;
    try {
      run = generation.piscina.run(queued.task, { transferList: queued.transferList });
    } catch (error) {
      // postMessage can throw synchronously (e.g. a value that cannot be cloned).
      run = Promise.reject(error);
    }
    run.then(
      (value) => this.#finish(generation, queued, { ok: true, value }),
      (error: unknown) => this.#finish(generation, queued, { ok: false, error: ImageDecodeError.fromThread(error) ?? error }),
    );
    if (generation.started >= this.#recycleAfter && this.#closing === null) this.#recycle();
  }

  #finish(generation: Generation, queued: QueuedTask, outcome: Outcome): void {
    // Counters first, so a caller that reads `stats` right after its await sees this task done.
    generation.running -= 1;
    this.#running -= 1;
    this.#completed += 1;
    this.#options.onTaskDone?.(queued.task.kind, (performance.now() - queued.startedAt) / 1000, outcome.ok);
    this.#settle(queued, outcome);
    this.#closeIfDrained(generation);
    if (this.#running === 0) for (const resolve of this.#onIdle.splice(0)) resolve();
    this.#startQueued();
  }

  #settle(queued: QueuedTask, outcome: Outcome): void {
    if (queued.settled) return;
    queued.settled = true;
    queued.detach();
    if (outcome.ok) queued.resolve(outcome.value);
    else queued.reject(outcome.error);
  }

  /** Starts the next generation now, so its threads boot while the old one finishes its tasks. */
  #recycle(): void {
    const old = this.#current;
    this.#current = this.#startGeneration();
    this.#recycled += 1;
    this.#retire(old);
  }

  #retire(generation: Generation): void {
    generation.retired = true;
    this.#closeIfDrained(generation);
  }

  #closeIfDrained(generation: Generation): void {
    if (!generation.retired || generation.running > 0 || generation.closed !== null) return;
    // Nothing runs on it and nothing will be started on it (it is no longer #current), so
    // Piscina's close() only terminates idle threads.
    generation.closed = generation.piscina
      .close()
      .catch((error: unknown) => this.#reportError(error))
      .finally(() => this.#generations.delete(generation));
  }

  #startGeneration(): Generation {
    const { threads } = this.#options;
    const piscina = new Piscina<ImagingTask, unknown>({
      filename: THREAD_FILE,
      minThreads: threads,
      maxThreads: threads,
      // One task per thread: concurrency inside a thread would only compete for libuv slots.
      concurrentTasksPerWorker: 1,
    });
    // Without a listener, an 'error' event (a thread that dies while idle) would crash the process.
    piscina.on('error', (error: unknown) => this.#reportError(error));
    const generation: Generation = { piscina, started: 0, running: 0, retired: false, closed: null };
    this.#generations.add(generation);
    return generation;
  }

  #reportError(error: unknown): void {
    const err = error instanceof Error ? error : new Error(String(error));
    if (this.#options.onError !== undefined) this.#options.onError(err);
    else process.emitWarning(err);
  }
}

function validateOptions(options: PostprocessOptions): void {
  const checks: Array<[keyof PostprocessOptions, number, number]> = [
    ['threads', 1, 256],
    ['maxTasksPerThread', 1, Number.MAX_SAFE_INTEGER],
    ['webpQuality', 1, 100],
    ['thumbnailSize', 1, 16_383],
  ];
  for (const [name, min, max] of checks) {
    const value = options[name];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(`PostprocessOptions.${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
    }
  }
}

/**
 * The bytes to send and the memory to transfer with them. A Buffer that is the only view of a
 * plain ArrayBuffer moves as is; anything else (a slice of Node's shared Buffer pool or of a larger
 * buffer, a SharedArrayBuffer) is copied into a fresh ArrayBuffer first, because transferring would
 * detach memory that other Buffers still use.
 */
function takeBytes(input: Buffer): { bytes: Uint8Array; transferList: ArrayBuffer[] } {
  const backing = input.buffer;
  const bytes =
    backing instanceof ArrayBuffer && input.byteOffset === 0 && input.byteLength === backing.byteLength
      ? new Uint8Array(backing)
      : new Uint8Array(input);
  return { bytes, transferList: [bytes.buffer] };
}
