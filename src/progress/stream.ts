/**
 * One client's progress stream, keeping the promises of the contract:
 * - subscribe to the channel FIRST (awaiting Redis' acknowledgement), THEN read the current state, so
 *   nothing published in between is lost; the first event is always the current state;
 * - events leave in `seq` order without duplicates (older or equal seq is dropped), and `progress`
 *   never goes below what this stream already sent;
 * - once the stream has been quiet (no message) for `resyncMs` its snapshot is checked, and again
 *   every `resyncMs` while it stays quiet (give or take the scheduler's period, 1 s by default), so a lost pub/sub message (Bee-Queue#189 shows they happen)
 *   cannot leave it without its terminal state: after a terminal state nothing is published, so a
 *   stream whose terminal message was lost is quiet by definition. A newer snapshot is sent only
 *   after the messages Redis sent before it have arrived (hub.flush), so a re-read never makes a
 *   stream skip states that were merely late;
 * - the stream completes right after a terminal state.
 *
 * An API process holds thousands of these, so each is ONE small object: no Repeater, no closures
 * and no timer per stream. The shared `source` carries the behaviour and one ResyncScheduler per
 * source does the timing for all its streams (resync.ts).
 * It is a hand-written async iterator rather than an async generator: a generator awaiting a
 * pub/sub iterator can deadlock on return() (graphql-yoga pitfall); here return() never waits, it
 * always cleans up at once.
 */
import { isTerminal } from '../generation/lifecycle';
import type { ProgressEvent } from './event';
import type { ProgressListener } from './hub';
import { ResyncScheduler, type Resyncable } from './resync';
import type { ProgressStreamSource } from './source';

/** What every stream of a process shares; one object, created once. */
export type { ProgressStreamSource } from './source';

const schedulers = new WeakMap<ProgressStreamSource, ResyncScheduler>();

function schedulerOf(source: ProgressStreamSource): ResyncScheduler {
  let scheduler = schedulers.get(source);
  if (!scheduler) {
    scheduler = new ResyncScheduler(source);
    schedulers.set(source, scheduler);
  }
  return scheduler;
}

/**
 * idle: nothing happens until the first next(), like a lazy pub/sub iterator;
 * starting: subscribing, then reading the current state;
 * closed: terminal state sent, or return()/throw() called, or starting failed; cleaned up.
 */
type Phase = 'idle' | 'starting' | 'open' | 'closed';

type Resolve = (r: IteratorResult<ProgressEvent>) => void;
type Reject = (err: unknown) => void;

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

export class ProgressStream implements AsyncIterableIterator<ProgressEvent>, ProgressListener, Resyncable {
  private phase: Phase = 'idle';
  private last: ProgressEvent | null = null;
  /** Events sent but not pulled yet (the consumer is slower than the events); null when none. */
  private buffered: ProgressEvent[] | null = null;
  /** The next() waiting for an event (a consumer awaits one at a time; more queue in `moreWaiting`). */
  private resolveNext: Resolve | null = null;
  private rejectNext: Reject | null = null;
  private moreWaiting: Array<[Resolve, Reject]> | null = null;
  /** An error for the next next() (starting failed while nobody waited). */
  private failure: { err: unknown } | null = null;
  /** When the last message arrived, or the snapshot was last checked (performance.now()). */
  private quietSince = 0;
  private reading = false;
  /** The open-streams slot this stream holds (src/limits/streamSlots.ts), given back when it closes. */
  private slot: { release(): void } | null = null;

  constructor(
    readonly generationId: string,
    private readonly source: ProgressStreamSource,
  ) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Makes the stream give `slot` back when it closes (terminal state, return(), throw(), a failed start). */
  holdSlot(slot: { release(): void }): this {
    if (this.phase === 'closed') slot.release();
    else this.slot = slot;
    return this;
  }

  next(): Promise<IteratorResult<ProgressEvent>> {
    if (this.phase === 'idle') {
      this.phase = 'starting';
      void this.start();
    }
    if (this.buffered) {
      const value = this.buffered.shift()!;
      if (this.buffered.length === 0) this.buffered = null;
      return Promise.resolve({ done: false, value });
    }
    if (this.failure) {
      const { err } = this.failure;
      this.failure = null;
      return Promise.reject(err);
    }
    if (this.phase === 'closed') return Promise.resolve(DONE);
    return new Promise((resolve, reject) => {
      if (!this.resolveNext) {
        this.resolveNext = resolve;
        this.rejectNext = reject;
      } else {
        (this.moreWaiting ??= []).push([resolve, reject]);
      }
    });
  }

  return(): Promise<IteratorResult<ProgressEvent>> {
    this.close();
    this.buffered = null;
    this.failure = null;
    this.settleWaiters(null);
    return Promise.resolve(DONE);
  }

  throw(err?: unknown): Promise<IteratorResult<ProgressEvent>> {
    this.close();
    this.buffered = null;
    this.settleWaiters(null);
    return Promise.reject(err);
  }

  /** From the hub: a published event (possibly older than what this stream already sent). */
  onProgress(event: ProgressEvent): void {
    if (this.phase === 'closed') return;
    this.quietSince = performance.now();
    this.emit(event);
  }

  private async start(): Promise<void> {
    try {
      await this.source.hub.add(this);
      if (this.isClosed()) return; // return() while subscribing; close() removed the listener
      const current = await this.source.readCurrent(this.generationId);
      if (this.isClosed()) return;
      this.phase = 'open';
      this.quietSince = performance.now();
      this.emit(current);
      if (this.isClosed()) return;
      const scheduler = schedulerOf(this.source);
      scheduler.add(this);
      if (this.last?.status === 'QUEUED') scheduler.tick(this.last);
    } catch (err) {
      if (this.isClosed()) return;
      this.close();
      this.settleWaiters({ err });
    }
  }

  private isClosed(): boolean {
    return this.phase === 'closed';
  }

  private emit(event: ProgressEvent | null): void {
    if (!event || this.phase === 'closed') return;
    const last = this.last;
    if (last && event.seq <= last.seq) return;
    const out = last && event.progress < last.progress ? { ...event, progress: last.progress } : event;
    this.last = out;
    const resolve = this.takeWaiter();
    if (resolve) resolve({ done: false, value: out });
    else (this.buffered ??= []).push(out);
    if (isTerminal(out.status)) {
      this.close();
      this.settleWaiters(null);
    }
  }

  private takeWaiter(): Resolve | null {
    const resolve = this.resolveNext;
    const next = this.moreWaiting?.shift();
    this.resolveNext = next?.[0] ?? null;
    this.rejectNext = next?.[1] ?? null;
    if (this.moreWaiting?.length === 0) this.moreWaiting = null;
    return resolve;
  }

  /** Ends every waiting next(): the first with `failure` if given, the rest (or all) as done. */
  private settleWaiters(failure: { err: unknown } | null): void {
    const reject = this.rejectNext;
    if (failure) {
      if (reject) {
        this.takeWaiter();
        reject(failure.err);
      } else {
        this.failure = failure;
      }
    }
    for (let resolve = this.takeWaiter(); resolve; resolve = this.takeWaiter()) resolve(DONE);
  }

  takeDue(now: number, resyncMs: number): boolean {
    // The scheduler runs on a millisecond clock: allow for rounding.
    if (this.phase !== 'open' || this.reading || now - this.quietSince < resyncMs - 1) return false;
    this.quietSince = now;
    return true;
  }

  queuedState(): ProgressEvent | null {
    return this.phase === 'open' && this.last?.status === 'QUEUED' ? this.last : null;
  }

  lastSeq(): number {
    return this.last?.seq ?? -1;
  }

  reread(): void {
    if (this.phase === 'open') void this.rereadNow();
  }

  private async rereadNow(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      const event = await this.source.readCurrent(this.generationId);
      if (event && (!this.last || event.seq > this.last.seq)) {
        // Newer than what this stream sent: either a message was lost, or it is still on its way
        // (a busy process). Let the ones on their way arrive first, so that none is skipped.
        await this.source.hub.flush(this.source.resyncMs);
        this.emit(event);
      }
    } catch (err) {
      this.source.onError(err, this.generationId);
    } finally {
      this.reading = false;
    }
  }

  /** Stops listening and resyncing. Buffered events are still handed out, then next() is done. */
  private close(): void {
    if (this.phase === 'closed') return;
    const listening = this.phase !== 'idle';
    this.phase = 'closed';
    this.slot?.release();
    this.slot = null;
    if (listening) {
      this.source.hub.remove(this);
      schedulers.get(this.source)?.remove(this);
    }
  }
}

export function progressStream(generationId: string, source: ProgressStreamSource): ProgressStream {
  return new ProgressStream(generationId, source);
}
