/**
 * The owner of the post-processing thread pool: it starts the Piscina threads, queues tasks,
 * replaces each thread after its own `maxTasksPerThread` tasks or when it dies, retries the task a
 * dying thread was running, and closes everything in `close()`.
 *
 * Glossary:
 * - thread: one Piscina instance with exactly one worker thread, in one of `threads` slots. One
 *   Piscina per thread because Piscina picks the thread for a task and has no per-thread task
 *   limit (piscina#512): with one thread each, this class knows which thread runs what, so it can
 *   count tasks per thread, like Celery's worker_max_tasks_per_child, and tell a thread that died
 *   from a task that failed. Recycling starts a fresh thread in the slot and retires the old one.
 * - started: a task handed to a thread. Until then it waits in this class's own queue, which is
 *   what lets an abort remove a task that has not started without touching any thread.
 * - running: started and not yet finished in the thread (even if its caller stopped waiting).
 * - died: the thread ended under its task: an uncaught error in it, an exit, or its heap past
 *   `threadHeapMb` (Node stops such a thread; the process lives on). Only that task is affected:
 *   the thread is replaced, and the task runs once more, first in line, on the next free thread
 *   (another live one or the replacement; inside the same job, so the Stable Diffusion call is
 *   not repeated); a second death fails it with IMAGING_THREAD_DIED.
 *
 * Threads are never terminated while they run a task. sharp runs libvips on libuv's thread pool;
 * terminating a worker thread in the middle of a sharp operation has crashed the whole process
 * (lovell/sharp#2263), and Piscina terminates the thread when a running task's signal aborts or
 * when `close()` times out. So this class never passes a signal to Piscina, and it only closes a
 * thread once nothing runs on it.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { ImageDecodeError, ImagingAbortError, ImagingThreadDiedError, PoolClosedError } from './errors';
import { KeptInputs, keptInput } from './keptInput';
import type { FaultMode, FaultResult, ImagingResult, ImagingTask } from './tasks';

export interface PostprocessOptions {
  /**
   * Threads; each runs one task at a time. sharp's work runs on libuv's thread pool, which is
   * shared by the whole process and has UV_THREADPOOL_SIZE slots (default 4): above 4 threads,
   * start the process with a larger UV_THREADPOOL_SIZE or the extra threads wait.
   */
  threads: number;
  /**
   * Each thread is replaced after this many tasks of its own (WORKER_MAX_TASKS_PER_CHILD, Celery's
   * worker_max_tasks_per_child): its replacement starts as it takes its last task, and it closes
   * once that task is done, so no task fails or waits for it.
   */
  maxTasksPerThread: number;
  /** WebP quality of the image and its thumbnail, 1–100. */
  webpQuality: number;
  /** The thumbnail fits inside thumbnailSize×thumbnailSize. */
  thumbnailSize: number;
  /**
   * POSTPROCESS_THREAD_HEAP_MB: a thread's JavaScript heap (resourceLimits.maxOldGenerationSizeMb).
   * A thread past it dies alone (see the glossary) instead of the process. Unset: Node's default.
   */
  threadHeapMb?: number;
  /**
   * POSTPROCESS_NICE (Linux): the threads and libvips' threads run at this nice value, below the
   * event loop (see ./priority.ts). 0 or unset: unchanged.
   */
  nice?: number;
  /**
   * Tests only: registers the `fault` task kind (runFaultForTests) in the threads, which can kill
   * its thread on purpose. Never set by the worker; without it the threads refuse that kind.
   */
  faultTasksForTests?: boolean;
  /**
   * Errors that belong to no task, e.g. a thread that crashed while idle (Piscina replaces it), and
   * each thread that died under a task (the task is retried or failed as described above).
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
  /** Threads replaced because they reached maxTasksPerThread tasks. */
  recycled: number;
  /** Threads that died under a task (each replaced; the task run once more). */
  died: number;
  /** Tasks run again on another thread because their thread died. */
  retried: number;
  /** Live threads, counting retiring ones until they have closed. */
  threads: number;
  /** Kept-input buffers waiting for the next tasks (./keptInput.ts). */
  keptIdle: number;
  /** Tasks waiting for a free thread. */
  queued: number;
}

/**
 * A CommonJS shim Piscina can require() safely; on the first task it imports the ES bootstrap, which
 * registers tsx in the thread and loads postprocess.thread.ts.
 */
const THREAD_FILE = fileURLToPath(new URL('../../workers/postprocess.thread.cjs', import.meta.url));

/** Runs of one task: the first, and one more on a fresh thread if its thread died under it. */
const RUNS_PER_TASK = 2;

interface Thread {
  readonly piscina: Piscina<ImagingTask, unknown>;
  /** Its slot in #current while it is current. */
  readonly slot: number;
  /** Tasks handed to it; it retires when this reaches maxTasksPerThread. */
  started: number;
  running: boolean;
  retired: boolean;
  /** Set once Piscina's close() was called, which only happens when nothing runs on it. */
  closed: Promise<void> | null;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

interface QueuedTask {
  /** The message for the next run and the memory it transfers; null when there is nothing to run it again from. */
  readonly message: (run: number) => { task: ImagingTask; transferList: ArrayBuffer[] } | null;
  /**
   * Gives back the memory its runs were kept in, once it will not run again, for reuse; with
   * `reuse` false it is dropped instead. Idempotent.
   */
  readonly release: (reuse?: boolean) => void;
  readonly kind: ImagingTask['kind'];
  readonly resolve: (result: unknown) => void;
  readonly reject: (error: unknown) => void;
  /** True once the caller's promise is settled (by the result, an error or an abort). */
  settled: boolean;
  /** Removes the abort listener. */
  detach: () => void;
  /** performance.now() when a thread took it. */
  startedAt: number;
  /** Runs so far. */
  runs: number;
}

export class PostprocessPool {
  readonly #options: Readonly<PostprocessOptions>;
  /** The thread of each slot; retiring threads are only in #threads. */
  readonly #current: Thread[];
  readonly #threads = new Set<Thread>();
  readonly #queue: QueuedTask[] = [];
  /** Reused buffers for the tasks' kept inputs: at most one idle per thread. */
  readonly #kept: KeptInputs;
  #running = 0;
  #completed = 0;
  #recycled = 0;
  #died = 0;
  #retried = 0;
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
    this.#kept = new KeptInputs(options.threads);
    this.#current = Array.from({ length: options.threads }, (_, slot) => this.#startThread(slot));
  }

  /**
   * Strips metadata, encodes WebP and a thumbnail, computes a blurhash and the SHA-256.
   *
   * Takes ownership of `png`: if it is the only view of its memory, that memory moves to the pool
   * and `png` is left empty (length 0); a slice of a larger buffer (such as Node's shared pool for
   * small Buffers) is copied first, so other Buffers are never detached. The thread keeps a copy in
   * shared memory until the task is done (./keptInput.ts: one more PNG in memory, copied off the
   * main thread), for a second run if it dies under the task; the pool keeps up to one such buffer
   * per thread for the next tasks.
   *
   * Abort: before the task starts, it is dropped and the promise rejects at once. Once it runs,
   * the promise still rejects at once with an AbortError, but the thread finishes the task and its
   * result is thrown away: killing the thread mid-operation can crash the process (sharp#2263).
   */
  async process(png: Buffer, signal?: AbortSignal): Promise<ProcessedImage> {
    const { webpQuality, thumbnailSize } = this.#options;
    const result = await this.#submit<'postprocess'>(
      'postprocess',
      runsFrom(takeBytes(png), this.#kept, (input, keep) => ({ kind: 'postprocess', png: input, webpQuality, thumbnailSize, keep })),
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
    const { dataUri } = await this.#submit<'preview'>(
      'preview',
      runsFrom(takeBytes(image), this.#kept, (input, keep) => ({ kind: 'preview', image: input, size, keep })),
      signal,
    );
    return dataUri;
  }

  /**
   * Tests only (a pool created with `faultTasksForTests`): a task that reports its thread and how
   * many tasks that thread has run, or first kills its thread (`mode`) while `armed[0]` > 0,
   * counting it down: an armed count of 1 kills the first run only. With `png`, the thread keeps
   * it as it keeps a real task's input before the fault, and then post-processes it (thumbnails of
   * 64 px, WebP quality 80): the second run of a real task, from the kept copy.
   */
  runFaultForTests(mode: FaultMode, armed?: Int32Array, png?: Buffer): Promise<FaultResult> {
    if (this.#options.faultTasksForTests !== true) return Promise.reject(new Error('fault tasks are off in this pool (faultTasksForTests)'));
    const runs: TaskRuns = png
      ? runsFrom(takeBytes(png), this.#kept, (input, keep) => ({ kind: 'fault', mode, armed, png: input, keep }))
      : { message: () => ({ task: { kind: 'fault', mode, armed }, transferList: [] }), release: () => {} };
    return this.#submit<'fault'>('fault', runs, undefined);
  }

  get stats(): PostprocessStats {
    let threads = 0;
    for (const thread of this.#threads) threads += thread.piscina.threads.length;
    return { completed: this.#completed, recycled: this.#recycled, died: this.#died, retried: this.#retried, threads, queued: this.#queue.length, keptIdle: this.#kept.idle.buffers };
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
    for (const queued of this.#queue.splice(0)) {
      queued.release();
      this.#settle(queued, { ok: false, error: new PoolClosedError() });
    }
    if (this.#running > 0) await new Promise<void>((resolve) => this.#onIdle.push(resolve));
    // Every thread is idle now, so closing them terminates no running task.
    for (const thread of this.#threads) this.#retire(thread);
    await Promise.all([...this.#threads].map((thread) => thread.closed));
  }

  #submit<K extends ImagingTask['kind']>(
    kind: K,
    { message, release }: TaskRuns,
    signal: AbortSignal | undefined,
  ): Promise<ImagingResult<K>> {
    if (this.#closing !== null) return Promise.reject(new PoolClosedError());
    if (signal?.aborted) return Promise.reject(new ImagingAbortError(signal.reason));
    return new Promise<ImagingResult<K>>((resolve, reject) => {
      const queued: QueuedTask = {
        message,
        release,
        kind,
        // The thread's handler maps each task kind to its result type (tasks.ts); the value that
        // comes back through Piscina is typed unknown, so this is the one place it is trusted.
        resolve: (result) => resolve(result as ImagingResult<K>),
        reject,
        settled: false,
        detach: () => {},
        startedAt: 0,
        runs: 0,
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
    if (index !== -1) {
      this.#queue.splice(index, 1);
      queued.release();
    }
    // Started: reject now and let the thread finish (see the class comment); #finish ignores the
    // result, and the task keeps its thread until it really ends.
    this.#settle(queued, { ok: false, error: new ImagingAbortError(reason) });
  }

  #startQueued(): void {
    for (const thread of this.#current) {
      if (this.#queue.length === 0) return;
      if (!thread.running) this.#start(thread, this.#queue.shift()!);
    }
  }

  #start(thread: Thread, queued: QueuedTask): void {
    thread.started += 1;
    thread.running = true;
    this.#running += 1;
    queued.runs += 1;
    queued.startedAt = performance.now();
    // Its one worker, to tell afterwards whether it died under the task (Piscina drops a worker
    // that errored or exited, and starts another in its place).
    const worker: Worker | undefined = thread.piscina.threads[0];
    // Read now: an exited Worker's threadId is -1.
    const threadId = worker?.threadId;
    let run: Promise<unknown>;
    try {
      const message = queued.message(queued.runs);
      // Checked before a second run is queued (#finish); a first run always has its message.
      if (message === null) throw new Error('the task has nothing left to run from');
      run = thread.piscina.run(message.task, { transferList: message.transferList });
    } catch (error) {
      // postMessage can throw synchronously (e.g. a value that cannot be cloned).
      run = Promise.reject(error);
    }
    run.then(
      (value) => this.#finish(thread, queued, { ok: true, value }, undefined),
      (error: unknown) => {
        const died = worker !== undefined && !thread.piscina.threads.includes(worker) ? threadId : undefined;
        this.#finish(thread, queued, { ok: false, error: ImageDecodeError.fromThread(error) ?? error }, died);
      },
    );
    if (thread.started >= this.#options.maxTasksPerThread && this.#closing === null) {
      this.#recycled += 1;
      this.#replace(thread);
    }
  }

  /** `died`: the id of the thread that died under the task, if it did. */
  #finish(thread: Thread, queued: QueuedTask, outcome: Outcome, died: number | undefined): void {
    // Counters first, so a caller that reads `stats` right after its await sees this task done.
    thread.running = false;
    this.#running -= 1;
    if (died !== undefined) {
      this.#died += 1;
      const cause = outcome.ok ? undefined : outcome.error;
      this.#reportError(new ImagingThreadDiedError(queued.kind, queued.runs, died, { cause }));
      this.#replace(thread);
      // A second run needs the input the thread kept (it died after copying it, as it does in sharp).
      if (!queued.settled && queued.runs < RUNS_PER_TASK && this.#closing === null && queued.message(queued.runs + 1) !== null) {
        // Ahead of the waiting tasks: it has waited once already.
        this.#retried += 1;
        this.#queue.unshift(queued);
        this.#closeIfDrained(thread);
        this.#startQueued();
        return;
      }
      // Closing: no second run here; the job may run again on another worker.
      outcome = { ok: false, error: this.#closing !== null && queued.runs < RUNS_PER_TASK ? new PoolClosedError() : new ImagingThreadDiedError(queued.kind, queued.runs, died, { cause }) };
    }
    // After a death the memory is not reused: a second run reads its input from it in place, and
    // libvips may still be reading it for the thread that died.
    queued.release(died === undefined);
    this.#completed += 1;
    this.#options.onTaskDone?.(queued.kind, (performance.now() - queued.startedAt) / 1000, outcome.ok);
    this.#settle(queued, outcome);
    this.#closeIfDrained(thread);
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

  /** Starts a fresh thread in the slot now (it boots while the old one finishes its task) and retires the old one. */
  #replace(thread: Thread): void {
    if (this.#current[thread.slot] === thread && this.#closing === null) this.#current[thread.slot] = this.#startThread(thread.slot);
    this.#retire(thread);
  }

  #retire(thread: Thread): void {
    thread.retired = true;
    this.#closeIfDrained(thread);
  }

  #closeIfDrained(thread: Thread): void {
    if (!thread.retired || thread.running || thread.closed !== null) return;
    // Nothing runs on it and nothing will be started on it (it is no longer current), so
    // Piscina's close() only terminates an idle thread (or the one Piscina started in place of
    // a thread that died).
    thread.closed = thread.piscina
      .close()
      .catch((error: unknown) => this.#reportError(error))
      .finally(() => this.#threads.delete(thread));
  }

  #startThread(slot: number): Thread {
    const { threadHeapMb, faultTasksForTests, nice } = this.#options;
    const piscina = new Piscina<ImagingTask, unknown>({
      filename: THREAD_FILE,
      minThreads: 1,
      maxThreads: 1,
      // One task per thread: concurrency inside a thread would only compete for libuv slots.
      concurrentTasksPerWorker: 1,
      ...(threadHeapMb === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: threadHeapMb } }),
      workerData: { faultTasksForTests: faultTasksForTests === true, nice: nice ?? 0 },
    });
    // Without a listener, an 'error' event (a thread that dies while idle) would crash the process.
    piscina.on('error', (error: unknown) => this.#reportError(error));
    const thread: Thread = { piscina, slot, started: 0, running: false, retired: false, closed: null };
    this.#threads.add(thread);
    return thread;
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
  if (options.threadHeapMb !== undefined) checks.push(['threadHeapMb', 16, 1_048_576]);
  if (options.nice !== undefined) checks.push(['nice', 0, 19]);
  for (const [name, min, max] of checks) {
    const value = options[name];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(`PostprocessOptions.${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
    }
  }
}

type TaskRuns = Pick<QueuedTask, 'message' | 'release'>;

/**
 * The messages of a task whose input moves to the thread on its first run (with a buffer from
 * `kept` the thread copies it into first, see ./keptInput.ts) and comes from that copy on a second
 * run. The buffer is taken when the first run starts and given back by `release`.
 */
function runsFrom(bytes: Uint8Array, kept: KeptInputs, build: (input: Uint8Array, keep: SharedArrayBuffer | undefined) => ImagingTask): TaskRuns {
  let keep: SharedArrayBuffer | undefined;
  let released = false;
  return {
    message: (run) => {
      if (run === 1) {
        keep ??= kept.take(bytes.byteLength);
        return { task: build(bytes, keep), transferList: [bytes.buffer as ArrayBuffer] };
      }
      const input = keep && keptInput(keep);
      return input ? { task: build(input, undefined), transferList: [] } : null;
    },
    release: (reuse = true) => {
      if (keep === undefined || released) return;
      released = true;
      if (reuse) kept.give(keep);
    },
  };
}

/**
 * The bytes of a task, owned by the pool. A Buffer that is the only view of a plain ArrayBuffer
 * gives its memory up (moved, not copied: the caller's Buffer is left empty); anything else (a
 * slice of Node's shared Buffer pool or of a larger buffer, a SharedArrayBuffer) is copied, because
 * moving it would detach memory that other Buffers still use.
 */
function takeBytes(input: Buffer): Uint8Array {
  const backing = input.buffer;
  if (backing instanceof ArrayBuffer && input.byteOffset === 0 && input.byteLength === backing.byteLength) {
    return new Uint8Array(structuredClone(backing, { transfer: [backing] }));
  }
  return new Uint8Array(input);
}
