/**
 * Publishes one generation attempt's states in order. Publishes are chained (a preview being
 * shrunk never lets a later step overtake it), unchanged states are skipped, and a refused publish
 * (the snapshot is already final: the generation was cancelled) is reported through `onEnded`.
 */
import type { GenerationStatus } from '../../src/generation/lifecycle';
import type { Logger } from '../../src/logger';
import type { ProgressImage, ProgressUpdate } from '../../src/progress/event';
import type { ProgressPublisher } from '../../src/progress/publisher';

export interface ReporterState {
  status: GenerationStatus;
  progress: number;
  step?: number | null;
  totalSteps?: number | null;
  etaSeconds?: number | null;
  queuePosition?: number | null;
  preview?: string | null;
  error?: ProgressUpdate['error'];
  images?: ProgressImage[];
}

export class GenerationReporter {
  private chain: Promise<void> = Promise.resolve();
  private lastKey = '';

  constructor(
    private readonly publisher: ProgressPublisher,
    private readonly generationId: string,
    private readonly attempt: number,
    private readonly totalSteps: number,
    private readonly log: Logger,
    private readonly onEnded: () => void,
  ) {}

  /** Queues a state; `prepare` may compute part of it (a preview) without reordering states. */
  report(state: ReporterState | (() => Promise<ReporterState | null>)): void {
    this.chain = this.chain.then(async () => {
      const s = typeof state === 'function' ? await state() : state;
      if (!s) return;
      const update: ProgressUpdate = {
        generationId: this.generationId,
        status: s.status,
        progress: s.progress,
        step: s.step ?? null,
        totalSteps: s.totalSteps ?? this.totalSteps,
        etaSeconds: s.etaSeconds == null ? null : Math.round(s.etaSeconds * 10) / 10,
        queuePosition: s.queuePosition ?? null,
        preview: s.preview ?? null,
        attempt: this.attempt,
        error: s.error ?? null,
        images: s.images ?? [],
      };
      const key = JSON.stringify([update.status, update.step, update.queuePosition, update.preview, Math.round(update.progress * 1000)]);
      if (key === this.lastKey && !s.images?.length && !s.error) return;
      this.lastKey = key;
      const stored = await this.publisher.publish(update);
      if (!stored) this.onEnded();
    }).catch((err: unknown) => {
      // Progress is best effort: a lost update is healed by the next one and by the streams' re-reads.
      this.log.warn({ err }, 'could not publish progress');
    });
  }

  /** Waits until everything reported so far is published. */
  flush(): Promise<void> {
    return this.chain;
  }
}
