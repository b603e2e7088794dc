/**
 * Where a queued generation stands. Bee-Queue LPUSHes new jobs onto `<queue>:waiting` and workers
 * take them from the right, so the position (1 = next to start) is LLEN − LPOS.
 */
import type { Redis } from 'ioredis';

export const durationKey = (prefix: string) => `${prefix}:stats:generation_seconds`;

/** Until a worker has measured a generation, assume this many seconds each (for the ETA only). */
const DEFAULT_GENERATION_SECONDS = 10;

export class QueueInfo {
  constructor(
    private readonly redis: Redis,
    private readonly waitingKey: string,
    private readonly prefix: string,
  ) {}

  /** Returns the 1-based position and an ETA, or null when the job is no longer waiting. */
  async position(jobId: string): Promise<{ position: number; etaSeconds: number } | null> {
    const res = await this.redis.multi().lpos(this.waitingKey, jobId).llen(this.waitingKey).get(durationKey(this.prefix)).exec();
    if (!res) return null;
    const [[, idx], [, len], [, avg]] = res as [[unknown, number | null], [unknown, number], [unknown, string | null]];
    if (idx === null || idx === undefined) return null;
    const position = len - idx;
    const each = Number(avg) > 0 ? Number(avg) : DEFAULT_GENERATION_SECONDS;
    // One Stable Diffusion server runs one job at a time, so the line moves one generation at a time.
    return { position, etaSeconds: Math.round(position * each * 10) / 10 };
  }
}

/** Workers fold each generation's duration into a moving average that the ETA uses. */
export async function recordGenerationSeconds(redis: Redis, prefix: string, seconds: number): Promise<void> {
  const key = durationKey(prefix);
  const prev = Number(await redis.get(key));
  const next = prev > 0 ? prev * 0.8 + seconds * 0.2 : seconds;
  await redis.set(key, next.toFixed(3), 'EX', 7 * 86_400);
}
