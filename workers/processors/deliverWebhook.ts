/**
 * deliverWebhook: POSTs one event of a generation, signed with its owner's secret, to the receiver
 * chosen when the event was queued (src/webhooks/events.ts), and records the try in
 * webhook_deliveries. A 2xx answer delivers it; anything else is a failed try that the error table
 * retries with exponential backoff (WEBHOOK_MAX_ATTEMPTS tries over about a day), except a 410 Gone
 * (the receiver says it wants no more) and an address the rules refuse. Nothing depends on a
 * webhook, so a final failure is only logged.
 */
import type { Knex } from 'knex';
import { loadGenerationImages } from '../../src/generation/images';
import { findGeneration } from '../../src/generation/repository';
import { JobError } from '../../src/jobs/errors';
import type { Processor } from '../../src/jobs/runner';
import type { Config } from '../../src/config';
import { webhookIdOf } from '../../src/webhooks/events';
import { webhookBody } from '../../src/webhooks/payload';
import { postWebhook, WebhookPostError } from '../../src/webhooks/post';
import { signWebhook } from '../../src/webhooks/signing';

/** The longest error text kept with a try. */
const ERROR_MAX_LENGTH = 500;
/** The receiver asks never to be called again for this. */
const HTTP_GONE = 410;

export interface DeliverWebhookDeps {
  db: Knex;
  settings: Config['webhooks'];
}

/** What a receiver's status code means for the delivery; undefined: delivered. */
function failureOf(status: number): JobError | undefined {
  if (status >= 200 && status < 300) return undefined;
  if (status === HTTP_GONE) return new JobError('WEBHOOK_GONE', 'The receiver answered 410 Gone; the delivery stops.');
  if (status >= 300 && status < 400) return new JobError('WEBHOOK_REDIRECTED', `The receiver answered ${status}; redirects are not followed.`);
  return new JobError('WEBHOOK_REJECTED', `The receiver answered ${status}.`);
}

export function deliverWebhookProcessor(deps: DeliverWebhookDeps): Processor<'deliverWebhook'> {
  const { db, settings } = deps;
  return {
    async run(ctx) {
      const { generationId, event, url } = ctx.payload;
      const row = await findGeneration(db, generationId);
      if (!row) {
        ctx.log.warn({ generationId }, 'generation row is gone; no webhook to deliver');
        return;
      }
      const owner = await db('users').where({ id: row.user_id }).first<{ webhook_secret: string | null } | undefined>('webhook_secret');
      if (!owner?.webhook_secret) throw new JobError('WEBHOOK_NO_SECRET', 'The owner has no webhook signing secret.');
      const images = event === 'SUCCEEDED' ? await loadGenerationImages(db, generationId) : [];
      const body = webhookBody(row, event, images);
      const webhookId = webhookIdOf(generationId, event);
      // Signed per try: the timestamp is the try's own, and a rotated secret applies from the next try.
      const headers = signWebhook(owner.webhook_secret, webhookId, body);
      const attempt = settings.maxAttempts - ctx.retriesLeft;
      const began = performance.now();
      let status: number | null = null;
      let failure: JobError | undefined;
      try {
        status = await postWebhook({ url, headers: { ...headers }, body, timeoutMs: settings.timeoutMs, allowPrivate: settings.allowPrivate, signal: ctx.signal });
        failure = failureOf(status);
      } catch (err) {
        failure = err instanceof WebhookPostError ? new JobError(err.code, err.message, { cause: err }) : new JobError('WEBHOOK_UNREACHABLE', 'The receiver could not be reached.', { cause: err });
      }
      await db('webhook_deliveries').insert({
        generation_id: generationId,
        event,
        webhook_id: webhookId,
        attempt,
        status_code: status,
        error: failure ? failure.message.slice(0, ERROR_MAX_LENGTH) : null,
        latency_ms: Math.round(performance.now() - began),
      });
      if (failure) throw failure;
    },
    async onFinalFailure(ctx, failure) {
      ctx.log.warn({ generationId: ctx.payload.generationId, event: ctx.payload.event, failure }, 'webhook not delivered');
    },
  };
}
