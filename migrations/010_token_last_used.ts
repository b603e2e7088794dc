import type { Knex } from 'knex';

/**
 * api_tokens.last_used_at: when a token (API token or session) last authenticated a request, to
 * the minute. Written at most once a minute per token (src/auth/lastUsed.ts), so a busy token costs
 * one UPDATE a minute, not one per request; null for a token never used since this column came.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('api_tokens', (t) => {
    t.timestamp('last_used_at', { useTz: true });
  });
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
