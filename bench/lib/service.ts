/**
 * The service as production runs it, for the end-to-end scenarios: `npm run api` and
 * `npm run worker` as child processes on their own database, Redis prefix, storage folder and SMTP
 * sink, against the SD server(s) the scenario gives. `stop()` removes all of it.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { createUserWithToken } from '../../src/auth/tokens';
import { createTestDatabase } from '../../test/helpers/database';
import { PROCESS_START_MS } from '../../test/helpers/budgets';
import { startSmtp } from '../../test/helpers/smtp';
import { freePort, waitForHealth } from '../../test/helpers/stack';
import { BENCH_LIMITS_ENV } from './limits';
import { forkTs } from './processes';
import type { BenchContext } from './types';

export interface BenchService {
  baseUrl: string;
  /** A user with `credits` photo credits and its token. */
  user(credits: number): Promise<string>;
  /** Rejects when the API or the worker exits while the service should run; race work against it. */
  died: Promise<never>;
  stop(): Promise<void>;
}

export async function startBenchService(ctx: BenchContext, opts: { name: string; sdUrl: string; env?: Record<string, string> }): Promise<BenchService> {
  const tdb = await createTestDatabase({ adminUrl: ctx.adminDatabaseUrl });
  const storageDir = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-bench-'));
  const port = await freePort();
  const prefix = `bench${randomBytes(4).toString('hex')}`;
  // A production worker sends mail (the "images ready" mail of every generation): to a sink here.
  const smtp = await startSmtp();
  const env = {
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    REDIS_URL: ctx.redisUrl,
    REDIS_PREFIX: prefix,
    DATABASE_URL: tdb.url,
    APP_SD_API_URL: opts.sdUrl,
    HOST: '127.0.0.1',
    PORT: String(port),
    PUBLIC_URL: `http://127.0.0.1:${port}`,
    STORAGE_DIR: storageDir,
    FILES_URL_SECRET: randomBytes(32).toString('hex'),
    SMTP_URL: smtp.url,
    POSTPROCESS_THREADS: '2',
    ...BENCH_LIMITS_ENV,
    ...opts.env,
  };
  const api = forkTs(new URL('../../src/main/api.ts', import.meta.url), { env });
  const worker = forkTs(new URL('../../workers/main.ts', import.meta.url), { env });
  const baseUrl = `http://127.0.0.1:${port}`;
  // A process that exits (a configuration the entries refuse) fails the scenario at once instead
  // of leaving its generations waiting.
  const died = new Promise<never>((_, reject) => {
    for (const [name, p] of [['api', api], ['worker', worker]] as const) {
      p.child.once('exit', (code) => reject(new Error(`${opts.name} bench: the ${name} process exited (${code}) while generations ran`)));
    }
  });
  died.catch(() => undefined);
  const stop = async () => {
    await worker.stop(15_000);
    await api.stop();
    await smtp.close();
    const redis = new Redis(ctx.redisUrl);
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    await tdb.drop();
    await rm(storageDir, { recursive: true, force: true });
  };
  try {
    // A bound on a hang, not a measurement: the API takes far longer to start on a loaded machine.
    await waitForHealth(baseUrl, PROCESS_START_MS, () => api.child.exitCode === null);
  } catch (err) {
    await stop();
    throw err;
  }
  let users = 0;
  return {
    baseUrl,
    died,
    stop,
    async user(credits) {
      return (await createUserWithToken(tdb.db, { email: `bench${users++}@example.com`, credits })).token;
    },
  };
}
