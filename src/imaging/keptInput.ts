/**
 * A task's input kept for a second run, without costing the main thread a copy. The pool hands the
 * thread the input (transferred) and an empty SharedArrayBuffer; the thread copies the input into
 * it before it starts, then sets a flag. If the thread dies under the task, the main thread still
 * holds the shared copy and runs the task again from it. Copying on the main thread instead (a
 * fresh 3 MB buffer per 1024×1024 PNG, about 10 ms of page faults and zeroing on a busy machine)
 * showed in the worker's event-loop busy time, which is what the pool exists to keep low.
 *
 * Layout: an Int32 flag (1: the copy is complete) at 0, the bytes from KEPT_OFFSET.
 */
const KEPT_OFFSET = 8;

/** An empty buffer for `length` bytes: allocated lazily by the system, so cheap until written. */
export function keepFor(length: number): SharedArrayBuffer {
  return new SharedArrayBuffer(KEPT_OFFSET + length);
}

/** In the thread, before the task starts: copies its input into `keep`. */
export function keepInput(keep: SharedArrayBuffer, input: ArrayBuffer | Uint8Array): void {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  if (KEPT_OFFSET + bytes.byteLength !== keep.byteLength) throw new RangeError('the kept input buffer does not fit the input');
  new Uint8Array(keep, KEPT_OFFSET).set(bytes);
  Atomics.store(new Int32Array(keep, 0, 1), 0, 1);
}

/** On the main thread after the thread died: the kept input, or null if the copy was not complete. */
export function keptInput(keep: SharedArrayBuffer): Uint8Array | null {
  return Atomics.load(new Int32Array(keep, 0, 1), 0) === 1 ? new Uint8Array(keep, KEPT_OFFSET) : null;
}
