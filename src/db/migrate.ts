import type { Knex } from 'knex';
import { MIGRATIONS } from '../../migrations/index';

const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => MIGRATIONS.map(([name]) => name),
  getMigrationName: (name) => name,
  getMigration: async (name) => {
    const found = MIGRATIONS.find(([n]) => n === name);
    if (!found) throw new Error(`unknown migration ${name}`);
    return found[1];
  },
};

const migratorConfig: Knex.MigratorConfig = { migrationSource, tableName: 'knex_migrations' };

/** Applies every pending migration; returns the names applied. */
export async function migrateLatest(db: Knex): Promise<string[]> {
  const [, applied] = (await db.migrate.latest(migratorConfig)) as [number, string[]];
  return applied;
}

export class SchemaBehindError extends Error {
  override name = 'SchemaBehindError';
}

/** The API and the worker refuse to run on a database whose schema is behind the code. */
export async function assertSchemaCurrent(db: Knex): Promise<void> {
  let pending: string[];
  try {
    const [, list] = (await db.migrate.list(migratorConfig)) as [unknown[], Array<string | { file: string }>];
    pending = list.map((m) => (typeof m === 'string' ? m : m.file));
  } catch (err) {
    throw new SchemaBehindError(`Could not read the database's migrations (${String(err)}); run \`npm run migrate\`.`, {
      cause: err,
    });
  }
  if (pending.length > 0) {
    throw new SchemaBehindError(
      `The database schema is behind the code (pending: ${pending.join(', ')}). Run \`npm run migrate\` first.`,
    );
  }
}
