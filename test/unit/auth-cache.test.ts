/**
 * The per-process token cache (src/auth/cache.ts) against a real Postgres database: what it
 * remembers, for how long, how much, and that it asks the database only when it must.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TokenAuthenticator, type AuthCacheOptions } from '../../src/auth/cache';
import { createUserWithToken, generateToken, hashToken } from '../../src/auth/tokens';
import { createTestDatabase, type TestDatabase } from '../helpers/database';

describe('TokenAuthenticator', () => {
  let tdb: TestDatabase;
  /** Token lookups sent to Postgres (knex reports every query it runs). */
  let lookups = 0;
  /** Last-use writes sent to Postgres. */
  let useWrites = 0;
  let clock = 0;
  /** Every cache a test made: their last-use writes end before the next test (and the database). */
  const made: TokenAuthenticator[] = [];

  beforeAll(async () => {
    tdb = await createTestDatabase();
    tdb.db.on('query', (q: { sql: string }) => {
      if (/^\s*select\b/i.test(q.sql) && q.sql.includes('api_tokens')) lookups++;
      if (/^\s*update\b/i.test(q.sql) && q.sql.includes('last_used_at < now() - make_interval')) useWrites++;
    });
  });
  afterAll(async () => {
    await tdb?.drop();
  });
  afterEach(async () => {
    await Promise.all(made.splice(0).map((a) => a.settled()));
  });
  beforeEach(() => {
    useWrites = 0;
    lookups = 0;
    clock = 1_000_000;
  });

  const cache = (opts: Partial<AuthCacheOptions> = {}) => {
    const auth = new TokenAuthenticator(tdb.db, { ttlMs: 30_000, negativeTtlMs: 1_000, maxEntries: 100, now: () => clock, ...opts });
    made.push(auth);
    return auth;
  };
  let n = 0;
  const newUser = () => createUserWithToken(tdb.db, { email: `auth-cache-${n++}@example.com`, credits: 1 });
  const revoke = (token: string) => tdb.db('api_tokens').where({ token_hash: hashToken(token) }).update({ revoked_at: tdb.db.fn.now() });

  it('answers a known token from memory until the TTL, then asks the database again', async () => {
    const auth = cache();
    const { userId, token } = await newUser();
    expect(await auth.authenticate(token)).toMatchObject({ id: userId, isAdmin: false });
    expect(lookups).toBe(1);
    await revoke(token);
    clock += 29_999;
    // The documented hazard: a revoked token keeps working until its entry expires.
    expect(await auth.authenticate(token)).toMatchObject({ id: userId });
    expect(lookups).toBe(1);
    clock += 2;
    expect(await auth.authenticate(token)).toBeNull();
    expect(lookups).toBe(2);
  });

  it('forget() drops an entry at once', async () => {
    const auth = cache();
    const { token } = await newUser();
    await auth.authenticate(token);
    await revoke(token);
    auth.forget(token);
    expect(await auth.authenticate(token)).toBeNull();
    expect(lookups).toBe(2);
  });

  it('keeps at most maxEntries, dropping the least recently used', async () => {
    const auth = cache({ maxEntries: 2 });
    const [a, b, c] = await Promise.all([newUser(), newUser(), newUser()]);
    await auth.authenticate(a.token);
    await auth.authenticate(b.token);
    await auth.authenticate(a.token); // a is now more recent than b
    expect(lookups).toBe(2);
    await auth.authenticate(c.token); // evicts b
    expect(auth.size).toBe(2);
    await auth.authenticate(a.token);
    await auth.authenticate(c.token);
    expect(lookups).toBe(3);
    await auth.authenticate(b.token);
    expect(lookups).toBe(4);
    expect(auth.size).toBe(2);
  });

  it('remembers an unknown token only for the short negative TTL', async () => {
    const auth = cache({ negativeTtlMs: 1_000 });
    const token = generateToken();
    expect(await auth.authenticate(token)).toBeNull();
    expect(await auth.authenticate(token)).toBeNull();
    expect(lookups).toBe(1);
    // The token becomes valid (e.g. just issued): within a second it is recognised.
    const { userId } = await newUser();
    await tdb.db('api_tokens').insert({ user_id: userId, token_hash: hashToken(token), name: 'late' });
    clock += 999;
    expect(await auth.authenticate(token)).toBeNull();
    clock += 2;
    expect(await auth.authenticate(token)).toMatchObject({ id: userId });
    expect(lookups).toBe(2);
  });

  it('does not remember unknown tokens at all with negativeTtlMs 0, and caps the negative TTL at the TTL', async () => {
    const token = generateToken();
    const none = cache({ negativeTtlMs: 0 });
    await none.authenticate(token);
    await none.authenticate(token);
    expect(lookups).toBe(2);
    expect(none.size).toBe(0);

    const capped = cache({ ttlMs: 100, negativeTtlMs: 60_000 });
    await capped.authenticate(token);
    clock += 101;
    await capped.authenticate(token);
    expect(lookups).toBe(4);
  });

  it('with ttlMs 0 asks the database every time', async () => {
    const auth = cache({ ttlMs: 0 });
    const { token } = await newUser();
    await auth.authenticate(token);
    await auth.authenticate(token);
    expect(lookups).toBe(2);
    expect(auth.size).toBe(0);
  });

  it('sends one query for concurrent requests with the same uncached token', async () => {
    const auth = cache();
    const { userId, token } = await newUser();
    const users = await Promise.all(Array.from({ length: 20 }, () => auth.authenticate(token)));
    expect(users.every((u) => u?.id === userId)).toBe(true);
    expect(lookups).toBe(1);
  });

  it('hands out a frozen user, so no request can change what the next one sees', async () => {
    const auth = cache();
    const { token } = await newUser();
    const user = await auth.authenticate(token);
    expect(Object.isFrozen(user)).toBe(true);
  });

  it('does not cache a failed lookup', async () => {
    const broken = await createTestDatabase({ migrate: false });
    try {
      const auth = new TokenAuthenticator(broken.db, { ttlMs: 30_000, negativeTtlMs: 1_000, maxEntries: 10 });
      const token = generateToken();
      await expect(auth.authenticate(token)).rejects.toThrow(/api_tokens/);
      expect(auth.size).toBe(0);
      await expect(auth.authenticate(token)).rejects.toThrow(/api_tokens/);
    } finally {
      await broken.drop();
    }
  });

  describe("a token's last use", () => {
    const lastUsed = async (token: string) =>
      ((await tdb.db('api_tokens').where({ token_hash: hashToken(token) }).first('last_used_at')) as { last_used_at: Date | null }).last_used_at;
    const setLastUsed = (token: string, ago: string) =>
      tdb.db('api_tokens').where({ token_hash: hashToken(token) }).update({ last_used_at: tdb.db.raw(`now() - ?::interval`, [ago]) });

    it('is written on the first use, then at most once a minute from this process', async () => {
      const auth = cache({ ttlMs: 0 });
      const { token } = await newUser();
      expect(await lastUsed(token)).toBeNull();
      await auth.authenticate(token);
      await auth.settled();
      expect(await lastUsed(token)).toBeInstanceOf(Date);
      expect(useWrites).toBe(1);
      // Within the minute on this process's clock: no statement at all, however old the row looks.
      await setLastUsed(token, '2 minutes');
      const old = await lastUsed(token);
      for (let i = 0; i < 5; i++) await auth.authenticate(token);
      await auth.settled();
      expect(useWrites).toBe(1);
      expect(await lastUsed(token)).toEqual(old);
      // A minute later: written again.
      clock += 60_000;
      await auth.authenticate(token);
      await auth.settled();
      expect(useWrites).toBe(2);
      expect((await lastUsed(token))!.getTime()).toBeGreaterThan(old!.getTime());
      // Unknown and revoked tokens record nothing.
      await auth.authenticate(generateToken());
      await auth.settled();
      expect(useWrites).toBe(2);
    });

    it('is not written again within the minute by another process', async () => {
      const { token } = await newUser();
      await setLastUsed(token, '30 seconds');
      const recent = await lastUsed(token);
      // A fresh cache is another process: its memo is empty, so it sends the UPDATE, which changes nothing.
      const other = cache();
      await other.authenticate(token);
      await other.settled();
      expect(useWrites).toBe(1);
      expect(await lastUsed(token)).toEqual(recent);
    });

    it("is written off the request's path: a request is answered while its write waits", async () => {
      const auth = cache({ ttlMs: 0 });
      const { userId, token } = await newUser();
      // Another transaction holds the token's row: the write has to wait for it, the lookup does not.
      const holder = await tdb.db.transaction();
      try {
        await holder('api_tokens').where({ token_hash: hashToken(token) }).forUpdate().first('id');
        // Were the request to wait for its write, this would never resolve.
        expect(await auth.authenticate(token)).toMatchObject({ id: userId });
        expect(await lastUsed(token)).toBeNull();
      } finally {
        await holder.commit();
      }
      await auth.settled();
      expect(await lastUsed(token)).toBeInstanceOf(Date);
    });
  });
});
