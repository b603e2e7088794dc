/** `npm run migrate`: applies pending migrations to DATABASE_URL (or APP_DATABASE_URL, or dev's PGlite). */
import { loadConfig } from '../src/config';
import { createDb, databaseTarget, describeTarget } from '../src/db/knex';
import { migrateLatest } from '../src/db/migrate';
import { exitOnStartupError } from '../src/main/lifecycle';
import { DEV_PGLITE_DIR } from '../src/main/devDefaults';

async function main() {
  const config = loadConfig();
  const target = databaseTarget(config, DEV_PGLITE_DIR);
  const db = await createDb(target);
  try {
    const applied = await migrateLatest(db);
    process.stdout.write(
      applied.length ? `applied ${applied.join(', ')} to ${describeTarget(target)}\n` : `${describeTarget(target)} is up to date\n`,
    );
  } finally {
    await db.destroy();
  }
}

main().catch((err: unknown) => exitOnStartupError(err));
