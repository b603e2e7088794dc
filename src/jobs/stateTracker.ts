/**
 * Writes job snapshots (./jobState) to Redis off the jobs' critical path. `record()` only queues the
 * snapshot in memory and returns; a flush writes everything queued with one command, a Lua script
 * that runs `SET key json EX ttl` per job and then one PUBLISH listing the changes (atomic, like a
 * MULTI, and about half the client CPU of a pipeline of SETs, which builds a command and a promise
 * per job). Flushes run at most one at a time, `flushIntervalMs` apart, or at once when `maxBatch`
 * jobs are waiting; while one is in flight the next batch fills up, so under load the batches grow
 * instead of the round trips multiplying. A job whose start and end land in the same batch is
 * written once, with its last state.
 *
 * Tracking is best effort: a Redis error is logged (once per outage, with a count of what was lost)
 * and never reaches a job. `close()` flushes what is pending; call it after the queues have drained
 * and before the Redis connection closes.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import type { JobSnapshot } from './jobState';
import { jobEventsChannel, jobStateKey } from './jobState';

/** KEYS: the snapshot keys; ARGV: the snapshots in the same order, then the TTL, the channel and the message. */
const RECORD_LUA = `
local n = #KEYS
local ttl = ARGV[n + 1]
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[i], 'EX', ttl)
end
redis.call('PUBLISH', ARGV[n + 2], ARGV[n + 3])
return n
`;

interface RedisWithRecord extends Redis {
  sdjobsRecordJobStates(numKeys: number, ...keysThenArgs: string[]): Promise<number>;
}

/** Where the job wrapper reports state changes. Must not block and must not throw. */
export interface JobStateSink {
  record(snapshot: JobSnapshot): void;
}

export interface JobStateTrackerOptions {
  /** A connection the caller owns (and closes after `close()`). */
  redis: Redis;
  prefix: string;
  /** Snapshots expire after this long (RESULT_EXPIRES_S). */
  expiresS: number;
  log: Logger;
  /** Longest time a change waits before it is written (JOB_STATE_FLUSH_MS). Default 20 ms. */
  flushIntervalMs?: number;
  /** Write at once when this many jobs have changes waiting (the script runs them in one go). Default 256. */
  maxBatch?: number;
}

export interface JobStateTrackerStats {
  /** Calls to record(). */
  recorded: number;
  /** Snapshots sent to Redis (fewer than recorded when changes were coalesced). */
  written: number;
  /** Script calls made (one per flush, more when a flush holds more than `maxBatch` jobs). */
  flushes: number;
  /** Snapshots that could not be written. */
  lost: number;
}

export class JobStateTracker implements JobStateSink {
  private readonly redis: RedisWithRecord;
  private readonly prefix: string;
  private readonly expiresS: number;
  private readonly log: Logger;
  private readonly intervalMs: number;
  private readonly maxBatch: number;
  private readonly channel: string;
  private pending = new Map<string, JobSnapshot>();
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  /** Set during an outage, so it is logged once rather than at every flush. */
  private failing = false;
  private lostInOutage = 0;
  readonly stats: JobStateTrackerStats = { recorded: 0, written: 0, flushes: 0, lost: 0 };

  constructor(opts: JobStateTrackerOptions) {
    if (!('sdjobsRecordJobStates' in opts.redis)) {
      opts.redis.defineCommand('sdjobsRecordJobStates', { lua: RECORD_LUA });
    }
    this.redis = opts.redis as RedisWithRecord;
    this.prefix = opts.prefix;
    this.expiresS = opts.expiresS;
    this.log = opts.log;
    this.intervalMs = opts.flushIntervalMs ?? 20;
    this.maxBatch = opts.maxBatch ?? 256;
    this.channel = jobEventsChannel(opts.prefix);
  }

  record(snapshot: JobSnapshot): void {
    this.stats.recorded++;
    // A later state of the same job replaces the one still waiting: one write per job per batch.
    this.pending.set(snapshot.jobId, snapshot);
    if (this.inFlight) return; // the running flush schedules the next one when it ends
    if (this.pending.size >= this.maxBatch) {
      this.startFlush();
    } else {
      this.timer ??= setTimeout(this.onTimer, this.intervalMs);
    }
  }

  /** Writes everything recorded so far; resolves when it is in Redis (or has been given up, logged). */
  async flush(): Promise<void> {
    while (this.inFlight || this.pending.size > 0) {
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
    if (!this.inFlight && this.pending.size > 0) this.startFlush();
  };

  private startFlush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const batch = this.pending;
    this.pending = new Map();
    this.inFlight = this.write(batch).finally(() => {
      this.inFlight = undefined;
      // What arrived meanwhile waits for the next interval, so it can coalesce, unless there is a lot.
      if (this.pending.size >= this.maxBatch) this.startFlush();
      else if (this.pending.size > 0) this.timer ??= setTimeout(this.onTimer, this.intervalMs);
    });
  }

  /** Writes a batch, `maxBatch` snapshots per script call so that no call holds Redis up for long. */
  private async write(batch: Map<string, JobSnapshot>): Promise<void> {
    const all = [...batch.values()];
    const calls: Array<Promise<number>> = [];
    for (let from = 0; from < all.length; from += this.maxBatch) calls.push(this.writeChunk(all.slice(from, from + this.maxBatch)));
    this.stats.written += all.length;
    let failed = 0;
    let error: unknown;
    const results = await Promise.allSettled(calls);
    results.forEach((r, k) => {
      if (r.status === 'rejected') {
        failed += Math.min(this.maxBatch, all.length - k * this.maxBatch);
        error ??= r.reason;
      }
    });
    if (failed > 0) {
      this.stats.lost += failed;
      this.lostInOutage += failed;
      if (!this.failing) {
        this.failing = true;
        this.log.warn({ err: error, lost: failed }, 'could not record job states in Redis; jobs go on, their snapshots are missing');
      }
    } else if (this.failing) {
      this.failing = false;
      this.log.info({ lost: this.lostInOutage }, 'job states are recorded in Redis again');
      this.lostInOutage = 0;
    }
  }

  /** Async, so that anything thrown while building the call becomes a rejection counted above. */
  private async writeChunk(chunk: JobSnapshot[]): Promise<number> {
    this.stats.flushes++;
    const n = chunk.length;
    // Keys first, then the values; each snapshot is serialised once, for its key and the message.
    const args = new Array<string>(2 * n + 3);
    for (let i = 0; i < n; i++) {
      const s = chunk[i]!;
      args[i] = jobStateKey(this.prefix, s.jobId);
      args[n + i] = JSON.stringify(s);
    }
    args[2 * n] = String(this.expiresS);
    args[2 * n + 1] = this.channel;
    // A JobEventBatch, assembled from the strings already made.
    args[2 * n + 2] = `{"changes":[${args.slice(n, 2 * n).join(',')}]}`;
    return this.redis.sdjobsRecordJobStates(n, ...args);
  }
}
