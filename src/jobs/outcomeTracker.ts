/**
 * Counts how jobs end, per queue, in Redis: the figures operators read (src/jobs/queueStats.ts:
 * succeeded and failed all time and in the last hour, `bull_queue_completed` / `bull_queue_failed`).
 * Off the jobs' critical path: `record()` only adds to counts in memory and returns; a flush writes
 * everything counted since the last one with one script call (count.lua: HINCRBY into each queue's
 * totals and this minute's hash). Flushes run at most one at a time, `flushIntervalMs` apart, so
 * under load the counts grow instead of the round trips multiplying: one call per interval, however
 * many jobs ended.
 *
 * Counting is best effort: a Redis error is logged (once per outage, with a count of what was lost)
 * and never reaches a job. `close()` flushes what is pending; call it after the queues have drained
 * and before the Redis connection closes.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import type { JobOutcome, JobSnapshot } from './jobState';
import { jobScript } from './luaScripts';
import { epochMinute, MINUTE_TTL_S, outcomeMinuteKey, outcomeTotalsKey } from './queueStats';
import { JOB_QUEUES } from './registry';

/** The count of keys comes first: two per queue in the batch. */
const COUNT_OUTCOMES = jobScript<number>('count');

/** Where the job wrapper reports state changes. Must not block and must not throw. */
export interface JobStateSink {
  record(snapshot: JobSnapshot): void;
}

export interface JobOutcomeTrackerOptions {
  /** A connection the caller owns (and closes after `close()`). */
  redis: Redis;
  prefix: string;
  log: Logger;
  /** Longest time an outcome waits before it is written (JOB_STATE_FLUSH_MS). Default 20 ms. */
  flushIntervalMs?: number;
}

export interface JobOutcomeTrackerStats {
  /** Ends recorded (starts are not counted: nothing reads them). */
  recorded: number;
  /** Script calls made. */
  flushes: number;
  /** Ends that could not be written. */
  lost: number;
}

type Counts = Record<JobOutcome, number>;
const OUTCOMES: readonly JobOutcome[] = ['succeeded', 'failed', 'retrying'];

export class JobOutcomeTracker implements JobStateSink {
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly log: Logger;
  private readonly intervalMs: number;
  /** Outcomes not yet written, by queue. */
  private pending = new Map<string, Counts>();
  private pendingCount = 0;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  /** Set during an outage, so it is logged once rather than at every flush. */
  private failing = false;
  private lostInOutage = 0;
  readonly stats: JobOutcomeTrackerStats = { recorded: 0, flushes: 0, lost: 0 };

  constructor(opts: JobOutcomeTrackerOptions) {
    this.redis = opts.redis;
    this.prefix = opts.prefix;
    this.log = opts.log;
    this.intervalMs = opts.flushIntervalMs ?? 20;
  }

  record(snapshot: JobSnapshot): void {
    if (snapshot.state === 'active') return;
    // A kind this process does not know has no queue to count in (its job is dropped, and logged).
    const queue: string | undefined = (JOB_QUEUES as Record<string, string>)[snapshot.kind];
    if (queue === undefined) return;
    this.stats.recorded++;
    let counts = this.pending.get(queue);
    if (!counts) {
      counts = { succeeded: 0, failed: 0, retrying: 0 };
      this.pending.set(queue, counts);
    }
    counts[snapshot.state]++;
    this.pendingCount++;
    if (this.inFlight) return; // the running flush schedules the next one when it ends
    this.timer ??= setTimeout(this.onTimer, this.intervalMs);
  }

  /** Writes everything recorded so far; resolves when it is in Redis (or has been given up, logged). */
  async flush(): Promise<void> {
    while (this.inFlight || this.pendingCount > 0) {
      if (!this.inFlight) this.startFlush();
      await this.inFlight;
    }
  }

  /** Flushes what is pending. The Redis connection stays open: it belongs to the caller. */
  close(): Promise<void> {
    return this.flush();
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    if (!this.inFlight && this.pendingCount > 0) this.startFlush();
  };

  private startFlush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const batch = this.pending;
    const n = this.pendingCount;
    this.pending = new Map();
    this.pendingCount = 0;
    this.inFlight = this.write(batch, n).finally(() => {
      this.inFlight = undefined;
      // What arrived meanwhile waits for the next interval.
      if (this.pendingCount > 0) this.timer ??= setTimeout(this.onTimer, this.intervalMs);
    });
  }

  private async write(batch: Map<string, Counts>, n: number): Promise<void> {
    try {
      const keys: string[] = [];
      const args: number[] = [MINUTE_TTL_S];
      const minute = epochMinute(Date.now());
      for (const [queue, counts] of batch) {
        keys.push(outcomeTotalsKey(this.prefix, queue), outcomeMinuteKey(this.prefix, queue, minute));
        for (const o of OUTCOMES) args.push(counts[o]);
      }
      this.stats.flushes++;
      await COUNT_OUTCOMES.run(this.redis, keys.length, ...keys, ...args);
      if (this.failing) {
        this.failing = false;
        this.log.info({ lost: this.lostInOutage }, 'job outcomes are counted in Redis again');
        this.lostInOutage = 0;
      }
    } catch (err) {
      this.stats.lost += n;
      this.lostInOutage += n;
      if (!this.failing) {
        this.failing = true;
        this.log.warn({ err, lost: n }, 'could not count job outcomes in Redis; jobs go on, the counts miss them');
      }
    }
  }
}
