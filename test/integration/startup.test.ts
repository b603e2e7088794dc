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
  for (const k of ['DATABASE_URL', 'APP_DATABASE_URL', 'APP_SD_API_URL']) delete clean[k];
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
    const api = await entry('src/main/api.ts', [], { DATABASE_URL: tdb.url, PORT: '0' });
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
});
