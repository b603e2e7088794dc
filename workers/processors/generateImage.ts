/**
 * generateImage: the Stable Diffusion call and post-processing. Idempotent under re-delivery,
 * keyed by the generation id: a final generation is left alone, one whose images are already
 * staged only has its upload queued again, and the upload job's id is derived from the generation.
 */
import type { Knex } from 'knex';
import type { Redis } from 'ioredis';
import type { PostprocessPool } from '../../src/imaging/pool';
import type { JobProducer } from '../../src/jobs/queues';
import type { Processor } from '../../src/jobs/runner';
import type { Logger } from '../../src/logger';
import { loadStagedImages, stageImagesForUpload, type StagedImage } from '../../src/generation/images';
import { recordGenerationSeconds } from '../../src/generation/queueInfo';
import { endGenerationWithRefund, findGeneration, setGenerationStatus } from '../../src/generation/repository';
import { progressFromRow } from '../../src/generation/progressOf';
import { isTerminal } from '../../src/generation/status';
import type { ProgressPublisher } from '../../src/progress/publisher';
import type { SdClient, SdProgress } from '../../src/sd/client';
import { GenerationReporter } from './generationReporter';

/** How often a running generation checks whether it was cancelled (a cancel may come from any API process). */
const CANCEL_CHECK_MS = 1000;

/** How the overall progress (0..1) is split between the phases. */
export const PHASE_PROGRESS = { generatingEnd: 0.9, postProcessing: 0.9, uploading: 0.95 } as const;

export interface GenerateImageDeps {
  db: Knex;
  redis: Redis;
  redisPrefix: string;
  publisher: ProgressPublisher;
  producer: JobProducer;
  sd: SdClient;
  pool: PostprocessPool;
  previewIntervalMs: number;
  previewSize: number;
  log: Logger;
}

export function generateImageProcessor(deps: GenerateImageDeps): Processor<'generateImage'> {
  const { db, publisher, producer, sd, pool } = deps;

  return {
    async run(ctx) {
      const id = ctx.payload.generationId;
      const existing = await findGeneration(db, id);
      if (!existing) {
        ctx.log.warn({ generationId: id }, 'generation row is gone; nothing to do');
        return;
      }
      if (isTerminal(existing.status)) return;
      if (existing.status === 'UPLOADING' && (await loadStagedImages(db, id)).length > 0) {
        // A re-delivery after the images were staged: only the follow-up is missing, perhaps.
        await producer.enqueue('uploadToCloud', id, { generationId: id });
        return;
      }

      const row = await setGenerationStatus(db, id, 'STARTED', { newAttempt: true });
      if (!row) return;
      const began = performance.now();
      const input = row.input;
      const reporter = new GenerationReporter(publisher, id, row.attempts, input.steps, ctx.log, () =>
        ctx.abort({ code: 'CANCELLED', message: 'The generation was cancelled.', retryable: false }),
      );
      reporter.report({ status: 'STARTED', progress: 0 });

      let generating = false;
      let lastPreviewAt = 0;
      // One preview is shrunk at a time; ticks meanwhile go out without one instead of queueing up.
      let previewBusy = false;
      const onProgress = (p: SdProgress) => {
        if (p.phase === 'queued') {
          reporter.report({ status: 'STARTED', progress: 0, queuePosition: p.queuePosition, etaSeconds: p.etaSeconds });
          return;
        }
        if (!generating) {
          generating = true;
          void setGenerationStatus(db, id, 'GENERATING').catch((err: unknown) => ctx.log.warn({ err }, 'status update failed'));
        }
        const base = {
          status: 'GENERATING' as const,
          progress: p.progress * PHASE_PROGRESS.generatingEnd,
          step: p.step,
          totalSteps: p.totalSteps ?? input.steps,
          etaSeconds: p.etaSeconds,
        };
        const now = Date.now();
        if (p.preview && !previewBusy && now - lastPreviewAt >= deps.previewIntervalMs) {
          lastPreviewAt = now;
          previewBusy = true;
          const raw = Buffer.from(p.preview.dataUri.replace(/^data:[^,]*,/, ''), 'base64');
          const shrunk = pool.preview(raw, deps.previewSize).catch(() => null);
          reporter.report(async () => {
            const preview = await shrunk;
            previewBusy = false;
            return { ...base, preview };
          });
        } else {
          reporter.report(base);
        }
      };

      // The soft limit asks the SD server to stop sampling: A1111 then answers with the image so far.
      const onSoftLimit = () => void sd.interruptIfActive(taskId).catch(() => undefined);
      const taskId = `${id}-${row.attempts}`;
      ctx.softSignal.addEventListener('abort', onSoftLimit, { once: true });
      // A cancel ends the row and the snapshot; this notices it even while SD reports nothing new.
      const cancelWatch = setInterval(() => {
        publisher.isFinal(id).then(
          (final) => final && ctx.abort({ code: 'CANCELLED', message: 'The generation was cancelled.', retryable: false }),
          () => undefined,
        );
      }, CANCEL_CHECK_MS);
      let result;
      try {
        // GenerationInput carries every txt2img field under the client's names.
        result = await sd.txt2img(
          input,
          { taskId, signal: ctx.signal, onProgress },
        );
      } finally {
        clearInterval(cancelWatch);
        ctx.softSignal.removeEventListener('abort', onSoftLimit);
      }

      if (!(await setGenerationStatus(db, id, 'POST_PROCESSING', { progress: PHASE_PROGRESS.postProcessing }))) return;
      reporter.report({ status: 'POST_PROCESSING', progress: PHASE_PROGRESS.postProcessing });
      const processed = await Promise.all(result.images.map((png) => pool.process(png, ctx.signal)));
      const staged: StagedImage[] = processed.map((p, index) => ({
        index,
        webp: p.webp,
        thumbnail: p.thumbnail,
        width: p.width,
        height: p.height,
        blurhash: p.blurhash,
        seed: result.seeds[index] ?? null,
        sha256: p.sha256,
      }));
      if (!(await stageImagesForUpload(db, id, staged))) return;
      reporter.report({ status: 'UPLOADING', progress: PHASE_PROGRESS.uploading });
      // Everything this job reports must be out before the upload job can report SUCCEEDED.
      await reporter.flush();
      await producer.enqueue('uploadToCloud', id, { generationId: id });
      await recordGenerationSeconds(deps.redis, deps.redisPrefix, (performance.now() - began) / 1000).catch(() => undefined);
    },

    async onRetry(ctx, failure) {
      const row = await setGenerationStatus(db, ctx.payload.generationId, 'RETRYING');
      if (row) await publisher.publish({ ...(await progressFromRow(db, row)), error: failure });
    },

    async onFinalFailure(ctx, failure) {
      await failGeneration(db, publisher, ctx.payload.generationId, failure);
    },
  };
}

/** Ends the generation as FAILED with its credits back (once) and tells its watchers. */
export async function failGeneration(
  db: Knex,
  publisher: ProgressPublisher,
  id: string,
  failure: { code: string; message: string; retryable: boolean },
): Promise<void> {
  const ended = await endGenerationWithRefund(db, id, failure.code === 'CANCELLED' ? 'CANCELLED' : 'FAILED', failure);
  // Null: already final (cancelled by its owner, or finished by another delivery): nothing to tell.
  if (ended) await publisher.publish(await progressFromRow(db, ended));
}
