/**
 * A worker's Prometheus metrics, served at /metrics beside its health on WORKER_METRICS_PORT:
 * - `sdjobs_jobs_total{kind,outcome}` and `sdjobs_job_duration_seconds{kind}` (a histogram), written
 *   at scrape time from the totals every job already updates (src/jobs/metrics.ts);
 * - `sdjobs_jobs_active`, the jobs this process runs now;
 * - `sdjobs_job_retries_total{queue}` (tries the consumer put back for a retry) and
 *   `sdjobs_jobs_stalled_total{queue}` (jobs of dead workers this worker's stall checks re-queued),
 *   read at scrape time from the consumers' own counts;
 * - `sdjobs_sd_request_duration_seconds{call,outcome}`, `sdjobs_sd_step_duration_seconds` (the
 *   sampling pace the progress polls see) and `sdjobs_postprocess_duration_seconds{task,outcome}`,
 *   histograms the SD client and the thread pool feed in memory as they work;
 * - `sdjobs_credits_refunded_total{reason}`: credits this worker gave back (src/credits/meter.ts);
 * - per queue it consumes, read from Redis at scrape time in one script call (./queueStats.ts):
 *   `sdjobs_queue_jobs{queue,state}`, `sdjobs_queue_oldest_waiting_seconds{queue}` and, for existing
 *   Grafana dashboards, bull_exporter's gauges `bull_queue_{waiting,active,delayed,failed,completed}`
 *   with a `queue` label (failed and completed: every worker's jobs, all time, as bull_exporter's
 *   are the queue's);
 * - the process's own (CPU, memory, event loop) from prom-client, started on the first scrape.
 * Nothing here adds a Redis call to a job's path: the scrape reads Redis, the jobs only add in memory.
 */
import type { Redis } from 'ioredis';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { creditMeter, type CreditMeter } from '../credits/meter';
import type { MetricsEndpoint } from '../health';
import type { SdClientObserver } from '../sd/client';
import type { JobConsumerStats } from './consumer';
import { DURATION_BUCKETS_MS, type JobMetrics, type JobMetricsSnapshot } from './metrics';
import { readQueueStats } from './queueStats';

export interface WorkerMetricsOptions {
  prefix: string;
  /** The queues the worker consumes. */
  queues: readonly string[];
}

/** What the scrape reads, known once the worker's parts are built. */
export interface WorkerMetricsSource {
  metrics: JobMetrics;
  redis: Redis;
  /** The consumers running now, read at each scrape. */
  consumers(): ReadonlyArray<{ readonly queue: string; readonly stats: JobConsumerStats }>;
}

/** Made before the worker's parts (which report into it); `endpoint()` serves it once they exist. */
export interface WorkerMetrics {
  /** Counts the credits this worker refunds. */
  readonly credits: CreditMeter;
  /** Handed to the SD client. */
  readonly sd: SdClientObserver;
  /** Handed to the post-processing pool (its onTaskDone). */
  postprocessDone(task: string, seconds: number, ok: boolean): void;
  /** What /metrics answers. */
  endpoint(source: WorkerMetricsSource): MetricsEndpoint;
}

const QUEUE_STATES = ['waiting', 'active', 'delayed'] as const;
/** How long a scrape waits for the queue figures. */
export const QUEUE_READ_TIMEOUT_MS = 1000;
/** Seconds: a progress poll takes milliseconds, txt2img up to the job's time limit. */
const SD_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
/** Seconds per sampling step: a fast GPU's few tens of ms to a CPU's several seconds. */
const STEP_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10];
/** Seconds: a preview takes milliseconds, a large image's WebP and blurhash a second or more. */
const POSTPROCESS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

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

/** The worker's metrics: built with the worker (no I/O, no timers), served by render(). */
export function workerMetrics(opts: WorkerMetricsOptions): WorkerMetrics {
  const registry = new Registry();
  let source: WorkerMetricsSource | undefined;
  const sdRequests = new Histogram({
    name: 'sdjobs_sd_request_duration_seconds',
    help: 'Requests to the SD server by call (txt2img, progress_poll, samplers, interrupt, …) and outcome (ok, error).',
    labelNames: ['call', 'outcome'],
    buckets: SD_BUCKETS,
    registers: [registry],
  });
  const steps = new Histogram({
    name: 'sdjobs_sd_step_duration_seconds',
    help: 'Time per sampling step, as the progress polls see the steps advance.',
    buckets: STEP_BUCKETS,
    registers: [registry],
  });
  const postprocess = new Histogram({
    name: 'sdjobs_postprocess_duration_seconds',
    help: 'Post-processing tasks in the thread pool by task (postprocess, preview) and outcome: time in a thread.',
    labelNames: ['task', 'outcome'],
    buckets: POSTPROCESS_BUCKETS,
    registers: [registry],
  });
  const fromConsumers = (name: string, help: string, pick: (s: JobConsumerStats) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['queue'],
      registers: [registry],
      collect() {
        this.reset();
        for (const queue of opts.queues) this.inc({ queue }, 0);
        for (const c of source?.consumers() ?? []) this.inc({ queue: c.queue }, pick(c.stats));
      },
    });
  fromConsumers('sdjobs_job_retries_total', 'Failed tries this worker put back in its queue for a retry.', (s) => s.retried);
  fromConsumers('sdjobs_jobs_stalled_total', "Jobs of dead workers (nobody vouched for them) this worker's stall checks put back in the queue.", (s) => s.requeued);
  const credits = creditMeter(registry);

  const queueJobs = new Gauge({ name: 'sdjobs_queue_jobs', help: 'Jobs in each queue this worker consumes, by state.', labelNames: ['queue', 'state'], registers: [registry] });
  const oldest = new Gauge({
    name: 'sdjobs_queue_oldest_waiting_seconds',
    help: 'Seconds since the job next in line was first enqueued; 0 with nothing waiting.',
    labelNames: ['queue'],
    registers: [registry],
  });
  const bullGauge = (state: string, help: string) => new Gauge({ name: `bull_queue_${state}`, help: `${help} (bull_exporter's name).`, labelNames: ['queue'], registers: [registry] });
  const bull = {
    waiting: bullGauge('waiting', 'Jobs waiting in the queue'),
    active: bullGauge('active', 'Jobs running'),
    delayed: bullGauge('delayed', 'Retries waiting for their time'),
    failed: bullGauge('failed', 'Jobs that failed for good, all workers, all time'),
    completed: bullGauge('completed', 'Jobs that succeeded, all workers, all time'),
  };

  /** Queue figures from Redis; a failed or slow read leaves the last figures (the scrape still answers). */
  const readQueues = async (redis: Redis) => {
    for (const q of await readQueueStats(redis, opts.prefix, opts.queues)) {
      for (const state of QUEUE_STATES) {
        queueJobs.set({ queue: q.name, state }, q[state]);
        bull[state].set({ queue: q.name }, q[state]);
      }
      bull.failed.set({ queue: q.name }, q.failed);
      bull.completed.set({ queue: q.name }, q.succeeded);
      oldest.set({ queue: q.name }, q.oldestWaitingSeconds);
    }
  };

  // The process collectors start with the first scrape: a worker nobody scrapes (tests, a worker
  // without WORKER_METRICS_PORT) starts none.
  let defaults = false;
  const render = async (s: WorkerMetricsSource) => {
    if (!defaults) {
      collectDefaultMetrics({ register: registry });
      defaults = true;
    }
    // Bounded: with Redis away the scrape answers with the last figures instead of hanging.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([readQueues(s.redis).catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, QUEUE_READ_TIMEOUT_MS)))]);
    clearTimeout(timer);
    return `${await registry.metrics()}\n${jobMetricsText(s.metrics.snapshot())}`;
  };
  return {
    credits,
    sd: {
      request: (call, seconds, ok) => sdRequests.observe({ call, outcome: ok ? 'ok' : 'error' }, seconds),
      steps: (n, seconds) => {
        const each = seconds / n;
        for (let i = 0; i < n; i++) steps.observe(each);
      },
    },
    postprocessDone: (task, seconds, ok) => postprocess.observe({ task, outcome: ok ? 'ok' : 'error' }, seconds),
    endpoint(s) {
      source = s;
      return { contentType: Registry.PROMETHEUS_CONTENT_TYPE, render: () => render(s) };
    },
  };
}
