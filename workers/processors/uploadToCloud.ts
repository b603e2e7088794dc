/**
 * uploadToCloud: stores a generation's staged images, records them, marks it SUCCEEDED and queues
 * what follows a success (saveChatHistory). Keys derive from the generation id, image rows are
 * unique per (generation, index) and the final transaction refuses a generation that already
 * ended, so a re-delivered upload changes nothing; it only queues the follow-ups again, in case the
 * delivery before it died between recording the success and queuing them (their job ids derive
 * from the generation, and what they write is unique per generation).
 */
import type { Knex } from 'knex';
import { chatCharacterOf } from '../../src/chat/history';
import { completeGeneration, discardStagedImages, loadStagedImages, type StoredImage } from '../../src/generation/images';
import { failGeneration, republishFinal } from '../../src/generation/outcomes';
import { progressFromRow } from '../../src/generation/progressOf';
import { findGeneration, type GenerationRow } from '../../src/generation/repository';
import { isTerminal } from '../../src/generation/lifecycle';
import { JobError } from '../../src/jobs/errors';
import type { JobProducer } from '../../src/jobs/queues';
import type { Processor } from '../../src/jobs/runner';
import type { ProgressPublisher } from '../../src/progress/publisher';
import { imageKeys, type ObjectStorage } from '../../src/storage/storage';

export interface UploadDeps {
  db: Knex;
  publisher: ProgressPublisher;
  producer: JobProducer;
  storage: ObjectStorage;
}

export function uploadToCloudProcessor(deps: UploadDeps): Processor<'uploadToCloud'> {
  const { db, publisher, producer, storage } = deps;

  /** Queues what follows a recorded success; a failure to queue retries this job, which only queues them. */
  const queueFollowUps = async (generation: GenerationRow) => {
    if (!chatCharacterOf(generation)) return;
    try {
      await producer.enqueue('saveChatHistory', generation.id, { generationId: generation.id });
    } catch (err) {
      throw new JobError('QUEUE_UNAVAILABLE', 'Saving the chat history could not be queued; it will be retried.', { cause: err });
    }
  };

  return {
    async run(ctx) {
      const id = ctx.payload.generationId;
      const row = await findGeneration(db, id);
      if (!row) return;
      if (isTerminal(row.status)) {
        // Ended meanwhile (cancelled, failed): its staged copies are of no use any more.
        await discardStagedImages(db, id);
        await republishFinal(db, publisher, row);
        if (row.status === 'SUCCEEDED') await queueFollowUps(row);
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
          url: storage.url(keys.image),
          thumbnailUrl: storage.url(keys.thumbnail),
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
      await publisher.publish(await progressFromRow(db, done));
      await queueFollowUps(done);
    },
    async onFinalFailure(ctx, failure) {
      await failGeneration(db, publisher, ctx.payload.generationId, failure);
    },
  };
}
