/**
 * A server that has /internal/progress but never registers the task id (SD.Next): the simulator's
 * `ignoreTaskId` mode behaves like it, and the client falls back to the global
 * /sdapi/v1/progress, so progress still arrives, down to the subscription.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESSES_TEST_MS } from '../helpers/budgets';
import { spawnWatched } from '../helpers/run';
import { SdClient, type SdProgress } from '../../src/sd/client';
import { createSdSimulator, type SdSimulator } from '../../src/sd/simulator/index';
import { events, generate, watch } from '../integration/helpers';
import { startStack, type Stack } from '../helpers/stack';
import { until } from '../helpers/wait';

/** The simulator's own global progress: the step its running job is at (0 when idle). */
async function samplingStep(url: string): Promise<number> {
  const body = (await (await fetch(`${url}/sdapi/v1/progress`)).json()) as { state: { sampling_step: number; job_count: number } };
  return body.state.job_count > 0 ? body.state.sampling_step : 0;
}

describe('the simulator ignoring task ids, and the client', () => {
  let sim: SdSimulator;
  let url: string;
  beforeAll(async () => {
    sim = createSdSimulator({ stepMs: 20, ignoreTaskId: true });
    url = await sim.listen(0);
  });
  afterAll(async () => {
    await sim.close();
  });

  it('answers "Waiting..." for the running task; the client reads progress from the global route instead', async () => {
    const client = new SdClient({ baseUrl: url, progressIntervalMs: 10 });
    try {
      const seen: SdProgress[] = [];
      sim.pause();
      const call = client.txt2img(
        { prompt: 'p', negativePrompt: '', width: 64, height: 64, steps: 10, cfgScale: 7, sampler: 'Euler a', seed: 1, batchSize: 1 },
        { taskId: 'task-ignored-1', onProgress: (p) => seen.push(p) },
      );
      await until(() => sim.stats.txt2imgInFlight === 1, 'the job to reach the simulator');
      const internal = (await (await fetch(`${url}/internal/progress`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ id_task: 'task-ignored-1', id_live_preview: -1 }),
      })).json()) as Record<string, unknown>;
      expect(internal).toMatchObject({ active: false, queued: false, completed: false, textinfo: 'Waiting...' });
      // While sampling is held, the client already reports the job as active (from the global route).
      await until(() => seen.some((p) => p.phase === 'active'), 'an active reading while the job is held');
      sim.resume();
      await call;
      const active = seen.filter((p) => p.phase === 'active');
      expect(active.at(-1)).toMatchObject({ progress: 1, step: 10 });
      for (let i = 1; i < active.length; i++) expect(active[i]!.progress).toBeGreaterThanOrEqual(active[i - 1]!.progress);
    } finally {
      await client.close();
    }
  });
});

describe('npm run sd:simulator in that mode', () => {
  // Both ways to ask for it: the flag, and the environment (for dev and containers).
  for (const [how, args, env] of [
    ['--ignore-task-id', ['--ignore-task-id'], {}],
    ['SD_SIMULATOR_IGNORE_TASK_ID=true', [], { SD_SIMULATOR_IGNORE_TASK_ID: 'true' }],
  ] as const) {
    it(`is turned on by ${how}`, { timeout: PROCESSES_TEST_MS }, async () => {
      const sim = spawnWatched(process.execPath, ['--import', 'tsx', 'src/sd/simulator/main.ts', '--port', '0', '--step-ms', '20', ...args], {
        env: { ...process.env, ...env },
      });
      try {
        await sim.waitFor(/listening on (http:\/\/\S+) .*ignores task ids/);
        const url = /listening on (http:\/\/\S+)/.exec(sim.output())![1]!;
        const call = fetch(`${url}/sdapi/v1/txt2img`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ prompt: 'p', steps: 100, width: 64, height: 64, force_task_id: 'mine' }),
        });
        await until(async () => (await samplingStep(url)) > 0, 'the job to sample');
        const internal = (await (await fetch(`${url}/internal/progress`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id_task: 'mine' }) })).json()) as Record<string, unknown>;
        expect(internal).toMatchObject({ active: false, queued: false, completed: false, textinfo: 'Waiting...' });
        await fetch(`${url}/sdapi/v1/interrupt`, { method: 'POST' });
        expect((await call).status).toBe(200);
      } finally {
        sim.child.kill('SIGTERM');
        await sim.exited;
      }
    });
  }

  it('refuses a SD_SIMULATOR_IGNORE_TASK_ID that is not a boolean, saying so', { timeout: PROCESSES_TEST_MS }, async () => {
    const sim = spawnWatched(process.execPath, ['--import', 'tsx', 'src/sd/simulator/main.ts', '--port', '0'], { env: { ...process.env, SD_SIMULATOR_IGNORE_TASK_ID: 'maybe' } });
    expect(await sim.exited).toBe(2);
    expect(sim.output()).toMatch(/SD_SIMULATOR_IGNORE_TASK_ID must be true or false/);
  });
});

describe('a stack whose SD server ignores task ids', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ simulator: { stepMs: 100, ignoreTaskId: true } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('still streams increasing progress before SUCCEEDED', async () => {
    const { token } = await stack.createUser(3);
    const { id } = await generate(stack, token, { steps: 20, width: 64, height: 64 });
    const stream = watch(stack.baseUrl, id, token);
    const simUrl = stack.env.APP_SD_API_URL!;
    // Held mid-sampling: whatever reaches the subscriber now came from polls while the job ran.
    await until(async () => (await samplingStep(simUrl)) >= 3, 'sampling to pass step 3');
    stack.sim.pause();
    const held = await samplingStep(simUrl);
    const mid = await stream.waitFor((r) => {
      const e = r.data?.generationProgress;
      return e?.status === 'GENERATING' && (e.step ?? 0) >= 3;
    });
    stack.sim.resume();
    const list = events(await stream.done);
    expect(list.at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    const generating = list.filter((e) => e.status === 'GENERATING');
    expect(mid.data!.generationProgress.step).toBeLessThanOrEqual(held);
    expect(generating.length).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < generating.length; i++) expect(generating[i]!.progress).toBeGreaterThanOrEqual(generating[i - 1]!.progress);
    expect(generating.at(-1)!.progress).toBeGreaterThan(generating[0]!.progress);
    expect(generating.at(-1)).toMatchObject({ step: 20, totalSteps: 20 });
  });
});
