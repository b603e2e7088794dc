/**
 * Where a queued generation stands. Bee-Queue LPUSHes new jobs onto `<queue>:waiting` and workers
 * take them from the right, so the position (1 = next to start) is LLEN − LPOS. The line moves as
 * many generations at a time as there are SD servers up (the workers announce them in
 * `<prefix>:sd:up`, see src/jobs/presence.ts), so the ETA is ceil(position / servers) × the
 * measured time of one generation.
 */
import type { Redis } from 'ioredis';
import { sdUpKey } from '../jobs/presence';
import { RedisScript } from '../redis';

export const durationKey = (prefix: string) => `${prefix}:stats:generation_seconds`;

/** Until a worker has measured a generation, assume this many seconds each (for the ETA only). */
const DEFAULT_GENERATION_SECONDS = 10;

/**
 * The length of the waiting list, the measured average, the SD servers up (ARGV[1] = now, epoch
 * ms), then the index of each further ARGV job id in the list (false where it is not waiting): one
 * call for a whole page of generations.
 */
const POSITIONS_LUA = `
local out = { redis.call('LLEN', KEYS[1]), redis.call('GET', KEYS[2]), redis.call('ZCOUNT', KEYS[3], ARGV[1], '+inf') }
for i = 2, #ARGV do out[i + 2] = redis.call('LPOS', KEYS[1], ARGV[i]) end
return out
`;

/** Keys: the waiting list, the average duration, the servers up. Arguments: now, then the job ids. */
const POSITIONS = new RedisScript<Array<number | string | null>>(POSITIONS_LUA, 3);

export interface QueuePosition {
  /** 1 = next to start. */
  position: number;
  etaSeconds: number;
}

export class QueueInfo {
  constructor(
    private readonly redis: Redis,
    private readonly waitingKey: string,
    private readonly prefix: string,
  ) {}

  /** Returns the 1-based position and an ETA, or null when the job is no longer waiting. */
  async position(jobId: string): Promise<QueuePosition | null> {
    return (await this.positions([jobId]))[0] ?? null;
  }

  /** `position` of each job (null where it is not waiting), in one Redis call however many. */
  async positions(jobIds: readonly string[]): Promise<Array<QueuePosition | null>> {
    if (jobIds.length === 0) return [];
    const [len, avg, up, ...idxs] = await POSITIONS.run(this.redis, this.waitingKey, durationKey(this.prefix), sdUpKey(this.prefix), Date.now(), ...jobIds);
    const each = Number(avg) > 0 ? Number(avg) : DEFAULT_GENERATION_SECONDS;
    // No worker announced a server up (none runs, or all are down): the line moves one at a time once one is back.
    const servers = Math.max(1, Number(up) || 0);
    return jobIds.map((_id, i) => {
      const idx = idxs[i];
      if (idx === null || idx === undefined) return null;
      const position = Number(len) - Number(idx);
      // One Stable Diffusion server runs one job at a time, so the line moves `servers` generations at a time.
      return { position, etaSeconds: Math.round(Math.ceil(position / servers) * each * 10) / 10 };
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
