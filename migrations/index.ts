/**
 * The ordered list of migrations. Imported statically (not read from the folder) so that the
 * migrator works the same under tsx, vitest and a bundle. Forward only: append, never edit.
 */
import type { Knex } from 'knex';
import * as m001 from './001_users_and_tokens';
import * as m002 from './002_generations';
import * as m003 from './003_live_generations_index';
import * as m004 from './004_credit_ledger';
import * as m005 from './005_accounts';
import * as m006 from './006_chat_history';
import * as m007 from './007_image_urls_made_per_answer';
import * as m008 from './008_webhooks';
import * as m009 from './009_unfinished_generations_index';
import * as m010 from './010_token_last_used';
import * as m011 from './011_idempotency_keys_and_start_deadline';

export interface Migration {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
  /** `{ transaction: false }`: runs outside a transaction (CREATE INDEX CONCURRENTLY). */
  config?: { transaction?: boolean };
}

export const MIGRATIONS: ReadonlyArray<readonly [name: string, migration: Migration]> = [
  ['001_users_and_tokens', m001],
  ['002_generations', m002],
  ['003_live_generations_index', m003],
  ['004_credit_ledger', m004],
  ['005_accounts', m005],
  ['006_chat_history', m006],
  ['007_image_urls_made_per_answer', m007],
  ['008_webhooks', m008],
  ['009_unfinished_generations_index', m009],
  ['010_token_last_used', m010],
  ['011_idempotency_keys_and_start_deadline', m011],
];
