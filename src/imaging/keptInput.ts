/**
 * A task's input kept for a second run, without costing the main thread a copy. The pool hands the
 * thread the input (transferred) and a SharedArrayBuffer; the thread copies the input into it before
 * it starts, then sets a flag. If the thread dies under the task, the main thread still holds the
 * shared copy and runs the task again from it. Copying on the main thread instead (a fresh 3 MB
 * buffer per 1024×1024 PNG, about 10 ms of page faults and zeroing on a busy machine) showed in the
 * worker's event-loop busy time, which is what the pool exists to keep low.
 *
 * The buffers are reused (KeptInputs): a new SharedArrayBuffer is zero-filled by the main thread as
 * it is made, about 0.5 ms for 3 MB, once per image, and those pauses were most of the event
 * loop's lateness p99 under post-processing (the bench's post-processing scenario).
 *
 * Layout: an Int32 flag (1: the copy is complete) at 0, the Int32 length of the copy at 4, the
 * bytes from KEPT_OFFSET.
 */
const KEPT_OFFSET = 8;
/** Capacities are rounded up to this, so that images of about the same size reuse one buffer. */
const CAPACITY_STEP = 1 << 20;

/** In the thread, before the task starts: copies its input into `keep`. */
export function keepInput(keep: SharedArrayBuffer, input: ArrayBuffer | Uint8Array): void {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  if (KEPT_OFFSET + bytes.byteLength > keep.byteLength) throw new RangeError('the kept input buffer is too small for the input');
  new Uint8Array(keep, KEPT_OFFSET).set(bytes);
  const header = new Int32Array(keep, 0, 2);
  Atomics.store(header, 1, bytes.byteLength);
  Atomics.store(header, 0, 1);
}

/** On the main thread after the thread died: the kept input, or null if the copy was not complete. */
export function keptInput(keep: SharedArrayBuffer): Uint8Array | null {
  const header = new Int32Array(keep, 0, 2);
  return Atomics.load(header, 0) === 1 ? new Uint8Array(keep, KEPT_OFFSET, Atomics.load(header, 1)) : null;
}

/**
 * The pool's kept-input buffers: `take` one for a task's first run, `give` it back once the task
 * will not run again (nothing reads or writes it after that). At most `max` idle buffers are kept,
 * the largest ones.
 */
export class KeptInputs {
  readonly #max: number;
  readonly #idle: SharedArrayBuffer[] = [];

  constructor(max: number) {
    this.#max = max;
  }

  /** An empty buffer (flag cleared) for an input of `length` bytes. */
  take(length: number): SharedArrayBuffer {
    const need = KEPT_OFFSET + length;
    let best = -1;
    for (let i = 0; i < this.#idle.length; i++) {
      const size = this.#idle[i]!.byteLength;
      if (size >= need && (best === -1 || size < this.#idle[best]!.byteLength)) best = i;
    }
    if (best === -1) return new SharedArrayBuffer(Math.ceil(need / CAPACITY_STEP) * CAPACITY_STEP);
    const keep = this.#idle.splice(best, 1)[0]!;
    Atomics.store(new Int32Array(keep, 0, 2), 0, 0);
    return keep;
  }

  give(keep: SharedArrayBuffer): void {
    this.#idle.push(keep);
    if (this.#idle.length > this.#max) {
      this.#idle.sort((a, b) => b.byteLength - a.byteLength);
      this.#idle.length = this.#max;
    }
  }

  /** Idle buffers and their bytes (for tests). */
  get idle(): { buffers: number; bytes: number } {
    return { buffers: this.#idle.length, bytes: this.#idle.reduce((sum, b) => sum + b.byteLength, 0) };
  }
}
