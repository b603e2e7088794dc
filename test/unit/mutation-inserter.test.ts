/**
 * The generateImage write path (src/generation/repository.ts) against a real Postgres database:
 * credits reserved and rows inserted in one statement, several requests per statement, and the
 * same outcome as running each user's requests one by one in arrival order, credits never negative.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserWithToken } from '../../src/auth/tokens';
import { createDb, type Db } from '../../src/db/knex';
import type { GenerationInput } from '../../src/generation/input';
import { insertGenerationsReservingCredits } from '../../src/db/statements';
import { GenerationInserter } from '../../src/generation/inserter';
import type { GenerationRow } from '../../src/generation/repository';
import { createTestDatabase, type TestDatabase } from '../helpers/database';

const input = (batchSize = 1, prompt = 'a lighthouse at dusk'): GenerationInput => ({
  prompt,
  negativePrompt: 'a "quoted" \\ backslash, {braces}, é 😀',
  characterName: null,
  width: 512,
  height: 512,
  steps: 20,
  cfgScale: 7.5,
  sampler: 'Euler a',
  seed: 4294967295,
  batchSize,
});

describe('creating generations with credits reserved', () => {
  let tdb: TestDatabase;
  let n = 0;
  beforeAll(async () => {
    tdb = await createTestDatabase();
  });
  afterAll(async () => {
    await tdb?.drop();
  });

  const newUser = async (credits: number) => (await createUserWithToken(tdb.db, { email: `ins-${n++}@example.com`, credits })).userId;
  const credits = async (userId: string) => (await tdb.db('users').where({ id: userId }).first<{ photo_credits: number }>('photo_credits'))!.photo_credits;
  const generation = (userId: string, batchSize = 1) => ({ id: randomUUID(), userId, input: input(batchSize) });
  /** Rows inserted by one statement share a transaction id. */
  const statementsFor = async (ids: string[]) =>
    Number((await tdb.db('generations').whereIn('id', ids).countDistinct<Array<{ count: string }>>({ count: tdb.db.raw('xmin::text') }))[0]!.count);
  const reserved = (rows: Array<GenerationRow | null>) => rows.map((r) => r?.credits_reserved ?? null);

  it('inserts the rows as given, all or none per user, in one statement', async () => {
    const [a, b, poor] = await Promise.all([newUser(5), newUser(5), newUser(1)]);
    const gens = [generation(a), generation(b, 3), generation(poor, 1), generation(poor, 1)];
    const rows = await insertGenerationsReservingCredits(tdb.db, gens);
    expect(rows.map((r) => r.id).sort()).toEqual([gens[0]!.id, gens[1]!.id].sort());
    const row = rows.find((r) => r.id === gens[0]!.id)!;
    expect(row).toMatchObject({ user_id: a, status: 'QUEUED', credits_reserved: 1, attempts: 0, progress: 0, error_code: null, refunded_at: null });
    expect(row.input).toEqual(input(1));
    expect(row.created_at).toBeInstanceOf(Date);
    expect([await credits(a), await credits(b), await credits(poor)]).toEqual([4, 2, 1]);
  });

  it('gives each user what their requests one by one in arrival order would get', async () => {
    const inserter = new GenerationInserter(tdb.db, { maxInFlight: 1 });
    const [u, v] = await Promise.all([newUser(5), newUser(3)]);
    // Sent in one turn, they go in one statement first. u's 3 + 2 + 1 exceed their 5 and v's
    // 1 + 4 + 2 their 3, so it creates none, and each user's are tried one at a time in arrival
    // order: u gets 3 and 2, not 1; v gets 1, not 4, then 2.
    const rows = await Promise.all([
      inserter.insert(generation(u, 3)),
      inserter.insert(generation(u, 2)),
      inserter.insert(generation(v, 1)),
      inserter.insert(generation(u, 1)),
      inserter.insert(generation(v, 4)),
      inserter.insert(generation(v, 2)),
    ]);
    expect(reserved(rows)).toEqual([3, 2, 1, null, null, 2]);
    expect([await credits(u), await credits(v)]).toEqual([0, 0]);
  });

  it('puts the requests of one event-loop turn into one statement, and those that arrive while it runs into the next', async () => {
    const inserter = new GenerationInserter(tdb.db, { maxInFlight: 1 });
    const users = await Promise.all(Array.from({ length: 10 }, () => newUser(100)));
    const first = Array.from({ length: 30 }, (_, i) => generation(users[i % users.length]!));
    const later = Array.from({ length: 30 }, (_, i) => generation(users[i % users.length]!));
    const firstRows = first.map((g) => inserter.insert(g));
    // The next turn: the first statement has been sent (at the end of the turn above) and is running.
    await new Promise((resolve) => setImmediate(resolve));
    const laterRows = later.map((g) => inserter.insert(g));
    const rows = await Promise.all([...firstRows, ...laterRows]);
    expect(rows.every((r) => r?.status === 'QUEUED')).toBe(true);
    expect(await statementsFor(first.map((g) => g.id))).toBe(1);
    expect(await statementsFor(later.map((g) => g.id))).toBe(1);
    expect(await statementsFor([...first, ...later].map((g) => g.id))).toBe(2);
    for (const u of users) expect(await credits(u)).toBe(94);
  });

  it('creates a lone request\'s generation with nothing else arriving', async () => {
    const inserter = new GenerationInserter(tdb.db);
    const u = await newUser(1);
    // Nothing else arrives: the statement still goes, once the turn has ended.
    const row = await inserter.insert(generation(u));
    expect(row?.credits_reserved).toBe(1);
  });

  it('never lets credits go negative, however many requests and API processes race', async () => {
    const user = await newUser(25);
    // Two inserters on two pools stand for two API processes taking turns on the user's row lock.
    const other: Db = await createDb({ kind: 'postgres', url: tdb.url, poolMax: 5 });
    try {
      const inserters = [new GenerationInserter(tdb.db), new GenerationInserter(other), new GenerationInserter(tdb.db, { maxBatch: 3 })];
      const sizes = Array.from({ length: 60 }, (_, i) => 1 + (i % 3));
      const rows = await Promise.all(sizes.map((s, i) => inserters[i % inserters.length]!.insert(generation(user, s))));
      const taken = rows.reduce((sum, r) => sum + (r?.credits_reserved ?? 0), 0);
      const left = await credits(user);
      expect(left).toBeGreaterThanOrEqual(0);
      expect(taken + left).toBe(25);
      // Whatever was refused could not have fit: everything smaller than what is left was created.
      expect(rows.some((r, i) => r === null && sizes[i]! <= left)).toBe(false);
      const inDb = await tdb.db('generations').where({ user_id: user }).sum<Array<{ sum: string | null }>>({ sum: 'credits_reserved' });
      expect(Number(inDb[0]!.sum)).toBe(taken);
    } finally {
      await other.destroy();
    }
  });

  it('fails only the request whose row cannot be inserted', async () => {
    const inserter = new GenerationInserter(tdb.db, { maxInFlight: 1 });
    const [u, v] = await Promise.all([newUser(10), newUser(10)]);
    const taken = generation(u);
    await inserter.insert(taken);
    // Sent in one turn, the three go in one statement, which fails on the duplicate id.
    const results = await Promise.allSettled([
      inserter.insert({ ...generation(u), id: taken.id }),
      inserter.insert(generation(u)),
      inserter.insert(generation(v)),
    ]);
    expect(results[0]).toMatchObject({ status: 'rejected', reason: expect.objectContaining({ code: '23505' }) });
    expect(results.slice(1).map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
    // The failed statement changed nothing; the retries took one credit each (u: the first insert too).
    expect([await credits(u), await credits(v)]).toEqual([8, 9]);
  });

  it('rejects every request of a statement that cannot run at all', async () => {
    const broken = await createTestDatabase({ migrate: false });
    try {
      const inserter = new GenerationInserter(broken.db);
      const results = await Promise.allSettled([inserter.insert(generation(randomUUID())), inserter.insert(generation(randomUUID()))]);
      expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    } finally {
      await broken.drop();
    }
  });
});
