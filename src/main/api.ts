/** `npm run api`: the production API. Needs Redis and Postgres; fails fast naming what is missing. */
import { createApiServer } from '../api/server';
import { loadConfig, requireSetting } from '../config';
import { assertSchemaCurrent } from '../db/migrate';
import { createDb, describeTarget } from '../db/knex';
import { createLogger } from '../logger';
import { closeOnSignals, exitOnStartupError } from './lifecycle';

async function main() {
  const config = loadConfig();
  const log = createLogger(config.logLevel, 'api');
  const url = requireSetting(config.database.url, 'DATABASE_URL', 'the API needs Postgres (or APP_DATABASE_URL); `npm run dev` runs without one');
  const target = { kind: 'postgres' as const, url, poolMax: config.database.poolMax };
  const db = await createDb(target);
  try {
    await assertSchemaCurrent(db);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  const api = await createApiServer({ config, db, log, localFilesDir: config.storage.dir });
  const address = await api.listen();
  log.info({ address, database: describeTarget(target), redis: config.redis.url.replace(/\/\/.*@/, '//***@') }, `GraphQL at ${config.http.publicUrl}/graphql`);
  closeOnSignals(async () => {
    await api.close();
    await db.destroy();
  }, log);
}

main().catch((err: unknown) => exitOnStartupError(err));
