/**
 * Job metrics kept in the worker process: how many jobs of each kind ended how, and how long they
 * ran (count, sum, min, max and a fixed-bucket histogram, so percentiles can be estimated and the
 * figures exported as they are to Prometheus later). Recording is a few additions: it is on every
 * job's path.
 */
import type { JobOutcome } from './jobState';

/** Upper bounds of the duration buckets, in milliseconds; the last bucket is everything above. */
export const DURATION_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000] as const;

export interface DurationSummary {
  count: number;
  sumMs: number;
  minMs: number;
  maxMs: number;
  /** Jobs per bucket: `buckets[i]` counts durations ≤ DURATION_BUCKETS_MS[i] (and above the previous bound); one extra bucket for the rest. */
  buckets: number[];
}

export interface KindMetrics {
  outcomes: Record<JobOutcome, number>;
  durations: DurationSummary;
}

export interface JobMetricsSnapshot {
  /** Jobs running now, all kinds together. */
  active: number;
  byKind: Record<string, KindMetrics>;
}

const emptyKind = (): KindMetrics => ({
  outcomes: { succeeded: 0, failed: 0, retrying: 0 },
  durations: { count: 0, sumMs: 0, minMs: Number.POSITIVE_INFINITY, maxMs: 0, buckets: new Array<number>(DURATION_BUCKETS_MS.length + 1).fill(0) },
});

function bucketOf(ms: number): number {
  let i = 0;
  while (i < DURATION_BUCKETS_MS.length && ms > DURATION_BUCKETS_MS[i]!) i++;
  return i;
}

export class JobMetrics {
  private readonly kinds = new Map<string, KindMetrics>();
  private running = 0;

  started(): void {
    this.running++;
  }

  /** A job (attempt) ended; `durationMs` is null when it never ran (no processor for its kind). */
  ended(kind: string, outcome: JobOutcome, durationMs: number | null, wasStarted = true): void {
    if (wasStarted) this.running--;
    let m = this.kinds.get(kind);
    if (!m) {
      m = emptyKind();
      this.kinds.set(kind, m);
    }
    m.outcomes[outcome]++;
    if (durationMs === null) return;
    const d = m.durations;
    d.count++;
    d.sumMs += durationMs;
    if (durationMs < d.minMs) d.minMs = durationMs;
    if (durationMs > d.maxMs) d.maxMs = durationMs;
    d.buckets[bucketOf(durationMs)]!++;
  }

  /** A copy, safe to hand out (e.g. to a metrics endpoint). */
  snapshot(): JobMetricsSnapshot {
    const byKind: Record<string, KindMetrics> = {};
    for (const [kind, m] of this.kinds) {
      byKind[kind] = {
        outcomes: { ...m.outcomes },
        durations: { ...m.durations, minMs: m.durations.count ? m.durations.minMs : 0, buckets: [...m.durations.buckets] },
      };
    }
    return { active: this.running, byKind };
  }
}

/**
 * Estimates the p-th percentile (0..100) from a histogram: the upper bound of the bucket that holds
 * it, capped by the largest duration seen. Good enough for a dashboard; not an exact figure.
 */
export function estimatePercentile(d: DurationSummary, p: number): number | null {
  if (d.count === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * d.count));
  let seen = 0;
  for (let i = 0; i < d.buckets.length; i++) {
    seen += d.buckets[i]!;
    if (seen >= rank) return Math.min(DURATION_BUCKETS_MS[i] ?? d.maxMs, d.maxMs);
  }
  return d.maxMs;
}
