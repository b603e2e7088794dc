/**
 * The one rule of "queue a webhook for this event", called wherever an event happens: STARTED by
 * the generation job (its first start), and every terminal state wherever it is reached (the upload
 * job's success, a job's final failure, the stranded-generation sweep, the API's cancel and its
 * ENQUEUE_FAILED path).
 *
 * The receiver is the URL the generateImage request named (generation_webhooks), else the owner's
 * default (updateWebhookSettings) as it is when the event happens; none, or no signing secret
 * yet, means no webhook. The terminal event always goes; STARTED only when asked for.
 *
 * Best effort, like the images-ready mail: queuing never fails nor holds up the generation's own
 * work. A failure to queue is logged and that event is not delivered (its generation is unharmed,
 * and `generation(id)` still tells its state). The job id is derived from (generation, event), so a
 * second call for the same event while the first delivery is pending queues nothing more; the
 * webhook-id the receiver sees is derived the same way, so a receiver deduplicates on it.
 */
import type { Knex } from 'knex';
import type { GenerationStatus } from '../generation/lifecycle';
import type { JobProducer } from '../jobs/queues';
import type { Logger } from '../logger';

/** What a client may ask for; the terminal event (SUCCEEDED, FAILED or CANCELLED) is always sent. */
export const WEBHOOK_EVENTS = ['STARTED', 'COMPLETED'] as const;
export type WebhookEventChoice = (typeof WEBHOOK_EVENTS)[number];

/** The events a delivery is about: the generation's status when it happened. */
export type WebhookEvent = Extract<GenerationStatus, 'STARTED' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED'>;

/** The receiver's webhook-id of an event: the same for every try, so the receiver can deduplicate. */
export const webhookIdOf = (generationId: string, event: WebhookEvent) => `msg_${generationId}_${event.toLowerCase()}`;

export interface WebhookQueueDeps {
  db: Knex;
  producer: JobProducer;
  log: Logger;
}

/** Queues the delivery of `event` of a generation, when its owner wants one. Never throws. */
export async function queueWebhook(deps: WebhookQueueDeps, generationId: string, event: WebhookEvent): Promise<void> {
  try {
    const target = await deps.db('generations as g')
      .join('users as u', 'u.id', 'g.user_id')
      .leftJoin('generation_webhooks as w', 'w.generation_id', 'g.id')
      .where('g.id', generationId)
      .first<{ url: string | null; events: string[] | null; has_secret: boolean } | undefined>(
        deps.db.raw('COALESCE(w.url, u.webhook_url) AS url'),
        deps.db.raw('CASE WHEN w.url IS NOT NULL THEN w.events ELSE u.webhook_events END AS events'),
        deps.db.raw('u.webhook_secret IS NOT NULL AS has_secret'),
      );
    if (!target?.url || !target.has_secret) return;
    if (event === 'STARTED' && !target.events?.includes('STARTED')) return;
    await deps.producer.enqueue('deliverWebhook', `${generationId}:${event}`, { generationId, event, url: target.url });
  } catch (err) {
    deps.log.warn({ err, generationId, event }, 'could not queue a webhook');
  }
}
