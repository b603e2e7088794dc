/**
 * generateImage: the Stable Diffusion call and post-processing. Idempotent under re-delivery,
 * keyed by the generation id: a final generation is left alone, one whose images are already
 * staged only has its upload queued again, and the upload job's id is derived from the generation.
 * Its reads and writes wait for Postgres when it cannot be reached (untilDatabaseAnswers) instead
 * of failing the job: once SD has answered, a retry would call the GPU a second time.
 */
import type { Knex } from 'knex';
import type { CreditMeter } from '../../src/credits/meter';
import type { Redis } from 'ioredis';
import type { PostprocessPool } from '../../src/imaging/pool';
import type { JobProducer } from '../../src/jobs/queues';
import { untilDatabaseAnswers } from '../../src/db/unavailable';
import { JobError } from '../../src/jobs/errors';
import type { Processor } from '../../src/jobs/runner';
import type { Logger } from '../../src/logger';
import { hasStagedImages, stageImagesForUpload, type StagedImage } from '../../src/generation/images';
import { recordGenerationSeconds } from '../../src/generation/queueInfo';
import { failGeneration, republishFinal } from '../../src/generation/outcomes';
import { findGeneration, transitionGeneration } from '../../src/generation/repository';
import { progressFromRow } from '../../src/generation/progressOf';
import { isTerminal, PHASE_PROGRESS } from '../../src/generation/lifecycle';
import type { ProgressPublisher } from '../../src/progress/publisher';
import { queueWebhook } from '../../src/webhooks/events';
import { SdError, type SdClient, type SdProgress } from '../../src/sd/client';
import { isServerGone, type SdFleet, type SdServerLease } from '../../src/sd/fleet';
import { GenerationReporter } from './generationReporter';
import { expireIfOverdue } from '../../src/generation/deadlines';

/** How often a running generation checks whether it was cancelled (a cancel may come from any API process). */
const CANCEL_CHECK_MS = 1000;

export interface GenerateImageDeps {
  db: Knex;
  redis: Redis;
  redisPrefix: string;
  publisher: ProgressPublisher;
  producer: JobProducer;
  /** The worker's SD servers: each attempt takes a free one (and its lease) for its txt2img call. */
  sd: SdFleet;
  /** Moves to another server per attempt after a server stopped answering (SD_SERVER_SWITCHES_MAX). */
  switchesMax: number;
  pool: PostprocessPool;
  previewIntervalMs: number;
  previewSize: number;
  /** Starts allowed before the generation is given up: retries + 1 + stalls (TASK_MAX_STALLS). */
  maxAttempts: number;
  log: Logger;
  /** Counts the refunds of the generations it fails. */
  credits?: CreditMeter;
}

export function generateImageProcessor(deps: GenerateImageDeps): Processor<'generateImage'> {
  const { db, publisher, producer, sd, pool } = deps;

  const enqueueUpload = async (id: string) => {
    try {
      await producer.enqueue('uploadToCloud', id, { generationId: id });
    } catch (err) {
      // The images are staged: a retry only enqueues again, it does not run the GPU again.
      throw new JobError('QUEUE_UNAVAILABLE', 'The upload could not be queued; it will be retried.', { cause: err });
    }
  };

  return {
    async run(ctx) {
      const id = ctx.payload.generationId;
      // Each of these is safe to run twice (a dropped connection leaves a commit's outcome unknown).
      const untilDb = <T>(what: string, write: () => Promise<T>) => untilDatabaseAnswers(write, { signal: ctx.signal, log: ctx.log, what });
      const existing = await untilDb('read the generation', () => findGeneration(db, id));
      if (!existing) {
        ctx.log.warn({ generationId: id }, 'generation row is gone; nothing to do');
        return;
      }
      if (isTerminal(existing.status)) {
        // Re-delivered after the end was recorded: make sure the watchers heard of it too.
        await untilDb('publish its end', () => republishFinal(db, publisher, existing));
        return;
      }
      if (await untilDb('look for staged images', () => hasStagedImages(db, id))) {
        // A re-delivery (or a retry) after the images were staged: the GPU work is done, only the
        // upload may be missing. Its job id is derived from the generation, so this is idempotent.
        if (!(await untilDb('mark it uploading', () => transitionGeneration(db, id, 'stage', { progress: PHASE_PROGRESS.uploading })))) return;
        await enqueueUpload(id);
        return;
      }

      // A start deadline is checked here, before the start and the GPU: past it, the generation ends
      // CANCELLED (DEADLINE_EXCEEDED) with its credits back. One statement, only for those with one.
      if (
        existing.start_deadline_at &&
        !existing.started_at &&
        (await untilDb('check its start deadline', () => expireIfOverdue({ db, publisher, producer, log: ctx.log, credits: deps.credits }, id)))
      ) {
        ctx.log.info({ generationId: id }, 'generation past its start deadline was cancelled before it started');
        return;
      }
      // Written twice, it counts one attempt too many: a dropped commit costs at most one of the margin.
      const row = await untilDb('start an attempt', () => transitionGeneration(db, id, 'start', { newAttempt: true }));
      if (!row) {
        // Not startable: something ended it meanwhile (a cancel, the deadline sweep, or this job's own
        // expiry whose answer a dropped connection lost). Its watchers must hear the end all the same.
        const now = await untilDb('read the generation', () => findGeneration(db, id));
        if (now && isTerminal(now.status)) await untilDb('publish its end', () => republishFinal(db, publisher, now));
        return;
      }
      if (row.attempts > deps.maxAttempts) {
        // Each retry and each re-delivery after a worker died counts; Bee-Queue itself would re-run a
        // job that kills its worker forever (#106).
        throw new JobError(
          'TOO_MANY_ATTEMPTS',
          `The generation was started ${row.attempts} times without finishing; it was given up and its credits returned.`,
        );
      }
      const began = performance.now();
      const input = row.input;
      const reporter = new GenerationReporter(publisher, id, row.attempts, input.steps, ctx.log, () =>
        ctx.abort({ code: 'CANCELLED', message: 'The generation was cancelled.', retryable: false }),
      );
      reporter.report({ status: 'STARTED', progress: 0 });
      // Once per generation, on its first start; not awaited: queuing it never holds up the GPU work.
      if (row.attempts === 1) void queueWebhook({ db, producer, log: ctx.log }, id, 'STARTED');
      try {
        let generating = false;
        /** The GENERATING write (not awaited on the progress path): the post-processing write waits for it, or it would land after and be refused. */
        let generatingWrite: Promise<unknown> = Promise.resolve();
        let lastPreviewAt = 0;
        // One preview is shrunk at a time; ticks meanwhile go out without one instead of queueing up.
        let previewBusy = false;
        // The soft limit asks the SD server to stop sampling: A1111 then answers with the image so far.
        // Interrupt is global, so it is sent only while our task is the active one; a limit that
        // passes while the task still waits at the server is acted on once it becomes active.
        let softLimitPassed = false;
        let interrupt: 'none' | 'asking' | 'sent' = 'none';
        /** The server and task id of the txt2img call under way (a move to another server changes both). */
        let current: { client: SdClient; taskId: string } | undefined;
        const interruptAtSoftLimit = () => {
          if (!softLimitPassed || interrupt !== 'none' || !current) return;
          interrupt = 'asking';
          current.client.interruptIfActive(current.taskId).then(
            (sent) => (interrupt = sent ? 'sent' : 'none'),
            () => (interrupt = 'none'),
          );
        };
        const onSoftLimit = () => {
          softLimitPassed = true;
          interruptAtSoftLimit();
        };
        const onProgress = (p: SdProgress) => {
          if (p.phase === 'active') interruptAtSoftLimit();
          if (p.phase === 'queued') {
            reporter.report({ status: 'STARTED', progress: 0, queuePosition: p.queuePosition, etaSeconds: p.etaSeconds });
            return;
          }
          if (!generating) {
            generating = true;
            generatingWrite = transitionGeneration(db, id, 'generate').catch((err: unknown) => ctx.log.warn({ err }, 'status update failed'));
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

        const taskId = `${id}-${row.attempts}`;
        // Every server is busy (or leased by another worker): the job says where it stands among this worker's waiting jobs.
        const waitingForServer = (position: number) => reporter.report({ status: 'STARTED', progress: 0, queuePosition: position });
        // The limit may have passed already (the signal is made on first use, aborted if so).
        if (ctx.softSignal.aborted) softLimitPassed = true;
        else ctx.softSignal.addEventListener('abort', onSoftLimit, { once: true });
        // A cancel ends the row and the snapshot; this notices it even while SD reports nothing new.
        const cancelWatch = setInterval(() => {
          publisher.isFinal(id).then(
            (final) => final && ctx.abort({ code: 'CANCELLED', message: 'The generation was cancelled.', retryable: false }),
            () => undefined,
          );
        }, CANCEL_CHECK_MS);
        let result;
        try {
          // A server that stops answering mid-job is taken out and the job moves to another one,
          // up to switchesMax times, without using up one of the job's retries: the job did nothing
          // wrong. Past that, or with no other server up, the error is the job's as usual.
          let avoid: string | undefined;
          for (let switches = 0; ; switches++) {
            const lease: SdServerLease = await sd.acquire(ctx.signal, { avoid, onWait: waitingForServer });
            const callTaskId = switches === 0 ? taskId : `${taskId}.${switches}`;
            current = { client: lease.client, taskId: callTaskId };
            interrupt = 'none';
            let answered = false;
            try {
              // GenerationInput carries every txt2img field under the client's names.
              result = await lease.client.txt2img(input, {
                taskId: callTaskId,
                signal: AbortSignal.any([ctx.signal, lease.signal]),
                onProgress,
              });
              answered = true;
              break;
            } catch (caught) {
              if (ctx.signal.aborted) throw caught;
              // A lost lease aborted the call: the server is not ours any more, which is no fault of the job.
              const err = lease.lost
                ? new SdError('SD_UNREACHABLE', lease.signal.reason instanceof Error ? lease.signal.reason.message : 'the SD server lease was lost', { cause: caught })
                : caught;
              if (!isServerGone(err)) throw err;
              if (!lease.lost) sd.markDown(lease.url, err);
              if (switches >= deps.switchesMax || (sd.upCount() === 0 && !lease.lost)) throw err;
              ctx.log.warn({ sd: lease.url, err: err instanceof Error ? err.message : err, switches: switches + 1 }, 'sd server lost mid-job; moving the job to another server');
              avoid = lease.url;
            } finally {
              current = undefined;
              // A call that did not answer may still run on the server: it is handed on only once idle.
              await (answered ? lease.release() : lease.releaseWhenIdle());
            }
          }
        } finally {
          clearInterval(cancelWatch);
          ctx.softSignal.removeEventListener('abort', onSoftLimit);
        }

        await generatingWrite;
        if (!(await untilDb('mark it post-processing', () => transitionGeneration(db, id, 'postProcess', { progress: PHASE_PROGRESS.postProcessing })))) return;
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
        if (!(await untilDb('stage the images', () => stageImagesForUpload(db, id, staged)))) return;
        reporter.report({ status: 'UPLOADING', progress: PHASE_PROGRESS.uploading });
        // Everything this job reports must be out before the upload job can report SUCCEEDED.
        await reporter.flush();
        await enqueueUpload(id);
        await recordGenerationSeconds(deps.redis, deps.redisPrefix, (performance.now() - began) / 1000).catch(() => undefined);
      } finally {
        // A failed attempt's last reports go out before the runner reports RETRYING or FAILED.
        await reporter.flush();
      }
    },

    async onRetry(ctx, failure) {
      const row = await transitionGeneration(db, ctx.payload.generationId, 'retry');
      if (row) await publisher.publish({ ...(await progressFromRow(db, row)), error: failure });
    },

    async onFinalFailure(ctx, failure) {
      await failGeneration(db, publisher, ctx.payload.generationId, failure, { db, producer, log: ctx.log }, deps.credits);
    },
  };
}
