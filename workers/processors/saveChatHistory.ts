/**
 * saveChatHistory: files a succeeded generation as one exchange of its character's chat. Queued by
 * the upload job once the generation is SUCCEEDED; the exchange is unique per generation, so a job
 * delivered twice, or queued again by a re-delivered upload, saves it once.
 */
import type { Knex } from 'knex';
import { saveChatExchange } from '../../src/chat/history';
import { findGeneration } from '../../src/generation/repository';
import { JobError } from '../../src/jobs/errors';
import type { Processor } from '../../src/jobs/runner';

export interface SaveChatHistoryDeps {
  db: Knex;
}

export function saveChatHistoryProcessor(deps: SaveChatHistoryDeps): Processor<'saveChatHistory'> {
  const { db } = deps;
  return {
    async run(ctx) {
      const id = ctx.payload.generationId;
      const generation = await findGeneration(db, id);
      if (!generation) {
        ctx.log.warn({ generationId: id }, 'generation row is gone; no chat history to save');
        return;
      }
      if (generation.status !== 'SUCCEEDED') {
        throw new JobError('GENERATION_NOT_SUCCEEDED', `Generation ${id} is ${generation.status}: only a succeeded generation enters the chat history.`);
      }
      const saved = await saveChatExchange(db, generation);
      if (!saved) ctx.log.debug({ generationId: id }, 'chat exchange already saved, or no character');
    },
    async onFinalFailure(ctx, failure) {
      // Nothing to undo: the generation stays SUCCEEDED, only its exchange is missing from the chat.
      ctx.log.error({ generationId: ctx.payload.generationId, failure }, 'the chat history of a generation could not be saved');
    },
  };
}
