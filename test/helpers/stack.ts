/**
 * The whole service for an integration test, over real parts: its own Postgres database, its own
 * Redis key prefix, the SD simulator over HTTP, the API on a free port and a worker in this process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { createApiServer, type ApiServer } from '../../src/api/server';
import { createUserWithToken } from '../../src/auth/tokens';
import { unbalancedUsers } from '../../src/credits/ledger';
import { loadConfig, type Config } from '../../src/config';
import { createLogger } from '../../src/logger';
import { freePort } from '../../src/main/freePort';
import { createSdSimulator, type SdSimulator, type SimulatorOptions } from '../../src/sd/simulator/index';
import { createImageUrls, createObjectStorage } from '../../src/storage/fromConfig';
import type { ImageUrls, ObjectStorage } from '../../src/storage/storage';
import { createWorker, type Worker } from '../../workers/worker';
import { PROCESS_START_MS } from './budgets';
import { spawnWatched, type Watched } from './run';
import { createTestDatabase, type TestDatabase } from './database';

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0';

export { freePort };

export interface StackOptions {
  /** Overrides of the stack's environment (e.g. the S3_* of a test S3 server: the local folder without them). */
  env?: Record<string, string>;
  simulator?: SimulatorOptions;
  /** SD simulators to start, all with `simulator`'s options (default 1); APP_SD_API_URL lists them all. */
  sdServers?: number;
  /** Start no worker (tests of queued states). */
  worker?: boolean;
  /** Collects every log line of the stack's API and worker (with LOG_LEVEL from `env`). */
  logLines?: string[];
}

export interface Stack {
  baseUrl: string;
  config: Config;
  env: Record<string, string>;
  tdb: TestDatabase;
  /** The first SD simulator (`sims[0]`). */
  sim: SdSimulator;
  /** Every SD simulator, in APP_SD_API_URL's order. */
  sims: SdSimulator[];
  /**
   * Closes simulator `i` (if still open) and starts a new one with the same options on the same
   * port: a server back after a crash. `sims[i]` is the new one.
   */
  restartSimulator(i: number): Promise<SdSimulator>;
  redis: Redis;
  api: ApiServer;
  /** What the worker writes to, and what the API signs URLs with (as the configuration chose). */
  storage: ObjectStorage;
  imageUrls: ImageUrls;
  worker: Worker | null;
  /** Starts the worker later (for stacks started with `worker: false`). */
  startWorker(): Promise<Worker>;
  createUser(credits: number, email?: string): Promise<{ userId: string; token: string }>;
  credits(userId: string): Promise<number>;
  /**
   * Starts another API in this process on the same Redis and Postgres, with some settings changed
   * (e.g. a short IMAGE_URL_TTL_S); it builds its image URLs from its own config. Closed by close().
   */
  startApi(env: Record<string, string>): Promise<{ baseUrl: string; config: Config }>;
  /**
   * Starts another API process (a real `node` child) against the same Redis and Postgres, with
   * `env` over the stack's (e.g. a DATABASE_URL through a proxy).
   */
  spawnApi(env?: Record<string, string>): Promise<{ baseUrl: string; stop(): Promise<void> }>;
  /**
   * Starts a worker process (`node workers/main.ts`, as its container does) on the stack's Redis,
   * Postgres and simulator, with `env` over the stack's; resolves once it says it started. Killed by close().
   */
  spawnWorker(env?: Record<string, string>): Promise<Watched>;
  close(): Promise<void>;
}

/** Resolves when `${url}/health` answers 200; fails early if `alive()` turns false. */
export async function waitForHealth(url: string, ms = PROCESS_START_MS, alive: () => boolean = () => true): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fetch(`${url}/health`).then((r) => r.ok, () => false))) {
    if (!alive()) throw new Error(`${url}: the process exited before it was healthy`);
    if (Date.now() > deadline) throw new Error(`${url} did not become healthy within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  // Everything opened so far, closed in reverse order by close(), or at once if starting fails.
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  const closeAll = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch(() => undefined);
  };
  try {
    return await start(opts, cleanups, closeAll);
  } catch (err) {
    await closeAll();
    throw err;
  }
}

async function start(
  opts: StackOptions,
  cleanups: Array<() => Promise<unknown> | unknown>,
  closeAll: () => Promise<void>,
): Promise<Stack> {
  const tdb = await createTestDatabase();
  cleanups.push(() => tdb.drop());
  let ledgerProblem: Error | undefined;
  // Runs after everything else has closed, before the database goes: whatever the file's tests did
  // (success, failure, cancel, re-delivery, grants), every balance still equals its ledger.
  cleanups.push(async () => {
    const off = await unbalancedUsers(tdb.db);
    if (off.length > 0) ledgerProblem = new Error(`credit balances differ from the ledger: ${JSON.stringify(off)}`);
  });
  const simOptions: SimulatorOptions = { stepMs: 5, ...opts.simulator };
  const sims: SdSimulator[] = [];
  const sdUrls: string[] = [];
  const openSim = async (port: number) => {
    const sim = createSdSimulator(simOptions);
    cleanups.push(() => sim.close());
    return { sim, url: await sim.listen(port, '127.0.0.1') };
  };
  for (let i = 0; i < (opts.sdServers ?? 1); i++) {
    const { sim, url } = await openSim(0);
    sims.push(sim);
    sdUrls.push(url);
  }
  const sdUrl = sdUrls.join(',');
  const port = await freePort();
  const storageDir = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-files-'));
  cleanups.push(() => rm(storageDir, { recursive: true, force: true }));
  const env: Record<string, string> = {
    NODE_ENV: 'test',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    REDIS_URL,
    REDIS_PREFIX: `t${randomBytes(5).toString('hex')}`,
    DATABASE_URL: tdb.url,
    APP_SD_API_URL: sdUrl,
    HOST: '127.0.0.1',
    PORT: String(port),
    PUBLIC_URL: `http://127.0.0.1:${port}`,
    STORAGE_DIR: storageDir,
    // Mails of stacks without SMTP_URL go to a folder of their own, never the repository's .data.
    MAIL_OUTBOX_DIR: path.join(storageDir, 'outbox'),
    FILES_URL_SECRET: randomBytes(32).toString('hex'),
    SD_PROGRESS_INTERVAL_MS: '20',
    SD_PREVIEW_INTERVAL_MS: '0',
    TASK_RETRY_DELAY_S: '0.05',
    PROGRESS_RESYNC_MS: '500',
    POSTPROCESS_THREADS: '2',
    ...opts.env,
  };
  const config = loadConfig(env);
  const lines = opts.logLines;
  const log = createLogger(config.logLevel, 'test', lines ? { write: (line: string) => void lines.push(line) } : undefined);
  const storage = createObjectStorage(config);
  cleanups.push(() => storage.close?.());
  const imageUrls = createImageUrls(config);
  cleanups.push(() => imageUrls.close?.());
  const redis = new Redis(REDIS_URL);
  cleanups.push(async () => {
    const keys = await redis.keys(`${env.REDIS_PREFIX}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  });
  const children = new Set<ChildProcess>();
  cleanups.push(() => {
    for (const c of children) c.kill('SIGKILL');
  });
  const newWorker = async () => {
    const w = createWorker({ config, db: tdb.db, log, storage, sdUrl });
    await w.start();
    return w;
  };
  let worker: Worker | null = null;
  cleanups.push(() => worker?.close());
  if (opts.worker !== false) worker = await newWorker();
  const api = await createApiServer({ config, db: tdb.db, log, imageUrls });
  cleanups.push(() => api.close());
  const baseUrl = await api.listen(port, '127.0.0.1');

  return {
    baseUrl,
    config,
    env,
    tdb,
    get sim() {
      return sims[0]!;
    },
    sims,
    async restartSimulator(i) {
      const old = sims[i];
      if (!old) throw new RangeError(`no simulator ${i}`);
      await old.close();
      const { sim } = await openSim(Number(new URL(sdUrls[i]!).port));
      sims[i] = sim;
      return sim;
    },
    redis,
    api,
    storage,
    imageUrls,
    get worker() {
      return worker;
    },
    async startWorker() {
      worker ??= await newWorker();
      return worker;
    },
    async createUser(credits, email = `u${randomBytes(4).toString('hex')}@example.com`) {
      return createUserWithToken(tdb.db, { email, credits });
    },
    async credits(userId) {
      const row = await tdb.db('users').where({ id: userId }).first<{ photo_credits: number }>('photo_credits');
      return row?.photo_credits ?? -1;
    },
    async startApi(overrides) {
      const other = loadConfig({ ...env, PORT: '0', ...overrides });
      const more = await createApiServer({ config: other, db: tdb.db, log });
      cleanups.push(() => more.close());
      return { baseUrl: await more.listen(0, '127.0.0.1'), config: other };
    },
    async spawnApi(overrides = {}) {
      const p = await freePort();
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/main/api.ts'], {
        env: { ...process.env, ...env, PORT: String(p), PUBLIC_URL: `http://127.0.0.1:${p}`, ...overrides },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      children.add(child);
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      const url = `http://127.0.0.1:${p}`;
      await waitForHealth(url, PROCESS_START_MS, () => child.exitCode === null).catch((err: unknown) => {
        throw new Error(`second API did not start: ${String(err)}\n${stderr}`);
      });
      return {
        baseUrl: url,
        stop: async () => {
          if (child.exitCode === null) {
            const exited = new Promise((r) => child.once('exit', r));
            child.kill('SIGTERM');
            await exited;
          }
          children.delete(child);
        },
      };
    },
    async spawnWorker(overrides = {}) {
      const worker = spawnWatched(process.execPath, ['--import', 'tsx', 'workers/main.ts'], {
        env: { ...process.env, ...env, LOG_LEVEL: 'info', ...overrides },
      });
      children.add(worker.child);
      await worker.waitFor(/worker started/);
      return worker;
    },
    async close() {
      await closeAll();
      if (ledgerProblem) throw ledgerProblem;
    },
  };
}
