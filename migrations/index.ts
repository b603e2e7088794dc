/**
 * The ordered list of migrations. Imported statically (not read from the folder) so that the
 * migrator works the same under tsx, vitest and a bundle. Forward only: append, never edit.
 */
import type { Knex } from 'knex';
import * as m001 from './001_users_and_tokens';
import * as m002 from './002_generations';
import * as m003 from './003_live_generations_index';
import * as m006 from './006_chat_history';

export interface Migration {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

export const MIGRATIONS: ReadonlyArray<readonly [name: string, migration: Migration]> = [
  ['001_users_and_tokens', m001],
  ['002_generations', m002],
  ['003_live_generations_index', m003],
  ['006_chat_history', m006],
];
