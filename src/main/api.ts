/** `npm run api`: the production API. Needs Redis and Postgres; fails fast naming what is missing. */
import { createApiServer, type ApiServer } from '../api/server';
import { assertNeededSettings, loadConfig } from '../config';
import { assertSchemaCurrent } from '../db/migrate';
import { createDb, describeTarget } from '../db/knex';
import { createLogger } from '../logger';
import { createImageUrls } from '../storage/fromConfig';
import { parseFlags } from './cli';
import { closeOnSignals, exitOnStartupError } from './lifecycle';

const USAGE = `usage: npm run api

The production API: GraphQL and GraphiQL at /graphql (subscriptions over SSE), /health.
Needs DATABASE_URL (or APP_DATABASE_URL) and REDIS_URL, and S3_* for object storage or
FILES_URL_SECRET for the local folder's signed URLs; listens on HOST:PORT (0.0.0.0:4000).
Every setting is an environment variable (see the README's Configuration).`;

async function main() {
  parseFlags(USAGE, {});
  const config = loadConfig();
  const log = createLogger(config.logLevel, 'api', undefined, config.logFormat);
  const { databaseUrl: url } = assertNeededSettings('api', config);
  const imageUrls = createImageUrls(config);
  const target = { kind: 'postgres' as const, url, poolMax: config.database.poolMax, acquireTimeoutMs: config.database.acquireTimeoutMs };
  const db = await createDb(target, log);
  let api: ApiServer;
  try {
    await assertSchemaCurrent(db);
    api = await createApiServer({ config, db, log, imageUrls });
  } catch (err) {
    imageUrls.close?.();
    await db.destroy();
    throw err;
  }
  const address = await api.listen();
  log.info({ address, database: describeTarget(target), redis: config.redis.sentinels.length > 0 ? { sentinels: config.redis.sentinels.map((a) => `${a.host}:${a.port}`), primary: config.redis.sentinelName } : config.redis.url.replace(/\/\/.*@/, '//***@') }, `GraphQL at ${config.http.publicUrl}/graphql`);
  closeOnSignals(async () => {
    await api.close();
    imageUrls.close?.();
    await db.destroy();
  }, log);
}

main().catch((err: unknown) => exitOnStartupError(err));
