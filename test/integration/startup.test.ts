import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authenticate } from '../../src/auth/tokens';
import { assertSchemaCurrent, SchemaBehindError } from '../../src/db/migrate';
import { PROCESSES_TEST_MS } from '../helpers/budgets';
import { createTestDatabase, type TestDatabase } from '../helpers/database';
import { runCommand } from '../helpers/run';
import { REDIS_URL } from '../helpers/stack';

/** Runs an entry the way the npm scripts do (node --import tsx), returning its exit code and output. */
function entry(file: string, args: string[], env: Record<string, string | undefined>) {
  const clean = { ...process.env };
  for (const k of Object.keys(clean)) {
    if (['DATABASE_URL', 'APP_DATABASE_URL', 'APP_SD_API_URL', 'FILES_URL_SECRET'].includes(k) || k.startsWith('S3_')) delete clean[k];
  }
  return runCommand(process.execPath, ['--import', 'tsx', file, ...args], { env: { ...clean, LOG_LEVEL: 'silent', REDIS_URL, ...env } });
}

describe('starting up', { timeout: PROCESSES_TEST_MS }, () => {
  let tdb: TestDatabase;
  beforeAll(async () => {
    tdb = await createTestDatabase({ migrate: false });
  });
  afterAll(async () => tdb?.drop());

  it('the API and the worker refuse a schema that is behind, and say to migrate; migrate fixes it; user:create prints a working token', async () => {
    await expect(assertSchemaCurrent(tdb.db)).rejects.toThrow(SchemaBehindError);
    const api = await entry('src/main/api.ts', [], { DATABASE_URL: tdb.url, PORT: '0', FILES_URL_SECRET: 'x'.repeat(32) });
    expect(api.code).toBe(1);
    expect(api.out).toMatch(/schema is behind the code .*Run `npm run migrate` first/);
    const worker = await entry('workers/main.ts', [], { DATABASE_URL: tdb.url, APP_SD_API_URL: 'http://127.0.0.1:9' });
    expect(worker.code).toBe(1);
    expect(worker.out).toMatch(/npm run migrate/);

    const migrate = await entry('scripts/migrate.ts', [], { DATABASE_URL: tdb.url });
    expect(migrate.code).toBe(0);
    expect(migrate.out).toMatch(/applied 001_users_and_tokens, 002_generations/);
    await assertSchemaCurrent(tdb.db);
    expect((await entry('scripts/migrate.ts', [], { DATABASE_URL: tdb.url })).out).toMatch(/is up to date/);

    const created = await entry('scripts/user-create.ts', ['--email', 'Dev@Example.com', '--credits', '7'], { DATABASE_URL: tdb.url });
    expect(created.code).toBe(0);
    const token = created.out.match(/token: (sdk_\S+)/)?.[1];
    expect(token).toBeDefined();
    expect(await authenticate(tdb.db, token!)).toMatchObject({ email: 'dev@example.com', isAdmin: false });
    const stored = await tdb.db('api_tokens').select('token_hash');
    expect(stored.some((r: { token_hash: string }) => r.token_hash === token)).toBe(false);
    const bad = await entry('scripts/user-create.ts', ['--email', 'nope', '--credits', '7'], { DATABASE_URL: tdb.url });
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/--email must be an email address/);
  });

  it('production entries name the setting they miss', async () => {
    const api = await entry('src/main/api.ts', [], {});
    expect(api.code).toBe(1);
    expect(api.out).toMatch(/DATABASE_URL is not set/);
    const worker = await entry('workers/main.ts', ['--queues=high_priority'], { DATABASE_URL: tdb.url });
    expect(worker.code).toBe(1);
    expect(worker.out).toMatch(/APP_SD_API_URL is not set/);
    const badQueue = await entry('workers/main.ts', ['--queues=urgent'], {});
    expect(badQueue.out).toMatch(/unknown queue "urgent"/);
  });

  it('production entries refuse half-configured S3 storage and unsigned local files, naming what is missing', async () => {
    const halfS3 = { DATABASE_URL: tdb.url, APP_SD_API_URL: 'http://127.0.0.1:9', S3_ENDPOINT: 'http://127.0.0.1:9', S3_BUCKET: 'images' };
    const [api, worker, unsigned] = await Promise.all([
      entry('src/main/api.ts', [], halfS3),
      entry('workers/main.ts', [], halfS3),
      entry('src/main/api.ts', [], { DATABASE_URL: tdb.url, PORT: '0' }),
    ]);
    for (const r of [api, worker]) {
      expect(r.code).toBe(1);
      expect(r.out).toMatch(/S3_REGION, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY are not set, but S3_ENDPOINT, S3_BUCKET are/);
    }
    expect(unsigned.code).toBe(1);
    expect(unsigned.out).toMatch(/FILES_URL_SECRET is not set/);
  });
});
