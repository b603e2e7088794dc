/**
 * The production shape: the worker as its own process, started exactly as its container starts it
 * (docker-compose.yml's command: node itself, no npm in between). A SIGTERM lets the running job
 * finish and exits cleanly; what is left (the upload) is done by the next worker, nothing is lost.
 *
 * The simulator is paused while a test acts "mid-generation", so a busy machine cannot let the job
 * finish before the signal lands.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { insertGenerationReservingCredits } from '../../src/db/statements';
import { JobProducer } from '../../src/jobs/queues';
import { createLogger } from '../../src/logger';
import { PROCESSES_TEST_MS, WAIT_MS } from '../helpers/budgets';
import { spawnWatched, type Watched } from '../helpers/run';
import { startStack, type Stack } from '../helpers/stack';
import { events, expectWellFormedStream, generate, statusPath, testInput, watch } from './helpers';

const ROOT = path.resolve(import.meta.dirname, '../..');
const CHAT_INPUT = testInput('a walk by the sea');

interface Compose {
  'x-app-env'?: Record<string, string>;
  services: Record<string, { command?: unknown; stop_grace_period?: unknown; environment?: Record<string, string> }>;
}
const compose = (): Compose => parseYaml(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8')) as Compose;

/** The worker service's command in docker-compose.yml, as a container runs it. */
function composeWorkerCommand(): string[] {
  const command = compose().services.worker?.command;
  if (!Array.isArray(command) || !command.every((c) => typeof c === 'string')) throw new Error('the worker command must be an exec-form list');
  return command;
}

/**
 * `container`: the compose file's command (flags given later win over its own --queues and
 * --concurrency). `npm`: `npm run worker`, in a process group of its own, as a terminal starts it.
 */
type StartedBy = 'container' | 'npm';

function startWorkerProcess(stack: Stack, args: string[], env: Record<string, string> = {}, by: StartedBy = 'container'): Watched {
  const [program, ...programArgs] = by === 'container' ? composeWorkerCommand() : ['npm', 'run', '-s', 'worker', '--'];
  return spawnWatched(program!, [...programArgs, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...stack.env, LOG_LEVEL: 'info', ...env },
    detached: by === 'npm',
  });
}

describe('npm run worker as a process', { timeout: PROCESSES_TEST_MS }, () => {
  let stack: Stack;
  const children: ChildProcess[] = [];
  const worker = (args: string[], env: Record<string, string> = {}, by: StartedBy = 'container') => {
    const w = startWorkerProcess(stack, args, env, by);
    children.push(w.child);
    return w;
  };
  /**
   * Starts a worker, then a generation, and returns once that generation is being sampled there,
   * with the simulator paused: it stays mid-generation until the test calls `stack.sim.resume()`.
   */
  const generatingOn = async (userToken: string, args: string[], env: Record<string, string> = {}, by: StartedBy = 'container') => {
    const w = worker(args, env, by);
    await w.waitFor(/worker started/);
    stack.sim.pause();
    const { id } = await generate(stack, userToken, { steps: 25 });
    const sub = watch(stack.baseUrl, id, userToken);
    await sub.waitFor((r) => r.data?.generationProgress.status === 'GENERATING');
    return { w, id, sub };
  };
  beforeAll(async () => {
    // A stall interval well above the event-loop pauses of a loaded machine: a live worker's job
    // must never look stalled (the first test checks attempt 1).
    stack = await startStack({ worker: false, simulator: { stepMs: 40 }, env: { STALL_INTERVAL_MS: '3000' } });
  });
  // A failed test must not leave the simulator paused for the next one.
  afterEach(() => stack?.sim.resume());
  afterAll(async () => {
    for (const c of children) {
      if (c.exitCode !== null || !c.pid) continue;
      // npm-started workers lead their own process group: take node with them.
      if (c.spawnargs[0] === 'npm') process.kill(-c.pid, 'SIGKILL');
      else c.kill('SIGKILL');
    }
    await stack?.close();
  });

  it('runs generations, and on SIGTERM finishes its running job and exits 0; the next worker completes the upload', async () => {
    const user = await stack.createUser(2);
    // Only the generation queue: the upload waits for a worker that consumes normal_priority.
    const { w: first, id, sub } = await generatingOn(user.token, ['--queues=high_priority', '--concurrency=1']);
    first.child.kill('SIGTERM');
    // Draining: the job is still running, and the worker waits for it.
    await first.waitFor(/shutting down/);
    expect(first.child.exitCode).toBeNull();
    stack.sim.resume();
    expect(await first.exited).toBe(0);
    await sub.waitFor((r) => r.data?.generationProgress.status === 'UPLOADING');
    const row = await stack.tdb.db('generations').where({ id }).first();
    expect(row.status).toBe('UPLOADING');

    const second = worker(['--queues=high_priority,normal_priority,low_priority', '--concurrency=2']);
    const list = events(await sub.done);
    expectWellFormedStream(list, id);
    expect(statusPath(list).slice(-3)).toEqual(['POST_PROCESSING', 'UPLOADING', 'SUCCEEDED']);
    expect(list[list.length - 1]!.attempt).toBe(1);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expect(await stack.credits(user.userId)).toBe(1);
  });

  it('a worker killed mid-generation loses nothing: the job is re-delivered, runs again and charges once', async () => {
    const user = await stack.createUser(1);
    const { w: doomed, id, sub } = await generatingOn(user.token, ['--concurrency=1']);
    doomed.child.kill('SIGKILL');
    await doomed.exited;
    stack.sim.resume();

    const rescuer = worker(['--concurrency=1']);
    const list = events(await sub.done);
    expectWellFormedStream(list, id);
    const last = list[list.length - 1]!;
    expect(last).toMatchObject({ status: 'SUCCEEDED', attempt: 2 });
    expect(last.images).toHaveLength(1);
    expect(await stack.credits(user.userId)).toBe(0);
    expect(await stack.tdb.db('generated_images').where({ generation_id: id }).count<Array<{ count: number }>>('* as count')).toEqual([{ count: 1 }]);
    rescuer.child.kill('SIGTERM');
    expect(await rescuer.exited).toBe(0);
  });

  it('a generation whose worker keeps dying is given up after TASK_MAX_STALLS, with its credits back', async () => {
    const user = await stack.createUser(1);
    const noSecondChances = { TASK_MAX_STALLS: '0', TASK_MAX_RETRIES: '0' };
    const { w: doomed, id, sub } = await generatingOn(user.token, ['--concurrency=1'], noSecondChances);
    doomed.child.kill('SIGKILL');
    await doomed.exited;
    stack.sim.resume();

    const next = worker(['--concurrency=1'], noSecondChances);
    const list = events(await sub.done);
    expect(list[list.length - 1]).toMatchObject({ status: 'FAILED', error: { code: 'TOO_MANY_ATTEMPTS', retryable: false } });
    expect(await stack.credits(user.userId)).toBe(1);
    next.child.kill('SIGTERM');
    expect(await next.exited).toBe(0);
  });
  it('a worker for low_priority alone starts without a Stable Diffusion server, with its own slots, and saves the chat history', async () => {
    const user = await stack.createUser(1);
    const db = stack.tdb.db;
    const row = await insertGenerationReservingCredits(db, { id: crypto.randomUUID(), userId: user.userId, input: { ...CHAT_INPUT, characterName: 'Gus' } });
    await db('generations').where({ id: row!.id }).update({ status: 'SUCCEEDED', progress: 1, finished_at: db.fn.now() });
    const producer = new JobProducer(stack.config, createLogger('silent'));
    try {
      await producer.enqueue('saveChatHistory', row!.id, { generationId: row!.id });
    } finally {
      await producer.close();
    }

    const w = worker(['--queues=low_priority'], { APP_SD_API_URL: '' }, 'npm');
    await w.waitFor(/worker started/);
    expect(w.output()).toMatch(/"slots":\{"low_priority":4\}/);
    await vi.waitFor(async () => expect(await db('chat_exchanges').where({ generation_id: row!.id }).first()).toMatchObject({ character_name: 'Gus' }), { timeout: WAIT_MS });
    w.child.kill('SIGTERM');
    expect(await w.exited).toBe(0);
  });

  it("the compose and Dockerfile commands start node itself, so a container's SIGTERM reaches it, with time to drain", () => {
    expect(composeWorkerCommand()[0]).toBe('node');
    const worker = compose().services.worker!;
    const grace = /^(\d+)s$/.exec(String(worker.stop_grace_period))?.[1];
    const shutdownMs = Number(worker.environment?.WORKER_SHUTDOWN_TIMEOUT_MS ?? compose()['x-app-env']?.WORKER_SHUTDOWN_TIMEOUT_MS);
    expect(Number(grace) * 1000, 'stop_grace_period covers the shutdown timeout and closing').toBeGreaterThanOrEqual(shutdownMs + 10_000);
    const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'))?.[1];
    expect(cmd, 'the Dockerfile has an exec-form CMD').toBeDefined();
    expect((JSON.parse(cmd!) as string[])[0]).toBe('node');
  });

  it.each([
    ['a Ctrl-C (SIGINT to the whole process group: node gets it twice, from the terminal and from npm)', 'group'],
    ['a SIGTERM to npm alone', 'npm'],
  ] as const)('`npm run worker` drains on %s and leaves no process behind', async (_name, target) => {
    const user = await stack.createUser(1);
    const { w, id, sub } = await generatingOn(user.token, ['--queues=high_priority', '--concurrency=1'], {}, 'npm');
    const nodePid = Number(/"pid":(\d+)/.exec(w.output())?.[1]);
    expect(nodePid).toBeGreaterThan(0);
    expect(nodePid).not.toBe(w.child.pid);
    if (target === 'group') process.kill(-w.child.pid!, 'SIGINT');
    else w.child.kill('SIGTERM');
    await w.waitFor(/shutting down/);
    stack.sim.resume();
    await sub.waitFor((r) => r.data?.generationProgress.status === 'UPLOADING');
    expect(await w.exited).toBe(0);
    // Delivered twice (by the kernel and again by npm), it is still one request to drain: a second
    // Ctrl-C would have said "exiting now" and exited 1.
    expect(w.output()).not.toMatch(/exiting now/);
    expect(() => process.kill(nodePid, 0)).toThrow();
    const row = await stack.tdb.db('generations').where({ id }).first();
    expect(row.status).toBe('UPLOADING');
  });
});
