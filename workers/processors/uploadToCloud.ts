/**
 * uploadToCloud: stores a generation's staged images, records them, marks it SUCCEEDED and queues
 * what follows a success (src/generation/followUps.ts). Keys derive from the generation id, image rows are
 * unique per (generation, index) and the final transaction refuses a generation that already
 * ended, so a re-delivered upload changes nothing; it only queues the follow-ups again, in case the
 * delivery before it died between recording the success and queuing them (their job ids derive
 * from the generation, and what they write is unique per generation).
 */
import type { Knex } from 'knex';
import type { CreditMeter } from '../../src/credits/meter';
import { completeGeneration, discardStagedImages, loadStagedImages, type StoredImage } from '../../src/generation/images';
import { failGeneration, republishFinal } from '../../src/generation/outcomes';
import { progressFromRow } from '../../src/generation/progressOf';
import { findGeneration } from '../../src/generation/repository';
import { isTerminal } from '../../src/generation/lifecycle';
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
      const row = await findGeneration(db, id);
      if (!row) return;
      if (isTerminal(row.status)) {
        // Ended meanwhile (cancelled, failed): its staged copies are of no use any more.
        await discardStagedImages(db, id);
        // What a success owes is queued again first (the delivery before may have died before it did).
        if (row.status === 'SUCCEEDED') await queueChatHistory(producer, row);
        await republishFinal(db, publisher, row);
        return;
      }
      const staged = await loadStagedImages(db, id);
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
      const done = await completeGeneration(db, id, stored);
      if (!done) {
        // It ended while its images were being stored (a cancel): drop the staged copies.
        await discardStagedImages(db, id);
        return;
      }
      // Queued before SUCCEEDED is told: whoever sees it can count on what follows being queued.
      await queueImagesReadyMail(db, producer, done, ctx.log);
      await queueChatHistory(producer, done);
      await queueWebhook({ db, producer, log: ctx.log }, id, 'SUCCEEDED');
      await publisher.publish(await progressFromRow(db, done));
    },
    async onFinalFailure(ctx, failure) {
      await failGeneration(db, publisher, ctx.payload.generationId, failure, { db, producer, log: ctx.log }, deps.credits);
    },
  };
}
