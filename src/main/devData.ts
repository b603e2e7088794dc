/**
 * Dev's embedded PGlite (`.data/pglite`) belongs to one process at a time: PGlite is Postgres in
 * the process that opens it, and a second process opening the same folder sees a stale copy and
 * overwrites the first one's writes (a user made by `user:create` while dev ran, or a generation
 * made meanwhile, was lost). So every process that opens it (`npm run dev`, and `migrate` or
 * `user:create` without DATABASE_URL) first takes `.data/dev.lock`, which names its pid.
 *
 * While `npm run dev` holds the lock it also listens on a Unix socket, `.data/dev.sock`, for one
 * request: make a user. `npm run user:create` sends it there, so the running dev writes the user
 * into its own database and the printed token works at once. The socket is a file in the
 * project's folder: only local users who can write that folder can reach it.
 */
import { randomBytes } from 'node:crypto';
import { chmod, link, mkdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { createUserWithToken } from '../auth/tokens';
import { ConfigError, type Config } from '../config';
import { createDb, databaseTarget, type DatabaseTarget, type Db } from '../db/knex';
import type { Logger } from '../logger';
import { DEV_DATA_DIR, DEV_PGLITE_DIR } from './devDefaults';

export const DEV_LOCK_FILE = `${DEV_DATA_DIR}/dev.lock`;
/** Relative, so the path stays under the 104-byte limit of socket addresses wherever the project lives. */
export const DEV_SOCKET = `${DEV_DATA_DIR}/dev.sock`;
/** How long user:create waits for the running dev to answer. */
const ASK_TIMEOUT_MS = 30_000;
/** A connection to dev's socket that sends nothing for this long is closed (it would hold up dev's shutdown). */
const SOCKET_IDLE_MS = 10_000;
const MAX_REQUEST_BYTES = 4096;

interface LockInfo {
  pid: number;
  command: string;
  startedAt: string;
  /** The process's start as the kernel counts it (Linux), which tells a reused pid from the holder. */
  processStart: string | null;
}

/** Another live process holds dev's data; the message says which and what to do. */
export class DevDataBusyError extends ConfigError {
  override name = 'DevDataBusyError';
  constructor(
    readonly holder: LockInfo,
    wanted: string,
  ) {
    super(
      `${wanted} needs the embedded database in ${DEV_PGLITE_DIR}, but \`${holder.command}\` (pid ${holder.pid}) is using it, ` +
        `and two processes on one PGlite folder lose each other's writes.\n` +
        `Stop that process first, or set DATABASE_URL to a Postgres server. ` +
        `(If no such process is running, delete ${DEV_LOCK_FILE}.)`,
    );
  }
}

/** Linux: field 22 of /proc/<pid>/stat, the start time in clock ticks since boot; null elsewhere. */
function processStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2, the command name, is in parentheses and may hold spaces: count from after it (field 3).
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether the process that wrote the lock still runs (and is that process, not a reuse of its pid). */
function holderAlive(holder: LockInfo): boolean {
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    // EPERM: the pid exists but belongs to another user.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (holder.processStart === null) return true;
  const now = processStart(holder.pid);
  return now === null || now === holder.processStart;
}

function parseLock(text: string): LockInfo | null {
  try {
    const info = JSON.parse(text) as Partial<LockInfo>;
    if (typeof info.pid !== 'number') return null;
    return {
      pid: info.pid,
      command: String(info.command ?? 'npm run dev'),
      startedAt: String(info.startedAt ?? ''),
      processStart: typeof info.processStart === 'string' ? info.processStart : null,
    };
  } catch {
    return null;
  }
}

const uniqueName = (what: string) => `${DEV_LOCK_FILE}.${what}.${process.pid}.${randomBytes(4).toString('hex')}`;

/**
 * Moves a lock judged stale out of the way, but only that very lock: another process may have
 * taken it over and written its own meanwhile, which is then put back.
 */
async function removeStaleLock(staleText: string): Promise<void> {
  const aside = uniqueName('stale');
  try {
    await rename(DEV_LOCK_FILE, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const moved = await readFile(aside, 'utf8').catch(() => null);
  if (moved !== null && moved !== staleText) await link(aside, DEV_LOCK_FILE).catch(() => undefined);
  await rm(aside, { force: true });
}

export interface DevLock {
  release(): Promise<void>;
}

/**
 * Takes `.data/dev.lock` for `command`, or throws DevDataBusyError naming the live holder. The lock
 * is written in full under a name of its own and then linked into place: link() is atomic and
 * refuses an existing file, so no process ever sees a half-written lock or takes a held one.
 */
export async function lockDevData(command: string): Promise<DevLock> {
  await mkdir(DEV_DATA_DIR, { recursive: true });
  const mine: LockInfo = { pid: process.pid, command, startedAt: new Date().toISOString(), processStart: processStart(process.pid) };
  const text = `${JSON.stringify(mine)}\n`;
  const draft = uniqueName('new');
  await writeFile(draft, text, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await link(draft, DEV_LOCK_FILE);
        return heldLock(text);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holderText = await readFile(DEV_LOCK_FILE, 'utf8').catch(() => null);
      if (holderText === null) continue; // released meanwhile: try again
      const holder = parseLock(holderText);
      if (!holder) {
        throw new ConfigError(`${DEV_LOCK_FILE} is not a lock this version wrote. If no \`npm run dev\`, migrate or user:create is running here, delete it.`);
      }
      if (holderAlive(holder)) throw new DevDataBusyError(holder, command);
      // Left by a process that is gone (killed, crashed): take it over.
      await removeStaleLock(holderText);
    }
  } finally {
    await rm(draft, { force: true });
  }
  throw new ConfigError(`Could not take ${DEV_LOCK_FILE}: other processes keep taking it.`);
}

function heldLock(text: string): DevLock {
  const ours = () => {
    try {
      return readFileSync(DEV_LOCK_FILE, 'utf8') === text;
    } catch {
      return false;
    }
  };
  // Also on a crash or process.exit(): a lock left behind would only be taken over, but a clean
  // folder says no one is using it.
  const onExit = () => {
    if (ours()) rmSync(DEV_LOCK_FILE, { force: true });
  };
  process.once('exit', onExit);
  return {
    async release() {
      process.removeListener('exit', onExit);
      onExit();
    },
  };
}

export interface OpenedDatabase {
  db: Db;
  target: DatabaseTarget;
  close(): Promise<void>;
}

/** DATABASE_URL's Postgres, or dev's embedded PGlite with its lock held until `close()`. */
export async function openDatabase(config: Config, command: string): Promise<OpenedDatabase> {
  const target = databaseTarget(config, DEV_PGLITE_DIR);
  if (target.kind === 'postgres') {
    const db = await createDb(target);
    return { db, target, close: () => db.destroy() };
  }
  const lock = await lockDevData(command);
  try {
    await mkdir(DEV_PGLITE_DIR, { recursive: true });
    const db = await createDb(target);
    return {
      db,
      target,
      async close() {
        try {
          await db.destroy();
        } finally {
          await lock.release();
        }
      },
    };
  } catch (err) {
    await lock.release();
    throw err;
  }
}

// ---- user:create through the running dev ------------------------------------------------------

export interface NewUserRequest {
  email: string;
  credits: number;
  admin: boolean;
}

export interface NewUserResult {
  userId: string;
  email: string;
  credits: number;
  token: string;
}

/** The checks `user:create` applies, shared with dev's socket (which must not trust its input). */
export function checkNewUser(input: { email?: unknown; credits?: unknown; admin?: unknown }): NewUserRequest {
  const email = typeof input.email === 'string' ? input.email.trim() : '';
  if (!/^[^@\s]+@[^@\s]+$/.test(email)) throw new ConfigError('--email must be an email address, e.g. --email you@example.com');
  const credits =
    typeof input.credits === 'string' && /^\d{1,15}$/.test(input.credits.trim())
      ? Number(input.credits.trim())
      : typeof input.credits === 'number' && Number.isSafeInteger(input.credits) && input.credits >= 0
        ? input.credits
        : Number.NaN;
  if (Number.isNaN(credits)) throw new ConfigError('--credits must be a whole number ≥ 0');
  return { email, credits, admin: input.admin === true };
}

export async function createUser(db: Db, req: NewUserRequest): Promise<NewUserResult> {
  const { userId, token } = await createUserWithToken(db, { email: req.email, credits: req.credits, isAdmin: req.admin });
  return { userId, email: req.email, credits: req.credits, token };
}

export interface DevControl {
  close(): Promise<void>;
}

/**
 * Dev's side: answers user:create's requests on `.data/dev.sock` with its own database. The socket
 * is made with mode 0600 (only the user running dev, and root, may connect), and a connection that
 * sends nothing is closed after a while, so it cannot hold up dev's shutdown.
 */
export async function listenDevControl(db: Db, log: Logger): Promise<DevControl> {
  // Ours: we hold the lock, so a socket file here is a leftover of a dev that was killed.
  await unlink(DEV_SOCKET).catch(() => undefined);
  const connections = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    socket.setTimeout(SOCKET_IDLE_MS, () => socket.destroy());
    let body = '';
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      body += chunk;
      if (body.length > MAX_REQUEST_BYTES) return void socket.destroy();
      if (!body.includes('\n')) return;
      socket.pause();
      void answer(body.slice(0, body.indexOf('\n'))).then((reply) => socket.end(`${JSON.stringify(reply)}\n`));
    });
  });
  const answer = async (line: string): Promise<{ ok: true; user: NewUserResult } | { ok: false; error: string }> => {
    try {
      const user = await createUser(db, checkNewUser(JSON.parse(line) as Record<string, unknown>));
      log.info({ email: user.email, credits: user.credits }, 'user:create: made a user through the running dev');
      return { ok: true, user };
    } catch (err) {
      if (err instanceof ConfigError) return { ok: false, error: err.message };
      if (err instanceof SyntaxError) return { ok: false, error: 'the request was not JSON' };
      log.error({ err }, 'user:create through the running dev failed');
      return { ok: false, error: 'the running dev could not create the user; see its log' };
    }
  };
  const listening = new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.once('listening', () => {
      server.off('error', reject);
      resolve();
    });
  });
  // listen() creates the socket file synchronously: with this umask it is never open to others,
  // not even for a moment (and no other file is created meanwhile).
  const umask = process.umask(0o077);
  try {
    server.listen(DEV_SOCKET);
  } finally {
    process.umask(umask);
  }
  await listening;
  await chmod(DEV_SOCKET, 0o600);
  server.on('error', (err) => log.warn({ err }, 'dev control socket failed'));
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of connections) socket.destroy();
      }),
  };
}

/** user:create's side: asks the running dev to make the user. */
export async function askRunningDev(req: NewUserRequest, busy: DevDataBusyError): Promise<NewUserResult> {
  const reply = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(DEV_SOCKET);
    let text = '';
    socket.setEncoding('utf8');
    socket.setTimeout(ASK_TIMEOUT_MS, () => socket.destroy(new Error('no answer')));
    socket.on('connect', () => socket.write(`${JSON.stringify(req)}\n`));
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  }).catch((err: unknown) => {
    // Not listening (yet, or a dev of an older version): say what holds the database.
    throw new ConfigError(`${busy.message}\n(It did not take the request on ${DEV_SOCKET}: ${err instanceof Error ? err.message : String(err)}.)`);
  });
  let parsed: { ok: boolean; user?: NewUserResult; error?: string };
  try {
    parsed = JSON.parse(reply) as typeof parsed;
  } catch {
    throw new ConfigError(`The running dev (pid ${busy.holder.pid}) gave an answer that is not JSON on ${DEV_SOCKET}.`);
  }
  if (!parsed.ok || !parsed.user) throw new ConfigError(parsed.error ?? 'the running dev refused the request');
  return parsed.user;
}
