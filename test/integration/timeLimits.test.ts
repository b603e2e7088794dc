/**
 * Celery's task_soft_time_limit / task_time_limit, over the real worker and the simulator: the soft
 * limit interrupts sampling and keeps the image so far; the hard limit stops the job for good
 * (no retry, credits back) and leaves the SD server free.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../helpers/stack';
import { events, expectWellFormedStream, generate, statusPath, watch } from './helpers';

describe('time limits', () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stack?.close();
    stack = undefined;
  });

  it('at the soft limit the worker interrupts sampling and the generation succeeds with the image so far', async () => {
    stack = await startStack({ env: { TASK_SOFT_TIME_LIMIT_S: '1', TASK_TIME_LIMIT_S: '20' }, simulator: { stepMs: 100 } });
    const user = await stack.createUser(1);
    // 60 steps of 100 ms: six seconds of sampling, stopped after one.
    const { id } = await generate(stack, user.token, { steps: 60, width: 64, height: 64 });
    const list = events(await watch(stack.baseUrl, id, user.token).done);
    expectWellFormedStream(list, id);
    const last = list[list.length - 1]!;
    expect(last.status).toBe('SUCCEEDED');
    expect(last.images).toHaveLength(1);
    expect(stack.sim.stats.interrupts).toBe(1);
    expect(stack.sim.stats.txt2imgCalls).toBe(1);
    expect(Math.max(...list.filter((e) => e.status === 'GENERATING').map((e) => e.step ?? 0))).toBeLessThan(60);
    expect(await stack.credits(user.userId)).toBe(0);
  });

  it('a soft limit that passes while the job waits at the SD server interrupts it once it is active', async () => {
    stack = await startStack({ env: { TASK_SOFT_TIME_LIMIT_S: '1', TASK_TIME_LIMIT_S: '120' }, simulator: { stepMs: 100 } });
    const user = await stack.createUser(1);
    // Someone else's job holds the (paused) server; ours waits behind it, past its soft limit.
    stack.sim.pause();
    const other = fetch(`${stack.sim.url}/sdapi/v1/txt2img`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'not ours', steps: 5, width: 64, height: 64, force_task_id: 'someone-else' }),
    });
    const { id } = await generate(stack, user.token, { steps: 60, width: 64, height: 64 });
    const sub = watch(stack.baseUrl, id, user.token);
    await sub.waitFor((r) => r.data?.generationProgress.status === 'STARTED' && r.data.generationProgress.queuePosition === 1);
    // Past the soft limit (not a check of time: waiting less would only test the plain case).
    await new Promise((r) => setTimeout(r, 2500));
    expect(stack.sim.stats.interrupts).toBe(0);
    stack.sim.resume();
    expect((await other).status).toBe(200);
    const list = events(await sub.done);
    expectWellFormedStream(list, id);
    expect(list.at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    expect(stack.sim.stats.interrupts).toBe(1);
    expect(Math.max(...list.filter((e) => e.status === 'GENERATING').map((e) => e.step ?? 0))).toBeLessThan(60);
  });

  it('at the hard limit the job is stopped and fails with TIME_LIMIT_EXCEEDED, without a retry, credits back', async () => {
    // Soft and hard at the same second: the hard limit ends the job before the interrupt's answer.
    stack = await startStack({ env: { TASK_SOFT_TIME_LIMIT_S: '1', TASK_TIME_LIMIT_S: '1', TASK_MAX_RETRIES: '2', TASK_RETRY_DELAY_S: '0' }, simulator: { stepMs: 200 } });
    const user = await stack.createUser(1);
    const { id } = await generate(stack, user.token, { steps: 50, width: 64, height: 64 });
    const list = events(await watch(stack.baseUrl, id, user.token).done);
    expectWellFormedStream(list, id);
    const last = list[list.length - 1]!;
    expect(last.status).toBe('FAILED');
    expect(last.error).toMatchObject({ code: 'TIME_LIMIT_EXCEEDED', retryable: false });
    expect(statusPath(list)).not.toContain('RETRYING');
    expect(stack.sim.stats.txt2imgCalls).toBe(1);
    expect(await stack.credits(user.userId)).toBe(1);
    // The SD server was freed: the worker interrupted it, and it runs nothing any more. (Not a
    // follow-up generation: under this stack's 1 s hard limit, a busy machine fails that one too.)
    expect(stack.sim.stats.interrupts).toBeGreaterThanOrEqual(1);
    const sdUrl = stack.sim.url;
    await expect
      .poll(async () => ((await (await fetch(`${sdUrl}/sdapi/v1/progress`)).json()) as { state: { job_count: number } }).state.job_count)
      .toBe(0);
  });
});
