/**
 * The pool's kept-input buffers (src/imaging/keptInput.ts): the copy a thread keeps so that a task
 * can run again if the thread dies, in SharedArrayBuffers the pool reuses from one task to the next.
 */
import { describe, expect, it } from 'vitest';
import { KeptInputs, keepInput, keptInput } from '../../src/imaging/keptInput';

const bytes = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);

describe('KeptInputs', () => {
  it('hands out a buffer with no copy in it, and the copy comes back with its exact length', () => {
    const kept = new KeptInputs(2);
    const keep = kept.take(3000);
    expect(keep.byteLength).toBeGreaterThanOrEqual(3008);
    expect(keptInput(keep)).toBeNull();
    const input = bytes(3000, 1);
    keepInput(keep, input);
    expect(keptInput(keep)).toEqual(input);
  });

  it('reuses a given-back buffer for the next input that fits, cleared: a stale copy never passes for the new task', () => {
    const kept = new KeptInputs(2);
    const first = kept.take(5000);
    keepInput(first, bytes(5000, 2));
    kept.give(first);
    const second = kept.take(4000);
    expect(second).toBe(first);
    // The thread has not copied the new input yet (it died first, say): nothing to run again from.
    expect(keptInput(second)).toBeNull();
    // A shorter input over the longer one's bytes: exactly the new bytes come back.
    const input = bytes(4000, 3);
    keepInput(second, input);
    expect(keptInput(second)).toEqual(input);
  });

  it('allocates when no idle buffer fits, picks the smallest that fits, and keeps at most max idle buffers (the largest)', () => {
    const kept = new KeptInputs(2);
    const small = kept.take(100);
    const large = kept.take(3 << 20);
    expect(large.byteLength).toBeGreaterThan(small.byteLength);
    kept.give(small);
    kept.give(large);
    // The small one fits a small input: it is the one taken, not the large one.
    expect(kept.take(200)).toBe(small);
    // Nothing idle fits an input larger than both: a new one.
    const huge = kept.take(5 << 20);
    expect(huge).not.toBe(large);
    kept.give(small);
    kept.give(huge);
    expect(kept.idle.buffers).toBe(2);
    expect(kept.idle.bytes).toBe(huge.byteLength + large.byteLength);
  });

  it('refuses an input larger than the buffer rather than keeping part of it', () => {
    const keep = new KeptInputs(1).take(10);
    expect(() => keepInput(keep, bytes(keep.byteLength, 4))).toThrow(RangeError);
    expect(keptInput(keep)).toBeNull();
  });
});
