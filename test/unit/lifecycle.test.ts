/** What the entries do with SIGTERM and SIGINT (src/main/lifecycle.ts), on a clock the test moves. */
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger';
import { DUPLICATE_SIGNAL_WINDOW_MS, signalHandler } from '../../src/main/lifecycle';

function harness(closing: Promise<void> = new Promise(() => undefined)) {
  let clock = 1_000;
  const exits: number[] = [];
  let closes = 0;
  const onSignal = signalHandler({
    close: () => {
      closes++;
      return closing;
    },
    log: createLogger('silent'),
    exit: (code) => void exits.push(code),
    now: () => clock,
  });
  return { onSignal, exits, closes: () => closes, advance: (ms: number) => (clock += ms) };
}

describe('signalHandler', () => {
  it('closes once and exits 0 when closing is done', async () => {
    let done!: () => void;
    const h = harness(new Promise<void>((r) => (done = r)));
    h.onSignal('SIGTERM');
    expect(h.closes()).toBe(1);
    expect(h.exits).toEqual([]);
    done();
    await new Promise((r) => setImmediate(r));
    expect(h.exits).toEqual([0]);
  });

  it('exits 1 when closing fails', async () => {
    const h = harness(Promise.reject(new Error('db gone')));
    h.onSignal('SIGINT');
    await new Promise((r) => setImmediate(r));
    expect(h.exits).toEqual([1]);
  });

  it.each(['SIGTERM', 'SIGINT'] as const)('takes %s delivered twice within the window (process group + npm) as one request', (signal) => {
    const h = harness();
    h.onSignal(signal);
    h.advance(50);
    h.onSignal(signal);
    h.advance(DUPLICATE_SIGNAL_WINDOW_MS - 60);
    h.onSignal(signal);
    expect(h.closes()).toBe(1);
    expect(h.exits).toEqual([]);
  });

  it('lets a later Ctrl-C force the exit, but never a later SIGTERM', () => {
    const h = harness();
    h.onSignal('SIGTERM');
    h.advance(DUPLICATE_SIGNAL_WINDOW_MS + 1);
    h.onSignal('SIGTERM');
    expect(h.exits).toEqual([]);
    h.onSignal('SIGINT');
    expect(h.exits).toEqual([1]);
    expect(h.closes()).toBe(1);
  });
});
