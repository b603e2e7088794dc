/**
 * Expected failures of the imaging pool, each with a stable `code`.
 *
 * Retry guidance for whoever owns the job's retry table: IMAGE_DECODE_FAILED is permanent (the same
 * bytes will fail again); IMAGING_ABORTED means the caller gave up; IMAGING_POOL_CLOSED only happens
 * during shutdown, so the job can run again on another worker. IMAGING_THREAD_DIED is permanent
 * too: the pool already ran the task a second time on a fresh thread, and that one died as well,
 * so the input itself is the likely cause; retrying the job would only repeat the SD call.
 */

export type ImagingErrorCode = 'IMAGE_DECODE_FAILED' | 'IMAGING_ABORTED' | 'IMAGING_POOL_CLOSED' | 'IMAGING_THREAD_DIED';

export class ImagingError extends Error {
  readonly code: ImagingErrorCode;

  constructor(code: ImagingErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/**
 * Every decode failure message starts with this text. Errors lose their class and own properties
 * when they are cloned from a worker thread (only `message`, `stack` and `cause` survive), so the
 * main thread recognises a decode failure by this prefix and rebuilds the typed error.
 */
export const DECODE_FAILED_PREFIX = 'The image could not be decoded';

export class ImageDecodeError extends ImagingError {
  override name = 'ImageDecodeError';

  constructor(detail: string, options?: ErrorOptions) {
    super('IMAGE_DECODE_FAILED', `${DECODE_FAILED_PREFIX}: ${detail}`, options);
  }

  /** Rebuilds the typed error from one that crossed the thread boundary; null if it is another kind. */
  static fromThread(error: unknown): ImageDecodeError | null {
    if (!(error instanceof Error) || !error.message.startsWith(`${DECODE_FAILED_PREFIX}: `)) return null;
    const revived = new ImageDecodeError(error.message.slice(DECODE_FAILED_PREFIX.length + 2), {
      cause: error.cause,
    });
    if (error.stack !== undefined) revived.stack = error.stack;
    return revived;
  }
}

/** Named `AbortError` like the DOM and Node errors, so `err.name === 'AbortError'` checks work. */
export class ImagingAbortError extends ImagingError {
  override name = 'AbortError';

  constructor(reason: unknown) {
    super('IMAGING_ABORTED', 'The imaging task was aborted', { cause: reason });
  }
}

export class PoolClosedError extends ImagingError {
  override name = 'PoolClosedError';

  constructor() {
    super('IMAGING_POOL_CLOSED', 'The post-processing pool is closed');
  }
}

/**
 * A post-processing thread died under a task (an uncaught error in it, an exit, or its heap past
 * POSTPROCESS_THREAD_HEAP_MB). Reported through the pool's onError for each death; a task gets it
 * only when its second run's thread died too.
 */
export class ImagingThreadDiedError extends ImagingError {
  override name = 'ImagingThreadDiedError';

  constructor(
    readonly taskKind: string,
    readonly runs: number,
    /** The node:worker_threads id of the thread that died last. */
    readonly threadId: number | undefined,
    options?: ErrorOptions,
  ) {
    super(
      'IMAGING_THREAD_DIED',
      runs > 1
        ? `Post-processing the image failed: its thread stopped (crashed or ran out of memory) on each of ${runs} tries.`
        : 'A post-processing thread stopped (crashed or ran out of memory) under a task; the task runs again on another thread unless its caller gave up.',
      options,
    );
  }
}
