/**
 * `npm run worker -- --queues=high_priority,normal_priority,low_priority --concurrency=2`
 * (the old `celery worker --queues ... --concurrency ...`). Flags override WORKER_QUEUES and
 * WORKER_CONCURRENCY. Needs Redis, Postgres, and APP_SD_API_URL when it consumes high_priority.
 */
import { assertNeededSettings, loadConfig } from '../src/config';
import { assertSchemaCurrent } from '../src/db/migrate';
import { createDb } from '../src/db/knex';
import { JOB_QUEUES } from '../src/jobs/registry';
import { startHealthServer } from '../src/health';
import { createLogger } from '../src/logger';
import { parseFlags } from '../src/main/cli';
import { closeOnSignals, exitOnStartupError } from '../src/main/lifecycle';
import { createObjectStorage } from '../src/storage/fromConfig';
import { createWorker } from './worker';

const USAGE = `usage: npm run worker -- [--queues=high_priority,normal_priority,low_priority,webhooks] [--concurrency=2]

Consumes the named queues (default WORKER_QUEUES, all four) with this many generation slots
(default WORKER_CONCURRENCY, alias CELERY_WORKER_CONCURRENCY, 2); normal_priority, low_priority and
webhooks have slots of their own (NORMAL_PRIORITY_CONCURRENCY, LOW_PRIORITY_CONCURRENCY, 4 each;
WEBHOOKS_CONCURRENCY, 8). Needs
DATABASE_URL (or APP_DATABASE_URL), REDIS_URL, APP_SD_API_URL when it consumes high_priority, and in
production SMTP_URL when it consumes low_priority (mail); writes images to S3 when S3_* is set, else
to STORAGE_DIR; SIGTERM or Ctrl-C lets running jobs finish (up to WORKER_SHUTDOWN_TIMEOUT_MS) and exits.`;

async function main() {
  const values = parseFlags(USAGE, { queues: { type: 'string' }, concurrency: { type: 'string' } });
  const config = loadConfig({
    ...process.env,
    ...(values.queues !== undefined ? { WORKER_QUEUES: values.queues } : {}),
    ...(values.concurrency !== undefined ? { WORKER_CONCURRENCY: values.concurrency } : {}),
  });
  const log = createLogger(config.logLevel, 'worker', undefined, config.logFormat);
  // The SD server when it consumes generations, SMTP in production when it sends mail (checked here).
  const { databaseUrl: dbUrl } = assertNeededSettings('worker', config);
  // Only generations talk to Stable Diffusion: an upload or mail-and-history worker runs without it.
  const sdUrl = config.worker.queues.includes(JOB_QUEUES.generateImage) ? config.sd.url : undefined;
  const db = await createDb({ kind: 'postgres', url: dbUrl, poolMax: config.database.poolMax, acquireTimeoutMs: config.database.acquireTimeoutMs }, log);
  try {
    await assertSchemaCurrent(db);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  const storage = createObjectStorage(config);
  let worker: ReturnType<typeof createWorker> | undefined;
  try {
    worker = createWorker({ config, db, log, sdUrl, storage });
    await worker.start();
  } catch (err) {
    // Whatever it opened is closed before the process says why it could not start.
    await worker?.close();
    storage.close?.();
    await db.destroy();
    throw err;
  }
  const running = worker;
  // /healthz, /readyz and /metrics for an orchestrator and Prometheus, when a port is set (several workers on one host need their own).
  const health =
    config.health.workerPort > 0
      ? await startHealthServer(running.healthChecks, config.health.timeoutMs, config.health.workerPort, config.http.host, running.prometheus).catch(async (err: unknown) => {
          await running.close();
          storage.close?.();
          await db.destroy();
          throw err;
        })
      : null;
  if (health) log.info({ url: health.url }, 'worker health at /healthz and /readyz, metrics at /metrics');
  closeOnSignals(async () => {
    await health?.close();
    await running.close();
    storage.close?.();
    await db.destroy();
  }, log);
}

main().catch((err: unknown) => exitOnStartupError(err));
