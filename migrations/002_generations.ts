import type { Knex } from 'knex';

/**
 * The statuses as they were when this migration was written. A migration is history: it must create
 * the same table whatever the code says later, so a status added since comes with its own migration.
 */
const GENERATION_STATUSES = ['QUEUED', 'STARTED', 'GENERATING', 'POST_PROCESSING', 'UPLOADING', 'RETRYING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('generations', (t) => {
    t.uuid('id').primary();
    t.uuid('user_id').notNullable().references('users.id').onDelete('CASCADE');
    t.text('status').notNullable().defaultTo('QUEUED');
    t.jsonb('input').notNullable();
    t.integer('credits_reserved').notNullable();
    t.integer('attempts').notNullable().defaultTo(0);
    t.float('progress').notNullable().defaultTo(0);
    t.text('error_code');
    t.text('error_message');
    t.boolean('error_retryable');
    // Set once, by the statement that gives the credits back: the refund happens exactly once.
    t.timestamp('refunded_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('started_at', { useTz: true });
    t.timestamp('finished_at', { useTz: true });
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['user_id', 'created_at']);
  });
  await knex.raw(
    `ALTER TABLE generations ADD CONSTRAINT generations_status_known CHECK (status IN (${GENERATION_STATUSES.map((s) => `'${s}'`).join(', ')}))`,
  );

  await knex.schema.createTable('generated_images', (t) => {
    t.uuid('id').primary().defaultTo(knex.raw('gen_random_uuid()'));
    t.uuid('generation_id').notNullable().references('generations.id').onDelete('CASCADE');
    t.integer('index').notNullable();
    t.text('storage_key').notNullable();
    t.text('thumbnail_key').notNullable();
    t.text('url').notNullable();
    t.text('thumbnail_url').notNullable();
    t.integer('width').notNullable();
    t.integer('height').notNullable();
    t.text('blurhash').notNullable();
    t.bigInteger('seed');
    t.text('sha256').notNullable();
    t.integer('bytes').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    // Re-delivered upload jobs write the same rows once.
    t.unique(['generation_id', 'index']);
  });

  // Post-processed files wait here, durably, between the generation job and the upload job
  // (which may run on another machine). Rows are deleted once the upload has stored them.
  await knex.schema.createTable('staged_images', (t) => {
    t.uuid('generation_id').notNullable().references('generations.id').onDelete('CASCADE');
    t.integer('index').notNullable();
    t.binary('webp').notNullable();
    t.binary('thumbnail').notNullable();
    t.integer('width').notNullable();
    t.integer('height').notNullable();
    t.text('blurhash').notNullable();
    t.bigInteger('seed');
    t.text('sha256').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['generation_id', 'index']);
  });
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
