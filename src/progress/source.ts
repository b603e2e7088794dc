/**
 * What progress streams read from and are driven by (shared by every stream of a process, and by
 * its resync scheduler): its own module so that ./stream and ./resync both depend on it, not on
 * each other.
 */
import type { ProgressEvent } from './event';
import type { ProgressHub } from './hub';

export interface ProgressStreamSource {
  hub: ProgressHub;
  /** The current state: the Redis snapshot, else the Postgres row. */
  readCurrent(generationId: string): Promise<ProgressEvent | null>;
  /**
   * The seq of each generation's Redis snapshot (null: none), in one call: lets quiet streams be
   * checked without reading their whole state. Without it each quiet stream reads its state.
   */
  readSeqs?(generationIds: readonly string[]): Promise<ReadonlyArray<number | null>>;
  /** Called every `queuedTickMs` while the latest state is QUEUED (publishes the queue position). */
  onQueuedTick?(latest: ProgressEvent): Promise<void>;
  resyncMs: number;
  queuedTickMs: number;
  onError(err: unknown, generationId: string): void;
}
