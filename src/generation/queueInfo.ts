/**
 * Where a queued generation stands. Bee-Queue LPUSHes new jobs onto `<queue>:waiting` and workers
 * take them from the right, so the position (1 = next to start) is LLEN − LPOS.
 */
import type { Redis } from 'ioredis';

export const durationKey = (prefix: string) => `${prefix}:stats:generation_seconds`;

/** Until a worker has measured a generation, assume this many seconds each (for the ETA only). */
const DEFAULT_GENERATION_SECONDS = 10;

/**
 * The length of the waiting list, the measured average, then the index of each ARGV job id in the
 * list (false where it is not waiting): one call for a whole page of generations.
 */
const POSITIONS_LUA = `
local out = { redis.call('LLEN', KEYS[1]), redis.call('GET', KEYS[2]) }
for i, id in ipairs(ARGV) do out[i + 2] = redis.call('LPOS', KEYS[1], id) end
return out
`;

interface RedisWithPositions extends Redis {
  sdjobsQueuePositions(waitingKey: string, durationKey: string, ...jobIds: string[]): Promise<Array<number | string | null>>;
}

export interface QueuePosition {
  /** 1 = next to start. */
  position: number;
  etaSeconds: number;
}

export class QueueInfo {
  private readonly redis: RedisWithPositions;

  constructor(
    redis: Redis,
    private readonly waitingKey: string,
    private readonly prefix: string,
  ) {
    if (!('sdjobsQueuePositions' in redis)) redis.defineCommand('sdjobsQueuePositions', { numberOfKeys: 2, lua: POSITIONS_LUA });
    this.redis = redis as RedisWithPositions;
  }

  /** Returns the 1-based position and an ETA, or null when the job is no longer waiting. */
  async position(jobId: string): Promise<QueuePosition | null> {
    return (await this.positions([jobId]))[0] ?? null;
  }

  /** `position` of each job (null where it is not waiting), in one Redis call however many. */
  async positions(jobIds: readonly string[]): Promise<Array<QueuePosition | null>> {
    if (jobIds.length === 0) return [];
    const [len, avg, ...idxs] = await this.redis.sdjobsQueuePositions(this.waitingKey, durationKey(this.prefix), ...jobIds);
    const each = Number(avg) > 0 ? Number(avg) : DEFAULT_GENERATION_SECONDS;
    return jobIds.map((_id, i) => {
      const idx = idxs[i];
      if (idx === null || idx === undefined) return null;
      const position = Number(len) - Number(idx);
      // One Stable Diffusion server runs one job at a time, so the line moves one generation at a time.
      return { position, etaSeconds: Math.round(position * each * 10) / 10 };
    });
  }
}

/** Workers fold each generation's duration into a moving average that the ETA uses. */
export async function recordGenerationSeconds(redis: Redis, prefix: string, seconds: number): Promise<void> {
  const key = durationKey(prefix);
  const prev = Number(await redis.get(key));
  const next = prev > 0 ? prev * 0.8 + seconds * 0.2 : seconds;
  await redis.set(key, next.toFixed(3), 'EX', 7 * 86_400);
}
