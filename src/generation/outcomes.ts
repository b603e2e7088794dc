/**
 * The ends of a generation as the worker records them: written to Postgres first (the truth), then
 * published to its watchers. Shared by the processors and the stranded-generation sweep.
 */
import type { Knex } from 'knex';
import type { CreditMeter } from '../credits/meter';
import type { ProgressPublisher } from '../progress/publisher';
import { queueWebhook, type WebhookQueueDeps } from '../webhooks/events';
import { progressFromRow } from './progressOf';
import { isTerminal } from './lifecycle';
import { endGenerationWithRefund, findGeneration, type GenerationFailure, type GenerationRow } from './repository';

/**
 * Publishes a final state recorded in Postgres. The publish script refuses it when the snapshot is
 * final already, so this only fills the gap left by a worker that died between the two writes.
 */
export async function republishFinal(db: Knex, publisher: ProgressPublisher, row: GenerationRow): Promise<void> {
  await publisher.publish(await progressFromRow(db, row));
}

/**
 * Ends the generation FAILED (CANCELLED for a cancel) with its credits back, once, and tells its
 * watchers. Safe to call again after a failure: a row already final (ended by this call's earlier
 * try whose publish failed, by its owner, or by another delivery) is published as it is; the
 * publish script ignores a second final state. The call that ends it queues its webhook (best
 * effort, before the end is published, like a success's follow-ups).
 */
export async function failGeneration(
  db: Knex,
  publisher: ProgressPublisher,
  id: string,
  failure: GenerationFailure,
  webhooks: WebhookQueueDeps,
  credits?: CreditMeter,
): Promise<void> {
  const ended = await endGenerationWithRefund(db, id, failure.code === 'CANCELLED' ? 'cancel' : 'fail', failure, credits);
  if (ended) await queueWebhook(webhooks, id, ended.status === 'CANCELLED' ? 'CANCELLED' : 'FAILED');
  const final = ended ?? (await findGeneration(db, id));
  if (final && isTerminal(final.status)) await publisher.publish(await progressFromRow(db, final));
}
