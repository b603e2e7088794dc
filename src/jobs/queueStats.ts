/**
 * What operators see of each queue, read from Redis in one script call (stats.lua): its depth by
 * state (Bee-Queue's keys), how long the job next in line has waited, and how many jobs ended how,
 * all time and in the last hour. The outcome counts are written by the workers' job-outcome tracker
 * (./outcomeTracker.ts, count.lua), batched off the jobs' path: per queue one hash of totals,
 * `<prefix>:stats:<queue>`, and one hash per minute, `<prefix>:stats:<queue>:<epoch minute>`,
 * expiring after a little more than an hour. Bee-Queue's own succeeded/failed sets stay empty
 * (removeOnSuccess, removeOnFailure: Postgres keeps the history), so these counts stand in for them.
 */
import type { Redis } from 'ioredis';
import { jobScript } from './luaScripts';

/** Minutes summed for "the last hour": the current minute and the 59 before it. */
export const RECENT_MINUTES = 60;
/** A minute's hash outlives the hour it counts in by a couple of minutes. */
export const MINUTE_TTL_S = (RECENT_MINUTES + 2) * 60;

export const outcomeTotalsKey = (prefix: string, queue: string) => `${prefix}:stats:${queue}`;
export const outcomeMinuteKey = (prefix: string, queue: string, minute: number) => `${outcomeTotalsKey(prefix, queue)}:${minute}`;
export const epochMinute = (ms: number) => Math.floor(ms / 60_000);

export interface QueueStats {
  name: string;
  waiting: number;
  active: number;
  /** Retries waiting for their time. */
  delayed: number;
  /** Jobs that succeeded, since the counts began (every worker's, together). */
  succeeded: number;
  /** Jobs that failed for good (a try that is retried is not counted here). */
  failed: number;
  succeededLastHour: number;
  failedLastHour: number;
  /**
   * Seconds since the job next in line was first enqueued (a retry or a re-delivered job counts from
   * its first enqueue); 0 with nothing waiting.
   */
  oldestWaitingSeconds: number;
}

/** The count of keys comes first: five per queue. */
const QUEUE_STATS = jobScript<number[]>('stats');

/** Every figure of every queue named, in one round trip. */
export async function readQueueStats(redis: Redis, prefix: string, queues: readonly string[], now = Date.now()): Promise<QueueStats[]> {
  const keys: string[] = [];
  for (const queue of queues) {
    const base = `${prefix}:${queue}:`;
    keys.push(`${base}waiting`, `${base}active`, `${base}delayed`, `${base}jobs`, outcomeTotalsKey(prefix, queue));
  }
  const out = await QUEUE_STATS.run(redis, keys.length, ...keys, epochMinute(now), RECENT_MINUTES);
  return queues.map((name, q) => {
    const [waiting = 0, active = 0, delayed = 0, oldest = -1, succeeded = 0, failed = 0, succeededLastHour = 0, failedLastHour = 0] = out
      .slice(q * 8, q * 8 + 8)
      .map(Number);
    return {
      name,
      waiting,
      active,
      delayed,
      succeeded,
      failed,
      succeededLastHour,
      failedLastHour,
      oldestWaitingSeconds: oldest >= 0 ? Math.max(0, (now - oldest) / 1000) : 0,
    };
  });
}
