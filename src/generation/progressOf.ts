import type { Knex } from 'knex';
import type { ProgressEvent } from '../progress/event';
import { loadGenerationImages } from './images';
import type { GenerationRow } from './repository';

/**
 * A generation's state as read from Postgres, for when Redis has no snapshot (never published yet,
 * or expired after RESULT_EXPIRES_S). Its seq is 0: every published state is newer.
 */
export async function progressFromRow(db: Knex, row: GenerationRow): Promise<ProgressEvent> {
  return {
    generationId: row.id,
    seq: 0,
    status: row.status,
    progress: row.status === 'SUCCEEDED' ? 1 : row.progress,
    step: null,
    totalSteps: row.input.steps,
    etaSeconds: null,
    queuePosition: null,
    preview: null,
    attempt: row.attempts,
    error: row.error_code
      ? { code: row.error_code, message: row.error_message ?? '', retryable: row.error_retryable ?? false }
      : null,
    images: row.status === 'SUCCEEDED' ? await loadGenerationImages(db, row.id) : [],
  };
}
