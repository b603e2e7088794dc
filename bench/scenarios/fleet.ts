/**
 * Scenario 7: a fleet of SD servers. Generations end to end through the real API and worker
 * processes against one simulator and against three (one worker, APP_SD_API_URL listing them),
 * measured side by side in one run and alternated in rounds: generations per second, and the ratio
 * of three servers to one (the target: at least 2.7×). Three servers run twice: with the worker's
 * default slots (one per server) and with one spare slot (4), which is what one server has by
 * default (2): a spare slot keeps a job ready while another post-processes, so no server idles.
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
    const stepMs = ctx.quick ? 25 : 100;
    const perRound = ctx.quick ? 9 : 30;
    const rounds = ctx.quick ? 1 : 2;
    // Seconds the servers spent answering txt2img calls during the side being measured.
    let busySeconds = 0;
    let measuring = false;
    const sims: SdSimulator[] = Array.from({ length: 3 }, () =>
      createSdSimulator({ stepMs, onTaskDone: (t) => measuring && (busySeconds += (t.answeredAt - t.receivedAt) / 1000) }),
    );
    const urls: string[] = [];
    for (const s of sims) urls.push(await s.listen(0, '127.0.0.1'));
    // The sides: servers, and the worker's slots (undefined: its default).
    const sides = [
      { key: 'one', servers: 1, slots: undefined },
      { key: 'three', servers: 3, slots: undefined },
      { key: 'threeSpare', servers: 3, slots: 4 },
    ] as const;
    const empty = () => ({ count: 0, seconds: 0, busy: 0, servers: 0 });
    const measured = { one: empty(), three: empty(), threeSpare: empty() };
    try {
      for (let round = 0; round < rounds; round++) {
        // Alternated, so that a busier moment of this shared machine does not favour one side.
        for (const { key, servers, slots } of round % 2 === 0 ? sides : [...sides].reverse()) {
          const service = await startBenchService(ctx, {
            name: 'fleet',
            sdUrl: urls.slice(0, servers).join(','),
            env: slots === undefined ? {} : { WORKER_CONCURRENCY: String(slots) },
          });
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
            await Promise.race([service.died, Promise.all(Array.from({ length: servers }, (_, i) => one(perRound + i)))]);
            ctx.log(`  round ${round + 1}: ${perRound} generations on ${servers} server(s), ${slots ?? 'default'} slots`);
            busySeconds = 0;
            measuring = true;
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
            const seconds = (performance.now() - started) / 1000;
            measuring = false;
            measured[key].count += perRound;
            measured[key].seconds += seconds;
            measured[key].busy += busySeconds;
            measured[key].servers = servers;
          } finally {
            await service.stop();
          }
        }
      }
    } finally {
      await Promise.all(sims.map((s) => s.close()));
    }
    const rate = (k: keyof typeof measured) => measured[k].count / measured[k].seconds;
    const ideal = (servers: number) => round((servers * 1000) / (stepMs * STEPS), 2);
    /** The share of the servers' time spent answering txt2img (a call's time includes no queueing: one at a time). */
    const busy = (k: keyof typeof measured) => round((100 * measured[k].busy) / (measured[k].seconds * measured[k].servers), 1);
    const concurrent = Math.max(...sims.map((s) => s.stats.maxConcurrentTxt2img));
    const rows: Row[] = [
      { label: 'one SD server (worker default: 2 slots)', figures: { 'generations/s': round(rate('one'), 2), 'ideal generations/s': ideal(1), '× one server': 1, 'servers busy %': busy('one') } },
      { label: 'three SD servers (worker default: 3 slots)', figures: { 'generations/s': round(rate('three'), 2), 'ideal generations/s': ideal(3), '× one server': round(rate('three') / rate('one'), 2), 'servers busy %': busy('three') } },
      { label: 'three SD servers, 4 slots (one spare, as one server has)', figures: { 'generations/s': round(rate('threeSpare'), 2), 'ideal generations/s': ideal(3), '× one server': round(rate('threeSpare') / rate('one'), 2), 'servers busy %': busy('threeSpare') } },
      { label: 'most txt2img calls one server had at once', figures: { calls: concurrent } },
    ];
    return {
      rows,
      targets: [
        { description: 'three SD servers ≥ 2.7× one server (generations/s), each with one spare slot', value: round(rate('threeSpare') / rate('one'), 2), bound: 2.7, better: 'higher' },
        { description: 'three SD servers with the default slots ≥ 2.7× one server', value: round(rate('three') / rate('one'), 2), bound: 2.7, better: 'higher' },
      ],
      notes: [
        `Each generation is 256×256, ${STEPS} steps at ${stepMs} ms a step (${(STEPS * stepMs) / 1000} s in SD), one image; ${perRound} generations per side and round, ${rounds} round(s), the sides' order reversed every other round; the clients keep twice as many generations in flight as there are servers.`,
        '"Servers busy %" is the time the simulators spent answering txt2img calls over the measured time and servers; a call takes longer than its steps when this machine delays the simulators\' timers (they share the bench process with the clients).',
        'With one slot per server, a server idles from the end of its txt2img call until its slot has post-processed, staged and queued the upload, and taken and started the next job; a spare slot has that job waiting for the server already. One server has a spare slot by default (2 slots).',
        'API and worker are separate processes (`npm run api`, `npm run worker` with its default slots); the simulators and the clients run in the bench process. The worker sends each server one job at a time under its lease in Redis.',
      ],
    };
  },
};
