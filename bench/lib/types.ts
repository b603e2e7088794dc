/**
 * The benchmark harness's contract. Each scenario is a module in bench/scenarios/ exporting
 * `scenario: Scenario`. A scenario measures the project and its comparison side by side in the same
 * run (alternating rounds where that is fairer) and reports ratios, because this machine is shared
 * and noisy: an absolute figure is only context.
 */
export interface BenchContext {
  /** `npm run bench -- --quick`: small sizes, the whole run under a minute. */
  quick: boolean;
  redisUrl: string;
  /** A Postgres server URL whose user may CREATE DATABASE (scenarios make their own databases). */
  adminDatabaseUrl: string;
  log(message: string): void;
}

export interface Row {
  /** What was measured, e.g. "own job layer, concurrency 2". */
  label: string;
  /** Figures by name, e.g. { 'jobs/s': 9120, 'p99 ms': 3.1 }. */
  figures: Record<string, number>;
}

export interface Target {
  /** e.g. "own job layer ≥ 0.8× raw Bee-Queue (concurrency 2)". */
  description: string;
  /** The measured ratio or value. */
  value: number;
  /** The bound, and which side of it passes. */
  bound: number;
  better: 'higher' | 'lower';
}

export interface ScenarioResult {
  rows: Row[];
  targets: Target[];
  /** Anything a reader needs to read the figures right (sizes, rounds, what was compared). */
  notes: string[];
}

export interface Scenario {
  /** Short id used by --only, e.g. "jobs". */
  id: string;
  title: string;
  run(ctx: BenchContext): Promise<ScenarioResult>;
}

export const met = (t: Target): boolean => (t.better === 'higher' ? t.value >= t.bound : t.value <= t.bound);
