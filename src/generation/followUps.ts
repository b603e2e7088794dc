/**
 * What follows a generation's success, queued by the upload job once the generation is SUCCEEDED
 * and before SUCCEEDED is published (whoever sees it can count on them being queued):
 * - `saveChatHistory`, for a generation with a character: owed. A failure to queue it fails the
 *   upload job with a retryable error, and the retry (finding the generation SUCCEEDED) only queues
 *   it; a re-delivered upload queues it again too. Its job id and its row are unique per generation.
 * - the "your images are ready" mail, for owners with a verified address who did not switch it
 *   off: a courtesy. Queued once, when the success is recorded (never again by a re-delivery, which
 *   could not tell whether it was sent), and a failure to queue it is logged, not thrown.
 */
import type { Knex } from 'knex';
import { chatCharacterOf } from '../chat/history';
import { User } from '../db/models';
import { JobError } from '../jobs/errors';
import type { JobProducer } from '../jobs/queues';
import type { Logger } from '../logger';
import type { GenerationRow } from './repository';

export async function queueChatHistory(producer: JobProducer, generation: GenerationRow): Promise<void> {
  if (!chatCharacterOf(generation)) return;
  try {
    await producer.enqueue('saveChatHistory', generation.id, { generationId: generation.id });
  } catch (err) {
    throw new JobError('QUEUE_UNAVAILABLE', 'Saving the chat history could not be queued; it will be retried.', { cause: err });
  }
}

export async function queueImagesReadyMail(db: Knex, producer: JobProducer, row: GenerationRow, log: Logger): Promise<void> {
  try {
    const owner = await User.query(db).findById(row.user_id).select('email', 'notify_images_ready', 'email_verified_at');
    if (owner?.notify_images_ready && owner.email_verified_at) {
      await producer.enqueue('sendEmail', `imagesReady:${row.id}`, {
        to: owner.email,
        template: 'imagesReady',
        params: { generationId: row.id, prompt: row.input.prompt, images: row.input.batchSize },
      });
    }
  } catch (err) {
    log.warn({ err, generation: row.id }, 'could not queue the images-ready mail');
  }
}
