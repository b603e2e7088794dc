import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('users', (t) => {
    t.uuid('id').primary().defaultTo(knex.raw('gen_random_uuid()'));
    t.text('email').notNullable().unique();
    t.integer('photo_credits').notNullable().defaultTo(0);
    t.boolean('is_admin').notNullable().defaultTo(false);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  // Credits can never go negative, whatever the code does.
  await knex.raw('ALTER TABLE users ADD CONSTRAINT users_photo_credits_nonnegative CHECK (photo_credits >= 0)');

  await knex.schema.createTable('api_tokens', (t) => {
    t.uuid('id').primary().defaultTo(knex.raw('gen_random_uuid()'));
    t.uuid('user_id').notNullable().references('users.id').onDelete('CASCADE');
    // sha256 of the token: a leaked database does not leak usable tokens.
    t.text('token_hash').notNullable().unique();
    t.text('name').notNullable().defaultTo('default');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('revoked_at', { useTz: true });
    t.index(['user_id']);
  });
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
