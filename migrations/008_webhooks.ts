import type { Knex } from 'knex';

/**
 * Signed webhooks (src/webhooks/):
 * - users: a default receiver URL with the events it wants, and the `whsec_` signing secret
 *   (null until the user asks for one with rotateWebhookSecret).
 * - generation_webhooks: the receiver a generateImage request named, one row per such generation
 *   (generations without one have no row, so the hot insert of every generation is unchanged).
 * - webhook_deliveries: every try of every delivery, as the deliverWebhook job saw it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => {
    t.text('webhook_url');
    t.specificType('webhook_events', 'text[]').notNullable().defaultTo('{}');
    t.text('webhook_secret');
  });
  await knex.schema.createTable('generation_webhooks', (t) => {
    t.uuid('generation_id').primary().references('generations.id').onDelete('CASCADE');
    t.text('url').notNullable();
    t.specificType('events', 'text[]').notNullable().defaultTo('{}');
  });
  await knex.schema.createTable('webhook_deliveries', (t) => {
    t.bigIncrements('id').primary();
    t.uuid('generation_id').notNullable().references('generations.id').onDelete('CASCADE');
    t.text('event').notNullable();
    t.text('webhook_id').notNullable();
    t.integer('attempt').notNullable();
    t.integer('status_code');
    t.text('error');
    t.integer('latency_ms').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw('CREATE INDEX webhook_deliveries_by_generation ON webhook_deliveries (generation_id, id)');
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
