/**
 * The old service's view of a generation: Celery's task states, as `AsyncResult` reported them and
 * `GET /api/v1/generation-status/{task_id}` answered them. The one place a generation status
 * becomes a Celery state, and the body of that answer.
 */
import type { GenerationStatus } from '../generation/lifecycle';
import { isTerminal } from '../generation/lifecycle';
import type { ProgressEvent } from '../progress/event';
import type { ImageUrls } from '../storage/storage';

export const CELERY_STATES = ['PENDING', 'STARTED', 'PROGRESS', 'RETRY', 'SUCCESS', 'FAILURE', 'REVOKED'] as const;
export type CeleryState = (typeof CELERY_STATES)[number];

/**
 * Every generation status and the Celery state it is reported as. The three working stages after
 * the start are all PROGRESS (the old task's custom state while it ran), told apart by the meta's
 * `progress` (sampling fills 0..0.9, post-processing 0.9, uploading 0.95).
 */
export const CELERY_STATE_OF = {
  QUEUED: 'PENDING',
  STARTED: 'STARTED',
  GENERATING: 'PROGRESS',
  POST_PROCESSING: 'PROGRESS',
  UPLOADING: 'PROGRESS',
  RETRYING: 'RETRY',
  SUCCEEDED: 'SUCCESS',
  FAILED: 'FAILURE',
  CANCELLED: 'REVOKED',
} as const satisfies Record<GenerationStatus, CeleryState>;

/** The meta of a running task (`AsyncResult.info` while it was not ready). */
export interface TaskProgress {
  step: number | null;
  total_steps: number | null;
  /** 0..1 over the whole generation, never going back. */
  progress: number;
  /** Estimated seconds until the images are ready. */
  eta: number | null;
  /** While PENDING: 1 = next to start. */
  queue_position: number | null;
}

export interface TaskImage {
  url: string;
  thumbnail_url: string;
  width: number;
  height: number;
  seed: number | null;
  blurhash: string;
}

/** The answer of `GET /api/v1/generation-status/{task_id}`: every key is always there, null when it does not apply. */
export interface TaskStatus {
  task_id: string;
  status: CeleryState;
  /** Set while the task is not ready (PENDING, STARTED, PROGRESS, RETRY). */
  progress: TaskProgress | null;
  /** Set on SUCCESS: the images, with URLs made for this answer (they expire IMAGE_URL_TTL_S later). */
  result: { images: TaskImage[] } | null;
  /** The error's message: why it FAILED, why the last try is being retried (RETRY), or the cancel (REVOKED). */
  error: string | null;
}

export async function taskStatus(event: ProgressEvent, imageUrls: ImageUrls): Promise<TaskStatus> {
  const status = CELERY_STATE_OF[event.status];
  const live = !isTerminal(event.status);
  return {
    task_id: event.generationId,
    status,
    progress: live
      ? {
          step: event.step,
          total_steps: event.totalSteps,
          progress: event.progress,
          eta: event.etaSeconds,
          queue_position: event.queuePosition,
        }
      : null,
    result:
      status === 'SUCCESS'
        ? {
            images: await Promise.all(
              event.images.map(async (i) => ({
                url: await imageUrls.url(i.key),
                thumbnail_url: await imageUrls.url(i.thumbnailKey),
                width: i.width,
                height: i.height,
                seed: i.seed,
                blurhash: i.blurhash,
              })),
            ),
          }
        : null,
    // A state after a retry may still carry the retried error; only these states are about one.
    error: status === 'RETRY' || status === 'FAILURE' || status === 'REVOKED' ? (event.error?.message ?? null) : null,
  };
}
