/**
 * A worker's Prometheus metrics, served at /metrics beside its health on WORKER_METRICS_PORT:
 * - `sdjobs_jobs_total{kind,outcome}` and `sdjobs_job_duration_seconds{kind}` (a histogram), written
 *   at scrape time from the totals every job already updates (src/jobs/metrics.ts), so nothing is
 *   added to a job's path;
 * - `sdjobs_jobs_active`, the jobs this process runs now;
 * - the depth of each queue it consumes, read from Redis at scrape time: `sdjobs_queue_jobs{queue,state}`
 *   and, for existing Grafana dashboards, the gauges `bull_exporter` exports (`bull_queue_waiting`,
 *   `bull_queue_active`, `bull_queue_delayed` with a `queue` label);
 * - the process's own (CPU, memory, event loop) from prom-client.
 */
import type { Redis } from 'ioredis';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { DURATION_BUCKETS_MS, type JobMetrics, type JobMetricsSnapshot } from './metrics';

export interface WorkerMetricsDeps {
  metrics: JobMetrics;
  redis: Redis;
  prefix: string;
  queues: readonly string[];
}

const QUEUE_STATES = ['waiting', 'active', 'delayed'] as const;
/** How long a scrape waits for the queue depths. */
const QUEUE_READ_TIMEOUT_MS = 1000;

const label = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/** The job counters and duration histogram in Prometheus's text format, from a snapshot. */
export function jobMetricsText(snapshot: JobMetricsSnapshot): string {
  const lines = [
    '# HELP sdjobs_jobs_active Jobs this worker process runs now.',
    '# TYPE sdjobs_jobs_active gauge',
    `sdjobs_jobs_active ${snapshot.active}`,
    '# HELP sdjobs_jobs_total Job attempts that ended, by kind and outcome (succeeded, retrying, failed).',
    '# TYPE sdjobs_jobs_total counter',
  ];
  const kinds = Object.entries(snapshot.byKind);
  for (const [kind, m] of kinds) {
    for (const [outcome, n] of Object.entries(m.outcomes)) lines.push(`sdjobs_jobs_total{kind="${label(kind)}",outcome="${outcome}"} ${n}`);
  }
  lines.push('# HELP sdjobs_job_duration_seconds How long job attempts ran, by kind.', '# TYPE sdjobs_job_duration_seconds histogram');
  for (const [kind, m] of kinds) {
    const d = m.durations;
    let cumulative = 0;
    DURATION_BUCKETS_MS.forEach((ms, i) => {
      cumulative += d.buckets[i]!;
      lines.push(`sdjobs_job_duration_seconds_bucket{kind="${label(kind)}",le="${ms / 1000}"} ${cumulative}`);
    });
    lines.push(
      `sdjobs_job_duration_seconds_bucket{kind="${label(kind)}",le="+Inf"} ${d.count}`,
      `sdjobs_job_duration_seconds_sum{kind="${label(kind)}"} ${d.sumMs / 1000}`,
      `sdjobs_job_duration_seconds_count{kind="${label(kind)}"} ${d.count}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** What /metrics answers: the content type and a function that renders the text. */
export function workerMetrics(deps: WorkerMetricsDeps): { contentType: string; render(): Promise<string> } {
  // Built on the first scrape: a worker nobody scrapes (tests, a worker without WORKER_METRICS_PORT)
  // starts no default-metric collectors.
  let built: ReturnType<typeof buildRegistry> | undefined;
  return {
    contentType: Registry.PROMETHEUS_CONTENT_TYPE,
    async render() {
      built ??= buildRegistry(deps);
      // Bounded: with Redis away the scrape answers with the last depths instead of hanging.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([built.readQueues().catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, QUEUE_READ_TIMEOUT_MS)))]);
      clearTimeout(timer);
      return `${await built.registry.metrics()}\n${jobMetricsText(deps.metrics.snapshot())}`;
    },
  };
}

function buildRegistry(deps: WorkerMetricsDeps) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const queueJobs = new Gauge({ name: 'sdjobs_queue_jobs', help: 'Jobs in each queue this worker consumes, by state.', labelNames: ['queue', 'state'], registers: [registry] });
  const bull = Object.fromEntries(
    QUEUE_STATES.map((state) => [state, new Gauge({ name: `bull_queue_${state}`, help: `Jobs ${state} in the queue (bull_exporter's name).`, labelNames: ['queue'], registers: [registry] })]),
  ) as Record<(typeof QUEUE_STATES)[number], Gauge>;

  /** Queue depths from Redis; a failed read leaves the last figures (the scrape still answers). */
  const readQueues = async () => {
    const read = deps.redis.pipeline();
    for (const queue of deps.queues) {
      const base = `${deps.prefix}:${queue}:`;
      read.llen(`${base}waiting`).llen(`${base}active`).zcard(`${base}delayed`);
    }
    const results = (await read.exec()) ?? [];
    deps.queues.forEach((queue, q) => {
      QUEUE_STATES.forEach((state, s) => {
        const [err, n] = results[q * QUEUE_STATES.length + s] ?? [null, 0];
        if (err) return;
        queueJobs.set({ queue, state }, Number(n));
        bull[state].set({ queue }, Number(n));
      });
    });
  };
  return { registry, readQueues };
}
