/**
 * A worker's /metrics (on WORKER_METRICS_PORT, beside its health): a finished and a failed
 * generation are counted with their kind and outcome, the duration histogram's buckets are
 * cumulative and end at the count, and the queue depths carry bull_exporter's names too. The API's
 * /metrics: operation latency by name and type (odd names folded into `other`) and open streams.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHealthServer } from '../../src/health';
import { startStack, type Stack } from '../helpers/stack';
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
    stack = await startStack();
    server = await startHealthServer(stack.worker!.healthChecks, 2000, 0, '127.0.0.1', stack.worker!.prometheus);
  });
  afterAll(async () => {
    await server?.close();
    await stack?.close();
  });

  it('counts a finished and a failed generation with their labels, in cumulative histogram buckets', async () => {
    const { token } = await stack.createUser(5);
    const ok = await generate(stack, token, { steps: 3, width: 64, height: 64 });
    expect(events(await watch(stack.baseUrl, ok.id, token).done).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
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
    // Queue depths under our names and bull_exporter's, and the process's own figures.
    expect(sample(text, 'bull_queue_waiting', { queue: 'high_priority' })).toBe(0);
    expect(sample(text, 'sdjobs_queue_jobs', { queue: 'high_priority', state: 'delayed' })).toBe(0);
    expect(sample(text, 'sdjobs_jobs_active')).toBe(0);
    expect(text).toMatch(/^process_cpu_seconds_total /m);
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
