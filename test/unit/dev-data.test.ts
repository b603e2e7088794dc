/**
 * Dev's lock and control socket (src/main/devData.ts), in a folder of their own: one holder at a
 * time even when processes race for a stale lock, a dead or reused pid is taken over, and the
 * socket is private, refuses bad requests and never holds up a shutdown.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  askRunningDev,
  checkNewUser,
  DEV_LOCK_FILE,
  DEV_SOCKET,
  DevDataBusyError,
  listenDevControl,
  lockDevData,
} from '../../src/main/devData';
import { DEV_DATA_DIR } from '../../src/main/devDefaults';
import { createLogger } from '../../src/logger';
import { PROCESS_START_MS, PROCESSES_TEST_MS } from '../helpers/budgets';
import { createTestDatabase, type TestDatabase } from '../helpers/database';

const ROOT = path.resolve(import.meta.dirname, '../..');
const log = createLogger('silent');
/** A pid that belongs to no process: past the kernel's limit. */
const DEAD_PID = 2 ** 22 + 1;

describe('dev data', () => {
  const home = process.cwd();
  let dir: string;
  let tdb: TestDatabase;

  beforeAll(async () => {
    tdb = await createTestDatabase();
  });
  afterAll(async () => {
    await tdb?.drop();
  });
  // The lock and socket paths are relative to the working folder, as for `npm run dev`.
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-devdata-'));
    process.chdir(dir);
  });
  afterAll(async () => {
    process.chdir(home);
    await rm(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    await rm(DEV_DATA_DIR, { recursive: true, force: true });
  });

  it('has one holder: a second taker is refused with the holder named, and a released lock is free again', async () => {
    const lock = await lockDevData('npm run dev');
    const busy = await lockDevData('npm run migrate').catch((err: unknown) => err);
    expect(busy).toBeInstanceOf(DevDataBusyError);
    expect((busy as Error).message).toMatch(new RegExp(`npm run migrate needs .*\`npm run dev\` \\(pid ${process.pid}\\) is using it`));
    await lock.release();
    await expect(readFile(DEV_LOCK_FILE, 'utf8')).rejects.toThrow();
    await (await lockDevData('npm run migrate')).release();
  });

  it('takes over the lock of a process that is gone, and of a reused pid', async () => {
    await (await lockDevData('npm run dev')).release();
    await writeFile(DEV_LOCK_FILE, JSON.stringify({ pid: DEAD_PID, command: 'npm run dev', startedAt: '', processStart: null }));
    const afterDead = await lockDevData('npm run dev');
    expect(JSON.parse(await readFile(DEV_LOCK_FILE, 'utf8'))).toMatchObject({ pid: process.pid });
    await afterDead.release();
    // Our own pid, but started at another time: the pid was reused after the holder died.
    await writeFile(DEV_LOCK_FILE, JSON.stringify({ pid: process.pid, command: 'npm run dev', startedAt: '', processStart: '1' }));
    const reused = await lockDevData('npm run dev').catch((err: unknown) => err);
    if (process.platform === 'linux') {
      expect(reused).not.toBeInstanceOf(Error);
      await (reused as { release(): Promise<void> }).release();
    } else {
      expect(reused).toBeInstanceOf(DevDataBusyError); // no /proc: a live pid is trusted
    }
  });

  it('refuses a lock file it cannot read instead of taking it', async () => {
    await (await lockDevData('npm run dev')).release();
    await writeFile(DEV_LOCK_FILE, '');
    await expect(lockDevData('npm run dev')).rejects.toThrow(/is not a lock this version wrote/);
  });

  it('gives a stale lock to exactly one of several processes racing for it', { timeout: PROCESSES_TEST_MS }, async () => {
    const script = `import(${JSON.stringify(path.join(ROOT, 'src/main/devData.ts'))}).then(async (m) => {
      try { await m.lockDevData('racer'); process.stdout.write('got'); } catch (e) { process.stdout.write(e instanceof m.DevDataBusyError ? 'busy' : 'error ' + e.message); }
      process.stdin.resume(); process.stdin.once('end', () => process.exit(0));
    });`;
    for (let round = 0; round < 3; round++) {
      await (await lockDevData('npm run dev')).release();
      await writeFile(DEV_LOCK_FILE, JSON.stringify({ pid: DEAD_PID, command: 'npm run dev', startedAt: '', processStart: null }));
      // Each holds what it got until told to exit, so the losers see a live holder.
      const racers = Array.from({ length: 4 }, () => {
        const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), '--input-type=module', '-e', script], { cwd: dir, stdio: ['pipe', 'pipe', 'inherit'] });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        return { child, out: () => out, exited: new Promise((r) => child.once('exit', r)) };
      });
      const deadline = Date.now() + PROCESS_START_MS;
      while (!racers.every((r) => /got|busy|error/.test(r.out()))) {
        if (Date.now() > deadline) throw new Error(`racers did not answer: ${racers.map((r) => r.out()).join(', ')}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const answers = racers.map((r) => r.out()).sort();
      for (const r of racers) r.child.stdin.end();
      await Promise.all(racers.map((r) => r.exited));
      expect(answers, `round ${round}`).toEqual(['busy', 'busy', 'busy', 'got']);
    }
  });

  it('answers user:create on a socket only its user may open, refuses bad requests, and closes with an idle client', async () => {
    const lock = await lockDevData('npm run dev');
    const control = await listenDevControl(tdb.db, log);
    try {
      expect((await stat(DEV_SOCKET)).mode & 0o777).toBe(0o600);
      const busy = new DevDataBusyError({ pid: process.pid, command: 'npm run dev', startedAt: '', processStart: null }, 'npm run user:create');
      const made = await askRunningDev({ email: 'sock@example.com', credits: 3, admin: false }, busy);
      expect(made).toMatchObject({ email: 'sock@example.com', credits: 3 });
      expect(made.token).toMatch(/^sdk_/);
      await expect(askRunningDev({ email: 'nope', credits: 3, admin: false }, busy)).rejects.toThrow(/--email must be an email address/);
      const garbage = await new Promise<string>((resolve) => {
        const s = net.connect(DEV_SOCKET, () => s.write('{not json\n'));
        let text = '';
        s.on('data', (d) => (text += d.toString()));
        s.on('end', () => resolve(text));
      });
      expect(JSON.parse(garbage)).toEqual({ ok: false, error: 'the request was not JSON' });
      // A client that connects and says nothing.
      const idle = net.connect(DEV_SOCKET);
      await new Promise((r) => idle.once('connect', r));
      idle.on('error', () => undefined);
    } finally {
      // Would never return if the idle client held the server open.
      await control.close();
      await lock.release();
    }
  });

  it('takes --credits only as a whole number', () => {
    expect(checkNewUser({ email: 'a@b.c', credits: '12' }).credits).toBe(12);
    expect(checkNewUser({ email: 'a@b.c', credits: 0 }).credits).toBe(0);
    for (const credits of ['', ' ', '1.5', '-1', '1e3', 'ten', true, null, 2.5, -3]) {
      expect(() => checkNewUser({ email: 'a@b.c', credits }), String(credits)).toThrow(/--credits must be a whole number/);
    }
  });
});
