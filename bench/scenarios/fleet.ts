/**
 * Scenario 7: a fleet of SD servers. Generations end to end through the real API and worker
 * processes against one simulator, then against three (one worker, APP_SD_API_URL listing them,
 * its default of one slot per server), measured side by side in one run and alternated in rounds:
 * generations per second, and the ratio of three servers to one (the target: at least 2.7×).
 * The simulators sample at a GPU-like pace so that the servers, not this machine, bound the rate.
 */
import { createSdSimulator, type SdSimulator } from '../../src/sd/simulator/index';
import { gql, subscribe } from '../../test/helpers/graphql';
import { GenerateDoc, ProgressDoc } from '../../test/integration/documents';
import { startBenchService } from '../lib/service';
import { round } from '../lib/stats';
import type { Row, Scenario } from '../lib/types';

const STEPS = 20;

export const scenario: Scenario = {
  id: 'fleet',
  title: 'A fleet of SD servers: generations per second with three simulators against one',
  async run(ctx) {
    const stepMs = ctx.quick ? 25 : 50;
    const perRound = ctx.quick ? 9 : 30;
    const rounds = ctx.quick ? 1 : 2;
    const sims: SdSimulator[] = Array.from({ length: 3 }, () => createSdSimulator({ stepMs }));
    const urls: string[] = [];
    for (const s of sims) urls.push(await s.listen(0, '127.0.0.1'));
    const measured = { 1: { count: 0, seconds: 0 }, 3: { count: 0, seconds: 0 } };
    try {
      for (let round = 0; round < rounds; round++) {
        // Alternated, so that a busier moment of this shared machine does not favour one side.
        for (const servers of round % 2 === 0 ? ([1, 3] as const) : ([3, 1] as const)) {
          const service = await startBenchService(ctx, { name: 'fleet', sdUrl: urls.slice(0, servers).join(',') });
          try {
            const token = await service.user(perRound * 2 + 10);
            let failed = 0;
            const one = async (i: number) => {
              const res = await gql(service.baseUrl, GenerateDoc, { input: { prompt: `fleet ${i}`, steps: STEPS, width: 256, height: 256, seed: i } }, token);
              const id = res.data?.generateImage.id;
              if (!id) throw new Error(`generateImage failed: ${JSON.stringify(res.errors)}`);
              const results = await subscribe(service.baseUrl, ProgressDoc, { id }, token).done;
              if (results.at(-1)?.data?.generationProgress.status !== 'SUCCEEDED') failed++;
            };
            // Warm-up: one per server, so thread start-up and first connections are not measured.
            await Promise.race([service.died, Promise.all(Array.from({ length: servers }, (_, i) => one(-1 - i)))]);
            ctx.log(`  round ${round + 1}: ${perRound} generations on ${servers} server(s)`);
            const started = performance.now();
            // Twice as many in flight as servers: the queue is never empty.
            let next = 0;
            await Promise.race([
              service.died,
              Promise.all(
                Array.from({ length: servers * 2 }, async () => {
                  while (next < perRound) await one(next++);
                }),
              ),
            ]);
            if (failed > 0) throw new Error(`${failed} generation(s) did not succeed`);
            measured[servers].count += perRound;
            measured[servers].seconds += (performance.now() - started) / 1000;
          } finally {
            await service.stop();
          }
        }
      }
    } finally {
      await Promise.all(sims.map((s) => s.close()));
    }
    const rate = (n: 1 | 3) => measured[n].count / measured[n].seconds;
    const concurrent = Math.max(...sims.map((s) => s.stats.maxConcurrentTxt2img));
    const rows: Row[] = [
      { label: 'one SD server (worker default: 2 slots)', figures: { 'generations/s': round(rate(1), 2), 'ideal generations/s': round(1000 / (stepMs * STEPS), 2) } },
      { label: 'three SD servers (worker default: 3 slots)', figures: { 'generations/s': round(rate(3), 2), 'ideal generations/s': round((3 * 1000) / (stepMs * STEPS), 2) } },
      { label: 'most txt2img calls one server had at once', figures: { calls: concurrent } },
    ];
    return {
      rows,
      targets: [{ description: 'three SD servers ≥ 2.7× one server (generations/s)', value: round(rate(3) / rate(1), 2), bound: 2.7, better: 'higher' }],
      notes: [
        `Each generation is 256×256, ${STEPS} steps at ${stepMs} ms a step (${(STEPS * stepMs) / 1000} s in SD), one image; ${perRound} generations per side and round, ${rounds} round(s), the sides alternated; the clients keep twice as many generations in flight as there are servers.`,
        'API and worker are separate processes (`npm run api`, `npm run worker` with its default slots); the simulators and the clients run in the bench process. The worker sends each server one job at a time under its lease in Redis.',
      ],
    };
  },
};
