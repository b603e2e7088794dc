/**
 * The body of a webhook: the same on every try of an event (built from the generation's recorded
 * state, which no longer changes once the event happened), so a receiver that deduplicates on
 * webhook-id loses nothing. It carries no image URLs: those are signed per answer and expire
 * (IMAGE_URL_TTL_S), and a delivery may be retried for a day; the receiver asks
 * `generation(id) { images { url } }` for fresh ones. It carries what does not expire instead:
 * each image's size, blurhash and seed.
 */
import type { GenerationRow } from '../generation/repository';
import type { ProgressImage } from '../progress/event';
import type { WebhookEvent } from './events';

export interface WebhookBody {
  /** generation.started, generation.succeeded, generation.failed, generation.cancelled */
  type: string;
  /** When the event happened. */
  timestamp: string;
  data: {
    generationId: string;
    status: WebhookEvent;
    error: { code: string; message: string; retryable: boolean } | null;
    images: Array<{ index: number; width: number; height: number; blurhash: string; seed: number | null }>;
  };
}

export function webhookBody(row: GenerationRow, event: WebhookEvent, images: readonly ProgressImage[]): string {
  const at = (event === 'STARTED' ? row.started_at : row.finished_at) ?? row.updated_at;
  const body: WebhookBody = {
    type: `generation.${event.toLowerCase()}`,
    timestamp: new Date(at).toISOString(),
    data: {
      generationId: row.id,
      status: event,
      error: event !== 'STARTED' && row.error_code ? { code: row.error_code, message: row.error_message ?? '', retryable: row.error_retryable ?? false } : null,
      images: event === 'SUCCEEDED' ? images.map((i, index) => ({ index, width: i.width, height: i.height, blurhash: i.blurhash, seed: i.seed })) : [],
    },
  };
  return JSON.stringify(body);
}
