/**
 * Scenario 6: generations end to end through the real API and worker processes, with the SD
 * simulator at 1 ms per step: generations per second, and the time each spends outside Stable
 * Diffusion (everything but the txt2img call: API, queue, post-processing, upload, progress).
 */
import { createSdSimulator, type TaskTiming } from '../../src/sd/simulator/index';
import { gql, subscribe } from '../../test/helpers/graphql';
import { GenerateDoc, ProgressDoc } from '../../test/integration/documents';
import { startBenchService } from '../lib/service';
import { percentile, round } from '../lib/stats';
import type { Scenario } from '../lib/types';

const nowMs = () => performance.timeOrigin + performance.now();

export const scenario: Scenario = {
  id: 'e2e',
  title: 'End to end: generations through the API and worker processes (simulator at 1 ms/step)',
  async run(ctx) {
    const total = ctx.quick ? 20 : 200;
    const inFlight = 20;
    const timings = new Map<string, TaskTiming>();
    const sim = createSdSimulator({ stepMs: 1, onTaskDone: (t) => timings.set(t.taskId, t) });
    const sdUrl = await sim.listen(0, '127.0.0.1');
    const service = await startBenchService(ctx, { name: 'e2e', sdUrl, env: { WORKER_CONCURRENCY: '2' } }).catch(async (err: unknown) => {
      await sim.close();
      throw err;
    });
    const { baseUrl, died } = service;
    const perGeneration: Array<{ totalMs: number; sdMs: number }> = [];
    let failed = 0;
    const runs: Array<{ label: string; clients: number; count: number; wallSeconds: number; results: typeof perGeneration }> = [];
    try {
      const token = await service.user(total * 2 + 10);
      const one = async (i: number) => {
        const sent = nowMs();
        const res = await gql(baseUrl, GenerateDoc, { input: { prompt: `benchmark ${i}`, steps: 20, seed: i } }, token);
        const id = res.data?.generateImage.id;
        if (!id) throw new Error(`generateImage failed: ${JSON.stringify(res.errors)}`);
        const results = await subscribe(baseUrl, ProgressDoc, { id }, token).done;
        const last = results[results.length - 1]?.data?.generationProgress;
        const done = nowMs();
        if (last?.status !== 'SUCCEEDED') {
          failed++;
          return;
        }
        const sd = timings.get(`${id}-${last.attempt}`);
        perGeneration.push({ totalMs: done - sent, sdMs: sd ? sd.answeredAt - sd.receivedAt : Number.NaN });
      };
      // One warm-up generation: thread start-up and first connections are not what we measure.
      await Promise.race([died, one(-1)]);
      const batch = async (label: string, count: number, clients: number) => {
        perGeneration.length = 0;
        ctx.log(`  ${count} generations, ${clients} in flight`);
        const started = nowMs();
        let next = 0;
        await Promise.race([
          died,
          Promise.all(
            Array.from({ length: clients }, async () => {
              while (next < count) await one(next++);
            }),
          ),
        ]);
        runs.push({ label, clients, count, wallSeconds: (nowMs() - started) / 1000, results: [...perGeneration] });
      };
      await batch(`${total} generations, ${inFlight} clients at once (throughput)`, total, inFlight);
      await batch(`${total / 10} generations, one at a time (overhead)`, total / 10, 1);
    } finally {
      await service.stop();
      await sim.close();
    }
    if (failed > 0) throw new Error(`${failed} generation(s) did not succeed`);
    const rows = runs.map((r) => {
      const outside = r.results.map((g) => g.totalMs - g.sdMs).filter((v) => Number.isFinite(v));
      const inSd = r.results.map((g) => g.sdMs).filter((v) => Number.isFinite(v));
      const totals = r.results.map((g) => g.totalMs);
      return {
        label: r.label,
        figures: {
          'generations/s': round(r.results.length / r.wallSeconds),
          'total p50 ms': round(percentile(totals, 50), 1),
          'total p99 ms': round(percentile(totals, 99), 1),
          'in SD p50 ms': round(percentile(inSd, 50), 1),
          'outside SD p50 ms': round(percentile(outside, 50), 1),
          'outside SD p99 ms': round(percentile(outside, 99), 1),
        },
      };
    });
    return {
      rows,
      targets: [],
      notes: [
        'API and worker are separate processes (`npm run api`, `npm run worker` with concurrency 2 and 2 post-processing threads); the simulator and the clients run in the bench process.',
        '"In SD" is the txt2img call as the simulator saw it, from request to response (the worker sends a server one job at a time, under its lease, so a second slot waits for the server in the worker, not in the simulator\'s lock); "outside SD" is the rest of each generation from the mutation being sent to SUCCEEDED arriving over SSE: API, queue, post-processing, staging, the upload job, progress.',
        'Each generation is 512×512, 20 steps, one image. With 20 clients and one SD server the queues are never empty, so the time outside SD includes waiting in the job queue behind other generations; the one-at-a-time row shows the overhead alone.',
      ],
    };
  },
};
