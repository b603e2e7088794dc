import type { Knex } from 'knex';

/**
 * Accounts: people sign up with an address and a password, verify the address by mail, sign in
 * for a session, and make API tokens for programs (src/accounts/).
 * - users: the password's Argon2id hash (none for users made by an operator), when the address was
 *   verified (users that exist already were made by an operator, who vouched for the address), and
 *   whether the user wants an "images ready" mail.
 * - api_tokens: sessions live beside API tokens (one lookup for both), with an expiry.
 * - email_tokens: single-use tokens sent by mail (verify the address, reset the password), stored
 *   as sha256 like every other token; a verification token holds the password of its sign-up.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => {
    t.text('password_hash');
    t.timestamp('email_verified_at', { useTz: true });
    t.boolean('notify_images_ready').notNullable().defaultTo(true);
  });
  await knex.raw('UPDATE users SET email_verified_at = created_at');

  await knex.schema.alterTable('api_tokens', (t) => {
    t.text('kind').notNullable().defaultTo('api');
    t.timestamp('expires_at', { useTz: true });
  });
  await knex.raw(`ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_kind CHECK (kind IN ('api', 'session'))`);

  await knex.schema.createTable('email_tokens', (t) => {
    t.uuid('id').primary().defaultTo(knex.raw('gen_random_uuid()'));
    t.uuid('user_id').notNullable().references('users.id').onDelete('CASCADE');
    t.text('purpose').notNullable();
    t.text('token_hash').notNullable().unique();
    // A verification token's sign-up password (Argon2id), set when its link is followed.
    t.text('password_hash');
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.timestamp('used_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['user_id']);
  });
  await knex.raw(`ALTER TABLE email_tokens ADD CONSTRAINT email_tokens_purpose CHECK (purpose IN ('verify_email', 'reset_password'))`);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
