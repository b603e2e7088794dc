/**
 * The one timer behind every open progress stream of a process (per stream source). Each run it
 * - re-checks the streams that have been quiet for `resyncMs`: ONE Redis call reads the snapshots'
 *   seq for all of them, and only a stream whose snapshot is newer than what it sent (or that has
 *   no snapshot, a state from Postgres) re-reads the whole state;
 * - while a generation is QUEUED, calls `onQueuedTick` every `queuedTickMs`, once per generation
 *   however many streams watch it.
 * A stream in flowing traffic costs nothing here but a timestamp per event; an idle one costs a
 * few bytes in one batched call every `resyncMs`, instead of a timer and a full read of its own.
 */
import type { ProgressEvent } from './event';
import type { ProgressStreamSource } from './source';

/** What the scheduler needs of a stream. */
export interface Resyncable {
  readonly generationId: string;
  /** Quiet for `resyncMs` (since its last event or last check) and not re-reading: marks it checked. */
  takeDue(now: number, resyncMs: number): boolean;
  /** The latest state sent if it is QUEUED, else null. */
  queuedState(): ProgressEvent | null;
  /** The seq of the latest state sent (-1 before any). */
  lastSeq(): number;
  /** Reads the whole current state and sends it if newer. */
  reread(): void;
}

/** At most this many snapshots per Redis call. */
const SEQ_BATCH = 1000;

export class ResyncScheduler {
  private readonly streams = new Set<Resyncable>();
  private timer: NodeJS.Timeout | null = null;
  private lastQueuedTick = Number.NEGATIVE_INFINITY;
  /** Generations whose queue tick is in flight (a slow one is not started twice). */
  private readonly ticking = new Set<string>();
  /** How often it runs: fine enough for both periods (1 s with the defaults). */
  readonly periodMs: number;

  constructor(private readonly source: ProgressStreamSource) {
    this.periodMs = Math.max(10, Math.min(source.queuedTickMs, Math.ceil(source.resyncMs / 5)));
  }

  add(stream: Resyncable): void {
    this.streams.add(stream);
    // Housekeeping only: the streams' connections keep a process alive, not this timer.
    this.timer ??= setInterval(runScheduler, this.periodMs, this).unref();
  }

  remove(stream: Resyncable): void {
    if (!this.streams.delete(stream) || this.streams.size > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
  }

  /** Runs `onQueuedTick` for one generation unless one is already running for it. */
  tick(latest: ProgressEvent): void {
    const { onQueuedTick } = this.source;
    const id = latest.generationId;
    if (!onQueuedTick || this.ticking.has(id)) return;
    this.ticking.add(id);
    onQueuedTick(latest).then(
      () => this.ticking.delete(id),
      (err: unknown) => {
        this.ticking.delete(id);
        this.source.onError(err, id);
      },
    );
  }

  /** @internal one run of the timer. */
  run(): void {
    const { resyncMs, queuedTickMs, onQueuedTick } = this.source;
    const now = performance.now();
    const queueTick = onQueuedTick !== undefined && now - this.lastQueuedTick >= queuedTickMs - this.periodMs / 2;
    if (queueTick) this.lastQueuedTick = now;
    let due: Resyncable[] | null = null;
    let queued: Map<string, ProgressEvent> | null = null;
    for (const stream of this.streams) {
      if (stream.takeDue(now, resyncMs)) (due ??= []).push(stream);
      if (queueTick) {
        const latest = stream.queuedState();
        if (latest) (queued ??= new Map()).set(stream.generationId, latest);
      }
    }
    if (queued) for (const latest of queued.values()) this.tick(latest);
    if (due) void this.resync(due);
  }

  private async resync(due: Resyncable[]): Promise<void> {
    const { readSeqs } = this.source;
    if (!readSeqs) {
      for (const stream of due) stream.reread();
      return;
    }
    for (let i = 0; i < due.length; i += SEQ_BATCH) {
      const batch = due.slice(i, i + SEQ_BATCH);
      let seqs: ReadonlyArray<number | null>;
      try {
        seqs = await readSeqs(batch.map((s) => s.generationId));
      } catch (err) {
        // Nothing is lost: these streams are checked again after another resyncMs.
        this.source.onError(err, batch[0]!.generationId);
        continue;
      }
      batch.forEach((stream, k) => {
        const seq = seqs[k] ?? null;
        if (seq === null || seq > stream.lastSeq()) stream.reread();
      });
    }
  }
}

function runScheduler(scheduler: ResyncScheduler): void {
  scheduler.run();
}
