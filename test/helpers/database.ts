/**
 * Each test file gets its own Postgres database (created from TEST_DATABASE_URL's server, dropped
 * afterwards), so files run in parallel and in any order.
 */
import { randomBytes } from 'node:crypto';
import knexFactory, { type Knex } from 'knex';
import { createDb } from '../../src/db/knex';
import { migrateLatest } from '../../src/db/migrate';

export const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  url: string;
  db: Knex;
  drop(): Promise<void>;
}

export async function createTestDatabase(opts: { migrate?: boolean; adminUrl?: string; poolMax?: number } = {}): Promise<TestDatabase> {
  const adminUrl = opts.adminUrl ?? ADMIN_URL;
  const name = `t_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const admin = knexFactory({ client: 'pg', connection: adminUrl, pool: { min: 0, max: 1 } });
  await admin.raw(`CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const db = await createDb({ kind: 'postgres', url: url.toString(), poolMax: opts.poolMax ?? 10 });
  const drop = async () => {
    await db.destroy();
    await admin.raw(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.destroy();
  };
  if (opts.migrate !== false) await migrateLatest(db).catch(async (err: unknown) => {
    await drop();
    throw err;
  });
  return {
    url: url.toString(),
    db,
    drop,
  };
}
