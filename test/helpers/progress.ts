import { Redis } from 'ioredis';
import type { Logger } from '../../src/logger';
import type { ProgressUpdate } from '../../src/progress/event';
import { ProgressHub } from '../../src/progress/hub';
import { ProgressPublisher } from '../../src/progress/publisher';
import { REDIS_URL } from './stack';

/** A progress update for tests: GENERATING-like defaults, overridable. */
export const progressUpdate = (
  generationId: string,
  status: ProgressUpdate['status'],
  progress: number,
  extra: Partial<ProgressUpdate> = {},
): ProgressUpdate => ({
  generationId,
  status,
  progress,
  step: null,
  totalSteps: 20,
  etaSeconds: null,
  queuePosition: null,
  preview: null,
  attempt: 1,
  error: null,
  images: [],
  ...extra,
});

/** Real Redis connections and the progress publisher and hub on them, under a key prefix of their own. */
export interface ProgressRedis {
  redis: Redis;
  sub: Redis;
  publisher: ProgressPublisher;
  hub: ProgressHub;
  /** Deletes the prefix's keys and closes both connections. */
  close(): Promise<void>;
}

export function openProgressRedis(prefix: string, log: Logger): ProgressRedis {
  const redis = new Redis(REDIS_URL);
  const sub = new Redis(REDIS_URL);
  return {
    redis,
    sub,
    publisher: new ProgressPublisher(redis, prefix, 3600),
    hub: new ProgressHub(sub, prefix, log),
    async close() {
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
      sub.disconnect();
    },
  };
}
