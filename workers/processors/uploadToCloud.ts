/**
 * uploadToCloud: stores a generation's staged images, records them, marks it SUCCEEDED and queues
 * what follows a success (src/generation/followUps.ts). Keys derive from the generation id, image rows are
 * unique per (generation, index) and the final transaction refuses a generation that already
 * ended, so a re-delivered upload changes nothing; it only queues the follow-ups again, in case the
 * delivery before it died between recording the success and queuing them (their job ids derive
 * from the generation, and what they write is unique per generation). Its reads and writes wait for
 * Postgres when it cannot be reached (untilDatabaseAnswers) rather than failing the upload.
 */
import type { Knex } from 'knex';
import type { CreditMeter } from '../../src/credits/meter';
import { completeGeneration, discardStagedImages, loadStagedImages, type StoredImage } from '../../src/generation/images';
import { failGeneration, republishFinal } from '../../src/generation/outcomes';
import { progressFromRow } from '../../src/generation/progressOf';
import { findGeneration } from '../../src/generation/repository';
import { isTerminal } from '../../src/generation/lifecycle';
import { untilDatabaseAnswers } from '../../src/db/unavailable';
import { JobError } from '../../src/jobs/errors';
import type { JobProducer } from '../../src/jobs/queues';
import type { Processor } from '../../src/jobs/runner';
import { queueChatHistory, queueImagesReadyMail } from '../../src/generation/followUps';
import type { ProgressPublisher } from '../../src/progress/publisher';
import { queueWebhook } from '../../src/webhooks/events';
import { imageKeys, type ObjectStorage } from '../../src/storage/storage';

export interface UploadDeps {
  db: Knex;
  publisher: ProgressPublisher;
  /** Queues what follows a success (chat history, the images-ready mail, the webhook). */
  producer: JobProducer;
  storage: ObjectStorage;
  /** Counts the refunds of the generations it fails. */
  credits?: CreditMeter;
}

export function uploadToCloudProcessor(deps: UploadDeps): Processor<'uploadToCloud'> {
  const { db, publisher, producer, storage } = deps;

  return {
    async run(ctx) {
      const id = ctx.payload.generationId;
      const untilDb = <T>(what: string, write: () => Promise<T>) => untilDatabaseAnswers(write, { signal: ctx.signal, log: ctx.log, what });
      const row = await untilDb('read the generation', () => findGeneration(db, id));
      if (!row) return;
      if (isTerminal(row.status)) {
        // Ended meanwhile (cancelled, failed): its staged copies are of no use any more.
        await discardStagedImages(db, id);
        // What a success owes is queued again first (the delivery before may have died before it did).
        if (row.status === 'SUCCEEDED') await queueChatHistory(producer, row);
        await republishFinal(db, publisher, row);
        return;
      }
      const staged = await untilDb('read the staged images', () => loadStagedImages(db, id));
      if (staged.length === 0) {
        throw new JobError('STAGED_IMAGES_MISSING', 'The generated images were lost before they could be stored.');
      }
      const stored: StoredImage[] = [];
      for (const image of staged) {
        ctx.signal.throwIfAborted();
        const keys = imageKeys(id, image.index);
        await Promise.all([
          storage.put(keys.image, image.webp, 'image/webp', ctx.signal),
          storage.put(keys.thumbnail, image.thumbnail, 'image/webp', ctx.signal),
        ]);
        stored.push({
          index: image.index,
          storageKey: keys.image,
          thumbnailKey: keys.thumbnail,
          width: image.width,
          height: image.height,
          blurhash: image.blurhash,
          seed: image.seed,
          sha256: image.sha256,
          bytes: image.webp.length,
        });
      }
      let done = await untilDb('record the images', () => completeGeneration(db, id, stored));
      if (!done) {
        const now = await untilDb('read the generation', () => findGeneration(db, id));
        if (now?.status !== 'SUCCEEDED') {
          // It ended while its images were being stored (a cancel): drop the staged copies.
          await untilDb('drop the staged images', () => discardStagedImages(db, id));
          return;
        }
        // Succeeded already: this write's first try committed but its answer was lost with the
        // connection (or another delivery got there first). What follows a success is still owed.
        done = now;
      }
      const succeeded = done;
      // Queued before SUCCEEDED is told: whoever sees it can count on what follows being queued.
      // Best effort (each logs what it could not queue), as before an outage.
      await queueImagesReadyMail(db, producer, succeeded, ctx.log);
      await queueChatHistory(producer, succeeded);
      await queueWebhook({ db, producer, log: ctx.log }, id, 'SUCCEEDED');
      await publisher.publish(await untilDb('read the images', () => progressFromRow(db, succeeded)));
    },
    async onFinalFailure(ctx, failure) {
      await failGeneration(db, publisher, ctx.payload.generationId, failure, { db, producer, log: ctx.log }, deps.credits);
    },
  };
}
