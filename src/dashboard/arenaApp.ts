/**
 * The queue dashboard itself: bull-arena 4.6.0 over the service's Bee-Queue queues, read only.
 * It runs in a process of its own (./arenaMain.ts), reached only through the API, which signs the
 * admin in and carries out retry and remove by the service's rules (./handler.ts); so anything
 * else that changes a queue is refused here, whoever asks.
 */
import BeeQueue from 'bee-queue';
import Arena from 'bull-arena';
import express from 'express';
import type { Logger } from '../logger';

export interface ArenaSettings {
  redisUrl: string;
  /** REDIS_PREFIX: arena reads `<prefix>:<queue>:*` as Bee-Queue names them. */
  prefix: string;
  queues: readonly string[];
  /** Where the API serves the dashboard: `/admin/queues`. */
  basePath: string;
}

/** The host id in arena's URLs (`/admin/queues/<host>/<queue>`). */
export const ARENA_HOST = 'sdjobs';

export interface ArenaApp {
  app: express.Express;
  close(): Promise<void>;
}

export function createArenaApp(settings: ArenaSettings, log: Logger): ArenaApp {
  const opened = new Set<BeeQueue>();
  // Arena builds its queues itself, on first use; this class gives each an owner: its connection
  // errors are logged (an `error` event without a listener would end the process) and close() ends them.
  class DashboardBee extends BeeQueue {
    constructor(name: string, options: BeeQueue.QueueSettings) {
      super(name, options);
      opened.add(this);
      this.on('error', (err: Error) => log.warn({ err: err.message, queue: name }, 'dashboard queue connection error'));
    }
  }
  const arena = Arena(
    {
      Bee: DashboardBee,
      queues: settings.queues.map((name) => ({ type: 'bee', name, hostId: ARENA_HOST, prefix: settings.prefix, redis: { url: settings.redisUrl } })),
    },
    { basePath: settings.basePath, disableListen: true, useCdn: false },
  );
  const app = express();
  app.disable('x-powered-by');
  // Read only: retry and remove are the API's, by the service's rules; arena's own would bypass them
  // (its Bee-Queue "retry" adds a copy under a new id), and adding or editing jobs is not offered.
  app.use((req, res, next) => {
    if (req.method === 'GET' || req.method === 'HEAD') return next();
    res.status(405).json({ error: 'This dashboard is read only here; retry and remove go through the API.' });
  });
  app.use(arena);
  return {
    app,
    async close() {
      await Promise.allSettled([...opened].map((q) => q.close()));
    },
  };
}
