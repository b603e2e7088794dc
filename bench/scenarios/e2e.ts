/**
 * Scenario 6: generations end to end through the real API and worker processes, with the SD
 * simulator at 1 ms per step: generations per second, and the time each spends outside Stable
 * Diffusion (everything but the txt2img call: API, queue, post-processing, upload, progress).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { createUserWithToken } from '../../src/auth/tokens';
import { createSdSimulator, type TaskTiming } from '../../src/sd/simulator/index';
import { createTestDatabase } from '../../test/helpers/database';
import { gql, subscribe } from '../../test/helpers/graphql';
import { startSmtp } from '../../test/helpers/smtp';
import { freePort, waitForHealth } from '../../test/helpers/stack';
import { GenerateDoc, ProgressDoc } from '../../test/integration/documents';
import { forkTs } from '../lib/processes';
import { percentile, round } from '../lib/stats';
import type { Scenario } from '../lib/types';
import { BENCH_LIMITS_ENV } from '../lib/limits';

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
      APP_SD_API_URL: sdUrl,
      HOST: '127.0.0.1',
      PORT: String(port),
      PUBLIC_URL: `http://127.0.0.1:${port}`,
      STORAGE_DIR: storageDir,
      FILES_URL_SECRET: randomBytes(32).toString('hex'),
      SMTP_URL: smtp.url,
      WORKER_CONCURRENCY: '2',
      POSTPROCESS_THREADS: '2',
      ...BENCH_LIMITS_ENV,
    };
    const api = forkTs(new URL('../../src/main/api.ts', import.meta.url), { env });
    const worker = forkTs(new URL('../../workers/main.ts', import.meta.url), { env });
    const baseUrl = `http://127.0.0.1:${port}`;
    const perGeneration: Array<{ totalMs: number; sdMs: number }> = [];
    let failed = 0;
    const runs: Array<{ label: string; clients: number; count: number; wallSeconds: number; results: typeof perGeneration }> = [];
    // A process that exits (a configuration the entries refuse) fails the scenario at once instead
    // of leaving its generations waiting for the test's timeout.
    const died = new Promise<never>((_, reject) => {
      for (const [name, p] of [['api', api], ['worker', worker]] as const) {
        p.child.once('exit', (code) => reject(new Error(`e2e bench: the ${name} process exited (${code}) while generations ran`)));
      }
    });
    died.catch(() => undefined);
    try {
      await waitForHealth(baseUrl, 30_000, () => api.child.exitCode === null);
      const { token } = await createUserWithToken(tdb.db, { email: 'bench@example.com', credits: total * 2 + 10 });
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
      await worker.stop(15_000);
      await api.stop();
      await sim.close();
      await smtp.close();
      const redis = new Redis(ctx.redisUrl);
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
      await tdb.drop();
      await rm(storageDir, { recursive: true, force: true });
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
        '"In SD" is the txt2img call as the simulator saw it, from request to response, including waiting for its one-at-a-time lock; "outside SD" is the rest of each generation from the mutation being sent to SUCCEEDED arriving over SSE: API, queue, post-processing, staging, the upload job, progress.',
        'Each generation is 512×512, 20 steps, one image. With 20 clients and one SD server the queues are never empty, so the time outside SD includes waiting in the job queue behind other generations; the one-at-a-time row shows the overhead alone.',
      ],
    };
  },
};
