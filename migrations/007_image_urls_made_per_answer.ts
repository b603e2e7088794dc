import type { Knex } from 'knex';

/**
 * Image URLs expire now, so they are made by the API for each answer from the storage keys and no
 * longer stored. The old columns stay (rows written before keep their values) but may be empty.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('ALTER TABLE generated_images ALTER COLUMN url DROP NOT NULL, ALTER COLUMN thumbnail_url DROP NOT NULL');
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
