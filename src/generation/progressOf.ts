import type { Knex } from 'knex';
import type { ProgressEvent, ProgressImage } from '../progress/event';
import { loadImagesOfGenerations } from './images';
import type { GenerationRow } from './repository';

/**
 * A generation's state as read from Postgres, for when Redis has no snapshot (never published yet,
 * or expired after RESULT_EXPIRES_S). Its seq is 0: every published state is newer.
 */
export async function progressFromRow(db: Knex, row: GenerationRow): Promise<ProgressEvent> {
  const [event] = await progressFromRows(db, [row]);
  return event!;
}

/** `progressFromRow` of several rows, their images (only SUCCEEDED ones have any) read in one query. */
export async function progressFromRows(db: Knex, rows: readonly GenerationRow[]): Promise<ProgressEvent[]> {
  const succeeded = rows.filter((r) => r.status === 'SUCCEEDED').map((r) => r.id);
  // No I/O when none has succeeded.
  const images = succeeded.length > 0 ? await loadImagesOfGenerations(db, succeeded) : new Map<string, ProgressImage[]>();
  return rows.map((row) => ({
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
    images: images.get(row.id) ?? [],
  }));
}
