/** The scenario's users and its Redis clean-up. */
import type { Knex } from 'knex';
import { Redis } from 'ioredis';
import { generateToken, hashToken } from '../../../src/auth/tokens';
import { deleteKeys } from '../../lib/redisKeys';

export interface BenchUser {
  id: string;
  token: string;
}

/**
 * Creates `count` users with `credits` each (and their grant rows) and one API token each, in a few statements (the tokens
 * are made here, as `issueToken` does, so a thousand users take milliseconds).
 */
export async function createUsers(db: Knex, opts: { count: number; credits: number; emailPrefix: string }): Promise<BenchUser[]> {
  const users: BenchUser[] = [];
  const rows = Array.from({ length: opts.count }, (_, i) => ({
    email: `${opts.emailPrefix}-${i}@bench.test`,
    photo_credits: opts.credits,
    // Generating needs a verified address (EMAIL_VERIFICATION_REQUIRED).
    email_verified_at: db.fn.now(),
  }));
  for (let i = 0; i < rows.length; i += 1000) {
    const ids = (await db('users').insert(rows.slice(i, i + 1000)).returning('id')) as Array<{ id: string }>;
    const batch = ids.map(({ id }) => ({ id, token: generateToken() }));
    await db('api_tokens').insert(batch.map((u) => ({ user_id: u.id, token_hash: hashToken(u.token), name: 'bench' })));
    // Credits move only with a ledger row, here as everywhere.
    if (opts.credits !== 0) await db('credit_ledger').insert(batch.map((u) => ({ user_id: u.id, kind: 'grant', amount: opts.credits, reason: 'benchmark user' })));
    users.push(...batch);
  }
  return users;
}

/** Deletes every key under `prefix:` (the piled-up jobs included). */
export async function deleteRedisPrefix(redisUrl: string, prefix: string): Promise<number> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 3 });
  // Connection errors reach the caller through the rejected commands; this only keeps ioredis
  // from reporting them a second time as an unhandled 'error' event.
  redis.on('error', () => undefined);
  let deleted = 0;
  try {
    await redis.connect();
    deleted = await deleteKeys(redis, `${prefix}:*`);
  } finally {
    redis.disconnect();
  }
  return deleted;
}
