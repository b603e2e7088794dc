/**
 * What follows a generation's success, queued by the upload job once the generation is SUCCEEDED:
 * the "your images are ready" mail, for owners with a verified address who did not switch it off.
 * The generation has succeeded whatever happens here, so a failure to queue is logged, not thrown.
 */
import type { Knex } from 'knex';
import { User } from '../db/models';
import type { JobProducer } from '../jobs/queues';
import type { Logger } from '../logger';
import type { GenerationRow } from './repository';

export async function queueFollowUpsOfSuccess(db: Knex, producer: JobProducer, row: GenerationRow, log: Logger): Promise<void> {
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
    log.warn({ err, generation: row.id }, 'could not queue what follows a success (the images-ready mail)');
  }
}
