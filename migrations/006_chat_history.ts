import type { Knex } from 'knex';

/**
 * The chat history: one exchange (the user's prompt and the images that answered it) per succeeded
 * generation that names a character. The images are not copied: an exchange references its
 * generation, whose `generated_images` rows are read (and their URLs made) when it is shown.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('chat_exchanges', (t) => {
    t.uuid('id').primary().defaultTo(knex.raw('gen_random_uuid()'));
    t.uuid('user_id').notNullable().references('users.id').onDelete('CASCADE');
    t.text('character_name').notNullable();
    // One exchange per generation, however often its saveChatHistory job runs.
    t.uuid('generation_id').notNullable().unique().references('generations.id').onDelete('CASCADE');
    t.text('prompt').notNullable();
    // When the images were ready (the generation's end), not when the job ran: a late job files its
    // exchange where it happened.
    t.timestamp('created_at', { useTz: true }).notNullable();
  });
  // A character's history, newest first, paged by (created_at, id); and each character's last exchange.
  await knex.raw('CREATE INDEX chat_exchanges_by_character ON chat_exchanges (user_id, character_name, created_at DESC, id DESC)');
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
