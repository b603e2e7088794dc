/**
 * The production shape: `npm run worker` as its own process. A SIGTERM lets the running job finish
 * and exits cleanly; what is left (the upload) is done by the next worker, nothing is lost.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../helpers/stack';
import { events, expectWellFormedStream, generate, statusPath, watch } from './helpers';

function startWorkerProcess(stack: Stack, args: string[], env: Record<string, string> = {}): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  let out = '';
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/main.ts', ...args], {
    env: { ...process.env, ...stack.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function waitForOutput(output: () => string, pattern: RegExp, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!pattern.test(output())) {
    if (Date.now() > deadline) throw new Error(`no ${pattern} in:\n${output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('npm run worker as a process', () => {
  let stack: Stack;
  const children: ChildProcess[] = [];
  const worker = (args: string[], env: Record<string, string> = {}) => {
    const w = startWorkerProcess(stack, args, env);
    children.push(w.child);
    return w;
  };
  /** Starts a worker, then a generation, and returns once that generation is being sampled there. */
  const generatingOn = async (userToken: string, args: string[], env: Record<string, string> = {}) => {
    const w = worker(args, env);
    await waitForOutput(w.output, /worker started/);
    const { id } = await generate(stack, userToken, { steps: 25 });
    const sub = watch(stack.baseUrl, id, userToken);
    await sub.waitFor((r) => r.data?.generationProgress.status === 'GENERATING');
    return { w, id, sub };
  };
  beforeAll(async () => {
    stack = await startStack({ worker: false, simulator: { stepMs: 40 }, env: { STALL_INTERVAL_MS: '1000' } });
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await stack?.close();
  });

  it('runs generations, and on SIGTERM finishes its running job and exits 0; the next worker completes the upload', async () => {
    const user = await stack.createUser(2);
    // Only the generation queue: the upload waits for a worker that consumes normal_priority.
    const { w: first, id, sub } = await generatingOn(user.token, ['--queues=high_priority', '--concurrency=1']);
    first.child.kill('SIGTERM');
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

    const next = worker(['--concurrency=1'], noSecondChances);
    const list = events(await sub.done);
    expect(list[list.length - 1]).toMatchObject({ status: 'FAILED', error: { code: 'TOO_MANY_ATTEMPTS', retryable: false } });
    expect(await stack.credits(user.userId)).toBe(1);
    next.child.kill('SIGTERM');
    expect(await next.exited).toBe(0);
  });
});
