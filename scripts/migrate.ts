/** `npm run migrate`: applies pending migrations to DATABASE_URL (or APP_DATABASE_URL, or dev's PGlite). */
import { assertNeededSettings, loadConfig } from '../src/config';
import { describeTarget } from '../src/db/knex';
import { migrateLatest } from '../src/db/migrate';
import { parseFlags } from '../src/main/cli';
import { openDatabase } from '../src/main/devData';
import { exitOnStartupError } from '../src/main/lifecycle';

const USAGE = `usage: npm run migrate

Applies pending migrations to DATABASE_URL (or APP_DATABASE_URL); without either, to the embedded
PGlite database of \`npm run dev\` in .data/pglite (dev migrates it itself when it starts), except
with NODE_ENV=production, where DATABASE_URL is required.`;

async function main() {
  parseFlags(USAGE, {});
  const config = loadConfig();
  // In production (NODE_ENV=production, as in the Docker image) it needs DATABASE_URL: the
  // embedded PGlite fallback is for a developer's clone only.
  assertNeededSettings('migrate', config);
  const { db, target, close } = await openDatabase(config, 'npm run migrate');
  try {
    const applied = await migrateLatest(db);
    process.stdout.write(
      applied.length ? `applied ${applied.join(', ')} to ${describeTarget(target)}\n` : `${describeTarget(target)} is up to date\n`,
    );
  } finally {
    await close();
  }
}

main().catch((err: unknown) => exitOnStartupError(err));
