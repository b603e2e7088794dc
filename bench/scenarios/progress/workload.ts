/**
 * What the progress benchmarks watch: generations seeded straight into Postgres (users, their API
 * tokens, GENERATING rows) with a published snapshot each, the subscription document clients send,
 * and the updates the "worker" (the bench process) publishes.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Knex } from 'knex';
import { generateToken, hashToken } from '../../../src/auth/tokens';
import { deleteKeys } from '../../lib/redisKeys';
import type { GenerationInput } from '../../../src/generation/input';
import type { ProgressUpdate } from '../../../src/progress/event';
import type { ProgressPublisher } from '../../../src/progress/publisher';

export interface WatchedGeneration {
  id: string;
  /** The owner's API token: subscribe's owner check passes. */
  token: string;
}

/** The README's `Watch` subscription: every field a client asks for. */
export const WATCH_QUERY = `subscription Watch($id: ID!) {
  generationProgress(id: $id) {
    generationId seq status progress step totalSteps etaSeconds queuePosition preview attempt
    error { code message retryable }
    images { url thumbnailUrl width height blurhash seed }
  }
}`;

export const TOTAL_STEPS = 20;

const INPUT: GenerationInput = {
  prompt: 'a lighthouse at dusk, volumetric light, detailed, 35mm',
  negativePrompt: 'blurry',
  characterName: null,
  width: 512,
  height: 512,
  steps: TOTAL_STEPS,
  cfgScale: 7,
  sampler: 'Euler a',
  seed: -1,
  batchSize: 1,
};

/** A GENERATING update as a worker publishes it while sampling. */
export function generatingUpdate(generationId: string, step: number, etaSeconds: number | null): ProgressUpdate {
  return {
    generationId,
    status: 'GENERATING',
    progress: Math.min(0.9, (0.9 * step) / TOTAL_STEPS),
    step,
    totalSteps: TOTAL_STEPS,
    etaSeconds,
    queuePosition: null,
    preview: null,
    attempt: 1,
    error: null,
    images: [],
  };
}

/**
 * Inserts `count` running generations owned by `users` users, publishes each one's first
 * GENERATING state (the current state a subscriber gets first) and returns them with their owners' tokens.
 */
export async function seedGenerations(db: Knex, publisher: ProgressPublisher, count: number, users = 50): Promise<WatchedGeneration[]> {
  const owners: Array<{ id: string; token: string }> = [];
  for (let u = 0; u < Math.min(users, count); u++) {
    const [row] = (await db('users').insert({ email: `bench-${u}-${randomUUID()}@example.com`, photo_credits: 0 }).returning('id')) as Array<{ id: string }>;
    if (!row) throw new Error('user insert returned no row');
    const token = generateToken();
    await db('api_tokens').insert({ user_id: row.id, token_hash: hashToken(token), name: 'bench' });
    owners.push({ id: row.id, token });
  }
  const watched: WatchedGeneration[] = [];
  const rows: Array<Record<string, unknown>> = [];
  for (let i = 0; i < count; i++) {
    const owner = owners[i % owners.length]!;
    const id = randomUUID();
    watched.push({ id, token: owner.token });
    rows.push({ id, user_id: owner.id, status: 'GENERATING', input: JSON.stringify(INPUT), credits_reserved: 1, attempts: 1, progress: 0.045, started_at: new Date() });
  }
  for (let i = 0; i < rows.length; i += 1000) await db('generations').insert(rows.slice(i, i + 1000));
  for (let i = 0; i < watched.length; i += 500) {
    await Promise.all(watched.slice(i, i + 500).map((g) => publisher.publish(generatingUpdate(g.id, 1, 30))));
  }
  return watched;
}

/** Deletes every key under the prefix (snapshots, queue keys). */
export async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  await deleteKeys(redis, `${prefix}:*`);
}
