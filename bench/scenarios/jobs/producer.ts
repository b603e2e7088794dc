/**
 * Child process of the job-throughput scenario: fills a fresh queue in bulk when told to, and says
 * how long that took. Bee-Queue (own layer and raw alike) gets the jobs JobProducer would make
 * (envelope, id, retries, fixed backoff, time limit) saved with `saveAll`; BullMQ gets the same data
 * with comparable options through `addBulk`. Both in chunks of CHUNK jobs, one pipeline each.
 */
import { randomUUID } from 'node:crypto';
import { Queue as BullQueue } from 'bullmq';
import { Redis } from 'ioredis';
import { createQueue } from '../../../src/jobs/queues';
import type { JobEnvelope } from '../../../src/jobs/registry';
import { jobId } from '../../../src/jobs/registry';
import { report } from '../../lib/processes';
import { benchConfig, isMessage, QUEUE, type FromProducer, type SystemId, type ToProducer } from './systems';

const CHUNK = 5000;
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const send = (m: FromProducer) => report(m);

const envelope = (generationId: string): JobEnvelope => ({ kind: 'generateImage', payload: { generationId } });

/** Each fill resolves with the seconds spent adding the jobs (connecting not included). */
async function fillBeeQueue(prefix: string, jobs: number): Promise<number> {
  const config = benchConfig(redisUrl, prefix);
  const queue = createQueue(config, QUEUE, { worker: false });
  queue.on('error', (err: Error) => process.stderr.write(`bench producer: ${err.message}\n`));
  try {
    await queue.ready();
    const { worker } = config;
    const started = performance.now();
    for (let done = 0; done < jobs; done += CHUNK) {
      const batch = Array.from({ length: Math.min(CHUNK, jobs - done) }, () => {
        const id = randomUUID();
        // As JobProducer.enqueue does it, one job at a time there.
        return queue
          .createJob(envelope(id))
          .setId(jobId('generateImage', id))
          .retries(worker.maxRetries)
          .backoff('fixed', worker.retryDelayMs)
          .timeout(worker.timeLimitMs + 30_000);
      });
      const errors = await queue.saveAll(batch);
      if (errors.size > 0) throw new Error(`saveAll: ${errors.size} jobs not saved: ${[...errors.values()][0]?.message}`);
    }
    return (performance.now() - started) / 1000;
  } finally {
    await queue.close();
  }
}

async function fillBullmq(prefix: string, jobs: number): Promise<number> {
  const { worker } = benchConfig(redisUrl, prefix);
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const queue = new BullQueue(QUEUE, { connection, prefix });
  queue.on('error', (err: Error) => process.stderr.write(`bench producer: ${err.message}\n`));
  try {
    await queue.waitUntilReady();
    const started = performance.now();
    for (let done = 0; done < jobs; done += CHUNK) {
      await queue.addBulk(
        Array.from({ length: Math.min(CHUNK, jobs - done) }, () => {
          const id = randomUUID();
          return {
            name: 'generateImage',
            data: envelope(id),
            opts: {
              jobId: id,
              attempts: worker.maxRetries + 1,
              backoff: { type: 'fixed', delay: worker.retryDelayMs },
              removeOnComplete: true,
              removeOnFail: true,
            },
          };
        }),
      );
    }
    return (performance.now() - started) / 1000;
  } finally {
    await queue.close();
    await connection.quit();
  }
}

const fill = (system: SystemId, prefix: string, jobs: number): Promise<number> =>
  system === 'bullmq' ? fillBullmq(prefix, jobs) : fillBeeQueue(prefix, jobs);

process.on('message', (m: unknown) => {
  if (isMessage<Extract<ToProducer, { type: 'fill' }>>('fill')(m)) {
    fill(m.system, m.prefix, m.jobs).then(
      (seconds) => send({ type: 'filled', jobs: m.jobs, seconds }),
      (err: unknown) => {
        process.stderr.write(`bench producer failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
        process.exit(1);
      },
    );
  } else if (isMessage<Extract<ToProducer, { type: 'close' }>>('close')(m)) {
    const closed: FromProducer = { type: 'closed' };
    if (process.send) process.send(closed, () => process.exit(0));
    else process.exit(0);
  }
});
send({ type: 'ready' });
