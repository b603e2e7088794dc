/**
 * `npm run dev`: the API and a worker in one process, with embedded stand-ins for whatever is not
 * configured: a private redis-server when REDIS_URL does not answer, PGlite when no DATABASE_URL,
 * the A1111 simulator when no APP_SD_API_URL, files in a local folder (served through signed URLs,
 * with a secret kept in .data/ unless FILES_URL_SECRET is set) when no S3_*. Prints a demo token and
 * a ready GraphiQL link.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import { graphiqlExamples } from '../api/graphiqlExamples';
import { createApiServer } from '../api/server';
import { createUserWithToken } from '../auth/tokens';
import { ConfigError, loadConfig, type Config, type Env } from '../config';
import { describeTarget, type DatabaseTarget, type Db } from '../db/knex';
import { migrateLatest } from '../db/migrate';
import { createLogger, type Logger } from '../logger';
import { createSdSimulator, DEFAULT_STEP_MS } from '../sd/simulator/index';
import { createImageUrls, createObjectStorage } from '../storage/fromConfig';
import { createWorker } from '../../workers/worker';
import { parseFlags } from './cli';
import { DEV_SOCKET, listenDevControl, openDatabase } from './devData';
import { DEV_DATA_DIR, DEV_FILES_URL_SECRET_FILE, DEV_REDIS_DIR, devEnvironment } from './devDefaults';
import { freePort } from './freePort';
import { closeOnSignals, exitOnStartupError } from './lifecycle';

const DEMO_EMAIL = 'demo@example.com';
const DEMO_CREDITS = 100;

async function redisAnswers(url: string): Promise<boolean> {
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    await probe.ping();
    return true;
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

/** Starts a private redis-server that keeps nothing on disk; resolves its URL once it answers. */
async function startPrivateRedis(log: Logger): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  await mkdir(DEV_REDIS_DIR, { recursive: true });
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', path.resolve(DEV_REDIS_DIR)], {
    stdio: 'ignore',
  });
  const started = await new Promise<boolean>((resolve) => {
    child.once('error', () => resolve(false));
    child.once('spawn', () => resolve(true));
  });
  if (!started) {
    throw new ConfigError(
      'Redis does not answer at REDIS_URL and `redis-server` is not installed.\n' +
        'Install it (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`), or run one with\n' +
        '`docker compose up -d redis`, or set REDIS_URL to a Redis you have.',
    );
  }
  const url = `redis://127.0.0.1:${port}/0`;
  for (let i = 0; i < 50; i++) {
    if (await redisAnswers(url)) {
      log.info({ url }, 'started a private redis-server for dev (nothing is kept on disk)');
      return { url, child };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error('the private redis-server did not answer within 5 s');
}

/**
 * The secret that signs dev's file URLs: the one kept in .data/ (readable by this user only), or a
 * new one written there. Kept, so the links dev handed out keep working after a restart.
 */
async function devFilesUrlSecret(): Promise<string> {
  const kept = await readFile(DEV_FILES_URL_SECRET_FILE, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (kept?.trim()) return kept.trim();
  const secret = randomBytes(32).toString('hex');
  await mkdir(DEV_DATA_DIR, { recursive: true });
  await writeFile(DEV_FILES_URL_SECRET_FILE, `${secret}\n`, { mode: 0o600 });
  return secret;
}

const USAGE = `usage: npm run dev

The API and a worker in one process, with embedded stand-ins for whatever is not configured:
a private redis-server when REDIS_URL does not answer, PGlite in .data/pglite without DATABASE_URL,
the Stable Diffusion simulator without APP_SD_API_URL (SD_SIMULATOR_STEP_MS per step, default
${DEFAULT_STEP_MS}), image files in .data/files without S3_* (their URLs signed with FILES_URL_SECRET,
else a secret kept in ${DEV_FILES_URL_SECRET_FILE}). Prints a demo token and a GraphiQL link with it filled in.
While it runs, \`npm run user:create\` makes more users through it.`;

async function main() {
  parseFlags(USAGE, {});
  const devEnv = devEnvironment(process.env);
  let config = loadConfig(devEnv);
  if (!config.storage.s3 && !config.storage.filesUrlSecret) {
    devEnv.FILES_URL_SECRET = await devFilesUrlSecret();
    config = loadConfig(devEnv);
  }
  const log = createLogger(config.logLevel, 'dev', undefined, config.logFormat);
  const cleanups: Array<() => Promise<void> | void> = [];

  // First of all, embedded PGlite is taken under .data/dev.lock: a second process on it would lose
  // writes, and a second dev in this folder stops here, before it starts anything.
  const { db, target, close: closeDb } = await openDatabase(config, 'npm run dev');
  // What is open so far, if starting fails from here on (the database closed cleanly, the lock freed).
  const abandon = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch(() => undefined);
    await closeDb().catch(() => undefined);
  };
  try {
    config = await ensureRedis(config, devEnv, log);
    await start(config, db, target, closeDb, cleanups, log);
  } catch (err) {
    await abandon();
    throw err;
  }
}

/** Dev's Redis: REDIS_URL when it answers, else a private redis-server (unless REDIS_URL was set). */
async function ensureRedis(config: Config, devEnv: Env, log: Logger): Promise<Config> {
  if (await redisAnswers(config.redis.url)) return config;
  if (process.env.REDIS_URL) throw new ConfigError(`REDIS_URL=${config.redis.url} does not answer; start that Redis or unset REDIS_URL.`);
  const started = await startPrivateRedis(log);
  privateRedis = started.child;
  return loadConfig({ ...devEnv, REDIS_URL: started.url });
}

async function start(
  config: Config,
  db: Db,
  target: DatabaseTarget,
  closeDb: () => Promise<void>,
  cleanups: Array<() => Promise<void> | void>,
  log: Logger,
): Promise<void> {
  const applied = await migrateLatest(db);
  if (applied.length) log.info({ applied }, 'migrated');
  if (target.kind === 'pglite') {
    // `npm run user:create` sends its request here instead of opening the database itself.
    const control = await listenDevControl(db, log).catch((err: unknown) => {
      log.warn({ err }, `could not listen on ${DEV_SOCKET}: \`npm run user:create\` will ask you to stop dev first`);
      return null;
    });
    if (control) cleanups.push(() => control.close());
  }

  let sdUrl = config.sd.url;
  if (!sdUrl) {
    const sim = createSdSimulator({ stepMs: config.sd.simulatorStepMs, ignoreTaskId: config.sd.simulatorIgnoresTaskId });
    sdUrl = await sim.listen(0, '127.0.0.1');
    cleanups.push(() => sim.close());
    log.warn(`APP_SD_API_URL is not set: using the built-in Stable Diffusion SIMULATOR at ${sdUrl} (its images are test patterns)`);
  }

  const { token } = await createUserWithToken(db, { email: DEMO_EMAIL, credits: DEMO_CREDITS });
  const storage = createObjectStorage(config);
  cleanups.push(() => storage.close?.());
  const imageUrls = createImageUrls(config);
  cleanups.push(() => imageUrls.close?.());
  const worker = createWorker({ config, db, log: log.child({ part: 'worker' }), storage, sdUrl });
  const api = await createApiServer({
    config,
    db,
    log: log.child({ part: 'api' }),
    imageUrls,
    graphiql: graphiqlExamples(token),
    web: { demoToken: token },
  });
  await worker.start();
  await api.listen();

  const line = '-'.repeat(72);
  process.stdout.write(
    `\n${line}\n` +
      `  Web page:   ${config.http.publicUrl}/   (signed in as the demo user)\n` +
      `  GraphiQL:   ${config.http.publicUrl}/graphql   (the demo token is already in its headers)\n` +
      `  Demo user:  ${DEMO_EMAIL} with ${DEMO_CREDITS} photo credits\n` +
      `  Token:      ${token}\n` +
      `  Database:   ${describeTarget(target)}\n` +
      // The configured servers without their credentials.
      `  Stable Diffusion: ${config.sd.url ? config.sd.servers.map((s) => s.url).join(', ') : `simulator at ${sdUrl}, ${config.sd.simulatorStepMs} ms per step${config.sd.simulatorIgnoresTaskId ? ', ignoring task ids' : ''}`}\n` +
      (config.sd.url ? '' : `                    (faster or slower: SD_SIMULATOR_STEP_MS=50 npm run dev; a real server: APP_SD_API_URL=…)\n`) +
      `  More users: npm run user:create -- --email you@example.com --credits 50   (while dev runs)\n` +
      `  Sign-up:    signUp in GraphiQL; ${config.mail.smtpUrl ? `mail goes to ${config.mail.smtpUrl.replace(/\/\/[^@/]*@/, '//')}` : `no SMTP_URL, so mails are .eml files in ${config.mail.outboxDir} and the log prints their links`}\n` +
      `              EMAIL_VERIFICATION_REQUIRED=${config.accounts.emailVerificationRequired}${config.accounts.emailVerificationRequired ? '' : ': new accounts may generate before they verify (dev only)'}\n` +
      `${line}\n\n`,
  );

  closeOnSignals(async () => {
    await api.close();
    await worker.close();
    for (const c of cleanups) await c();
    await closeDb();
    privateRedis?.kill();
  }, log);
}

/** The private redis-server, if dev started one: it must not outlive this process, however it ends. */
let privateRedis: ChildProcess | undefined;
process.on('exit', () => privateRedis?.kill());

main().catch((err: unknown) => exitOnStartupError(err));
