/**
 * A worker's /metrics (on WORKER_METRICS_PORT, beside its health): a finished and a failed
 * generation are counted with their kind and outcome, the duration histogram's buckets are
 * cumulative and end at the count, the SD calls, sampling steps and post-processing are timed, the
 * failure's refund is counted, and the queue figures carry bull_exporter's names too; a retry and a
 * stalled job move their counters. The API's /metrics: operation latency by name and type (odd names
 * folded into `other`), open streams and the credits it charged.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHealthServer } from '../../src/health';
import { startStack, type Stack } from '../helpers/stack';
import { until } from '../helpers/wait';
import { events, generate, watch } from './helpers';

/** The value of one sample line of a Prometheus text answer, or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = m[2] ? m[2].split(',') : [];
    if (wanted.every((w) => have.includes(w)) && have.length === wanted.length) return Number(m[3]);
  }
  return undefined;
}

describe('metrics', () => {
  let stack: Stack;
  let server: Awaited<ReturnType<typeof startHealthServer>>;
  beforeAll(async () => {
    // A short stall interval: the stall check of the last test comes round quickly.
    stack = await startStack({ env: { STALL_INTERVAL_MS: '500' } });
    server = await startHealthServer(stack.worker!.healthChecks, 2000, 0, '127.0.0.1', stack.worker!.prometheus);
  });
  afterAll(async () => {
    await server?.close();
    await stack?.close();
  });

  it('counts a finished and a failed generation with their labels, in cumulative histogram buckets', async () => {
    const { token } = await stack.createUser(5);
    // Held at its first step until the worker has seen it sampling, so the steps after it are timed.
    stack.sim.pause();
    const ok = await generate(stack, token, { steps: 3, width: 64, height: 64 });
    const okStream = watch(stack.baseUrl, ok.id, token);
    try {
      await okStream.waitFor((r) => r.data?.generationProgress.status === 'GENERATING');
    } finally {
      stack.sim.resume();
    }
    expect(events(await okStream.done).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    stack.sim.failNext('bad-request');
    const bad = await generate(stack, token, { steps: 3, width: 64, height: 64 });
    expect(events(await watch(stack.baseUrl, bad.id, token).done).at(-1)).toMatchObject({ status: 'FAILED' });

    const res = await fetch(`${server.url}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(sample(text, 'sdjobs_jobs_total', { kind: 'generateImage', outcome: 'succeeded' })).toBe(1);
    expect(sample(text, 'sdjobs_jobs_total', { kind: 'generateImage', outcome: 'failed' })).toBe(1);
    expect(sample(text, 'sdjobs_jobs_total', { kind: 'uploadToCloud', outcome: 'succeeded' })).toBe(1);
    const count = sample(text, 'sdjobs_job_duration_seconds_count', { kind: 'generateImage' });
    expect(count).toBe(2);
    expect(sample(text, 'sdjobs_job_duration_seconds_bucket', { kind: 'generateImage', le: '+Inf' })).toBe(count);
    const buckets = text.split('\n').filter((l) => l.startsWith('sdjobs_job_duration_seconds_bucket{kind="generateImage"'));
    const values = buckets.map((l) => Number(l.split(' ').at(-1)));
    for (let i = 1; i < values.length; i++) expect(values[i]).toBeGreaterThanOrEqual(values[i - 1]!);
    expect(sample(text, 'sdjobs_job_duration_seconds_sum', { kind: 'generateImage' })).toBeGreaterThan(0);
    // The process's own figures (the queue figures read from Redis are checked below).
    expect(sample(text, 'sdjobs_jobs_active')).toBe(0);
    expect(text).toMatch(/^process_cpu_seconds_total /m);

    // The SD calls: one txt2img answered, one refused (bad-request), the polls in between.
    expect(sample(text, 'sdjobs_sd_request_duration_seconds_count', { call: 'txt2img', outcome: 'ok' })).toBe(1);
    expect(sample(text, 'sdjobs_sd_request_duration_seconds_count', { call: 'txt2img', outcome: 'error' })).toBe(1);
    expect(sample(text, 'sdjobs_sd_request_duration_seconds_bucket', { call: 'txt2img', outcome: 'ok', le: '+Inf' })).toBe(1);
    expect(sample(text, 'sdjobs_sd_request_duration_seconds_count', { call: 'progress_poll', outcome: 'ok' })).toBeGreaterThan(0);
    // The steps from the one the worker saw while held to the last: at least one, at most three.
    const steps = sample(text, 'sdjobs_sd_step_duration_seconds_count')!;
    expect(steps).toBeGreaterThanOrEqual(1);
    expect(steps).toBeLessThanOrEqual(3);
    expect(sample(text, 'sdjobs_sd_step_duration_seconds_bucket', { le: '+Inf' })).toBe(steps);
    // The one image of the success was post-processed once; the failure never reached the pool.
    expect(sample(text, 'sdjobs_postprocess_duration_seconds_count', { task: 'postprocess', outcome: 'ok' })).toBe(1);
    expect(sample(text, 'sdjobs_postprocess_duration_seconds_bucket', { task: 'postprocess', outcome: 'ok', le: '10' })).toBe(1);
    // The failure's credit came back through the worker; the API charged both.
    expect(sample(text, 'sdjobs_credits_refunded_total', { reason: 'failed' })).toBe(1);
    expect(sample(text, 'sdjobs_credits_refunded_total', { reason: 'cancelled' })).toBe(0);
    const api = await (await fetch(`${stack.baseUrl}/metrics`)).text();
    expect(sample(api, 'sdjobs_credits_charged_total')).toBe(2);
    expect(sample(api, 'sdjobs_credits_refunded_total', { reason: 'failed' })).toBe(0);
    // Every worker's outcomes and the queue depths, read from Redis, under our names and
    // bull_exporter's; nothing waits. (A scrape whose Redis read takes over a second answers without
    // them: waited for, not assumed of the first scrape.)
    await until(async () => sample(await (await fetch(`${server.url}/metrics`)).text(), 'bull_queue_failed', { queue: 'high_priority' }) === 1, 'the failure to be counted');
    const queues = await (await fetch(`${server.url}/metrics`)).text();
    expect(sample(queues, 'bull_queue_waiting', { queue: 'high_priority' })).toBe(0);
    expect(sample(queues, 'sdjobs_queue_jobs', { queue: 'high_priority', state: 'delayed' })).toBe(0);
    expect(sample(queues, 'bull_queue_completed', { queue: 'high_priority' })).toBe(1);
    expect(sample(queues, 'bull_queue_completed', { queue: 'normal_priority' })).toBe(1);
    expect(sample(queues, 'sdjobs_queue_oldest_waiting_seconds', { queue: 'high_priority' })).toBe(0);
    expect(sample(queues, 'sdjobs_job_retries_total', { queue: 'high_priority' })).toBe(0);
  });

  it('counts a retry, and a job of a dead worker that a stall check put back', async () => {
    const { token } = await stack.createUser(1);
    const scrape = async () => (await fetch(`${server.url}/metrics`)).text();
    stack.sim.failNext('http500');
    const flaky = await generate(stack, token, { steps: 3, width: 64, height: 64 });
    expect(events(await watch(stack.baseUrl, flaky.id, token).done).at(-1)).toMatchObject({ status: 'SUCCEEDED', attempt: 2 });
    const text = await scrape();
    expect(sample(text, 'sdjobs_job_retries_total', { queue: 'high_priority' })).toBe(1);
    expect(sample(text, 'sdjobs_jobs_total', { kind: 'generateImage', outcome: 'retrying' })).toBe(1);
    expect(sample(text, 'sdjobs_jobs_stalled_total', { queue: 'high_priority' })).toBe(0);

    // What a worker that died mid-job leaves behind: a job id in `active` that nobody vouches for.
    const active = `${stack.config.redis.prefix}:high_priority:active`;
    await stack.redis.lpush(active, 'left-by-a-dead-worker');
    await until(async () => sample(await scrape(), 'sdjobs_jobs_stalled_total', { queue: 'high_priority' }) === 1, 'the stall check to re-queue the job');
    // Its record is gone, so the worker drops it when it takes it.
    await until(async () => (await stack.redis.llen(active)) === 0, 'the re-queued id to be dropped');
  });

  it("the API's /metrics: operation latency by name and type, open streams, the process", async () => {
    const { token } = await stack.createUser(2);
    // The generations of the test before went through this API too: counted from here on.
    const before = await (await fetch(`${stack.baseUrl}/metrics`)).text();
    const count = (text: string, operation_name: string, operation_type: string) =>
      (sample(text, 'sdjobs_graphql_operation_duration_seconds_count', { operation_name, operation_type }) ?? 0) -
      (sample(before, 'sdjobs_graphql_operation_duration_seconds_count', { operation_name, operation_type }) ?? 0);
    const me = (name: string) =>
      fetch(`${stack.baseUrl}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: `query ${name} { me { email } }` }),
      }).then((r) => r.json());
    await me('MetricsProbe');
    await me('MetricsProbe');
    await me(`A${'x'.repeat(70)}`);
    stack.sim.pause();
    try {
      const { id } = await generate(stack, token, { steps: 3, width: 64, height: 64 });
      const stream = watch(stack.baseUrl, id, token);
      await stream.waitFor(() => true);
      const open = await (await fetch(`${stack.baseUrl}/metrics`)).text();
      expect(sample(open, 'sdjobs_open_subscriptions')).toBe(1);
      stack.sim.resume();
      await stream.done;
    } finally {
      stack.sim.resume();
    }
    const res = await fetch(`${stack.baseUrl}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(count(text, 'MetricsProbe', 'query')).toBe(2);
    expect(count(text, 'other', 'query')).toBe(1);
    expect(count(text, 'Generate', 'mutation')).toBe(1);
    expect(count(text, 'Progress', 'subscription')).toBe(1);
    expect(sample(text, 'sdjobs_graphql_operation_duration_seconds_bucket', { operation_name: 'MetricsProbe', operation_type: 'query', le: '+Inf' })).toBe(2);
    await expect.poll(async () => sample(await (await fetch(`${stack.baseUrl}/metrics`)).text(), 'sdjobs_open_subscriptions')).toBe(0);
    expect(text).toMatch(/^process_cpu_seconds_total /m);
  });
});
