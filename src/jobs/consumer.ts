/**
 * The worker's job loop, on Bee-Queue's keys and record format. Producers (the API, a worker
 * enqueuing a follow-up job) add jobs in the same format with Bee-Queue's addJob script
 * (`JobProducer`, ./queues.ts); this replaces `queue.process()`, which costs three round trips per job (BRPOPLPUSH, HGET, then a MULTI to finish)
 * plus a stall-guard SREM and a timer per job. Here one Lua call finishes every job that ended since
 * the last call and takes as many waiting jobs as there are free slots, with their records: with
 * jobs waiting, a worker makes one round trip per batch of jobs (bench/scenarios/jobs.ts).
 *
 * What stays Bee-Queue's, so queues written by either side remain readable by the other:
 * - keys `<prefix>:<queue>:waiting` (LPUSH by producers, taken from the right), `active`, `jobs`
 *   (the records, JSON `{data, options, status, progress}`), `delayed` (a zset of retry times),
 *   `succeeded` and `failed` (sets of the ended jobs that are kept, their records in `jobs` with
 *   that status), `stalling` and `stallBlock`; so a dashboard reading Bee-Queue's keys (bull-arena)
 *   lists our jobs in every state. Ours besides: `succeededAt` and `failedAt`, when each kept job
 *   ended, so that only the newest `keep` of each are kept; and `stalls`, how often a stall check put
 *   each job back, so that the end of a run re-queued while it still ran (its vouching stopped, its
 *   worker did not die) never clears or rewrites the copy another worker took since;
 * - retries and backoff as Bee-Queue's `Job#computeDelay` reads them from the record's options;
 * - stall detection: every STALL_INTERVAL_MS some worker moves the jobs that no worker vouched for
 *   since the last check from `active` back to `waiting` (task_acks_late: a job whose worker died
 *   runs again), the same rules as Bee-Queue's checkStalledJobs.lua. A consumer vouches for all of
 *   its running jobs in one call every half interval, instead of one timer and SREM per job.
 *
 * When nothing is waiting, one blocking BRPOPLPUSH (on a connection of its own) waits for the next
 * job; the rest of the consumer's calls are plain commands that never block.
 *
 * Because all of that mirrors Bee-Queue's internals, package.json pins bee-queue to exactly 2.0.0:
 * a new release must be read against this file before it is let in.
 */
import type { Redis } from 'ioredis';
import { atEndOfTurn } from '../endOfTurn';
import type { Logger } from '../logger';
import { jobScript } from './luaScripts';
import type { JobEnvelope } from './registry';

/** A job's options as Bee-Queue stores them in its record. */
export interface QueuedJobOptions {
  /** Retries left (Bee-Queue counts them down). */
  retries?: number;
  backoff?: { strategy: string; delay: number };
  /** A safety net: the job counts as failed this many ms after it started, whatever it is doing. */
  timeout?: number;
  /** One entry per failed try, newest first. */
  stacktraces?: string[];
  timestamp?: number;
  /**
   * Ours, not Bee-Queue's: the job was judged failed for good, but recording that (a refund, a
   * final state) has not landed yet. A copy re-delivered after its worker died only finishes that.
   */
  finalFailure?: { code: string; message: string; retryable: boolean };
}

/** What a handler sees of a job (a Bee-Queue `Job` has the same shape, without `saveOptions`). */
export interface QueuedJob {
  id: string;
  data: JobEnvelope;
  options: QueuedJobOptions;
  /** Writes `options` back to the job's record while the job is still this consumer's; false if not. */
  saveOptions?: () => Promise<boolean>;
  /** Aborted when the consumer stops waiting for its jobs (close() timed out): work still going on is cut short. */
  stopping?: AbortSignal;
  /**
   * How often a stall check put this job back in the queue before this delivery took it (ours, kept
   * beside Bee-Queue's record): with the stack traces of its failed tries, the tries before this one.
   */
  stalls?: number;
}

export type JobEnd = 'succeeded' | 'retrying' | 'failed';

/**
 * How a handler says its job ended, when it decides (the runner does, from the one error table):
 * `retry` (after the record's backoff, while retries last), `failed` (for good, no retry), or
 * `abandon` (nothing is written: the job stays in `active` and is no longer vouched for, so a stall
 * check re-delivers it as it is stored, e.g. with a saved `finalFailure` still to record). A handler
 * that resolves with anything else succeeded; one that rejects is retried while retries last, as
 * with Bee-Queue's own `process()`.
 */
export type JobVerdict =
  | { end: 'retry'; error: unknown }
  | {
      end: 'failed';
      error: unknown;
      /**
       * Work of the job that was given up on but has not stopped (it ignored its abort): the end is
       * written now, and the job's slot stays taken until this settles, so it never runs beside a
       * copy of itself and never holds more than its share of the worker.
       */
      stillRunning?: Promise<unknown>;
    }
  | { end: 'abandon'; error: unknown };

const VERDICT_ENDS: ReadonlySet<unknown> = new Set(['retry', 'failed', 'abandon']);
const isVerdict = (v: unknown): v is JobVerdict => typeof v === 'object' && v !== null && VERDICT_ENDS.has((v as JobVerdict).end);

export interface JobConsumerOptions {
  /**
   * A connection to the queue's Redis. The consumer opens two of its own like it (same server and
   * options), one for its calls and one for the blocking wait, and closes them in close().
   */
  redis: Redis;
  /** REDIS_PREFIX: the queue's keys are `<prefix>:<queue>:*`, as Bee-Queue names them. */
  prefix: string;
  queue: string;
  /** Jobs run at once by this consumer. */
  concurrency: number;
  /** Resolves: the job succeeded, unless with a JobVerdict. Rejects: retried while retries last, then failed. */
  handler: (job: QueuedJob) => Promise<unknown>;
  /** STALL_INTERVAL_MS. */
  stallIntervalMs: number;
  log: Logger;
  /** Called once a job's end has been written to Redis. */
  onEnd?: (job: QueuedJob, end: JobEnd) => void;
  /** How often delayed retries are looked for besides those this consumer scheduled itself. Default 1000 ms. */
  delayedPollMs?: number;
  /** Seconds one blocking wait lasts before it is simply sent again. Default 5. */
  blockTimeoutS?: number;
  /**
   * How many of the jobs that ended for good are kept in Redis, per state, for dashboards
   * (QUEUE_KEEP_SUCCEEDED, QUEUE_KEEP_FAILED); the oldest go first. Default 0: removed at once.
   */
  keep?: { succeeded: number; failed: number };
}

export interface JobConsumerStats {
  /** Jobs taken from the queue. */
  taken: number;
  succeeded: number;
  retried: number;
  failed: number;
  /** Calls of the finish-and-take script. */
  calls: number;
  /** Jobs of dead workers this consumer's stall checks put back in the queue. */
  requeued: number;
  /**
   * Ends not written because a stall check had put the job back and another delivery had taken it
   * while this one still ran (its vouching had stopped): that copy owns the job.
   */
  superseded: number;
}


const RAISE_BATCH = 1000;
/**
 * A call without a reply for this long (or half the stall interval, if that is shorter) means a
 * half-open connection: it is replaced and the calls are sent again. It must be noticed well within
 * a stall interval, or the vouching stops and other workers re-queue this worker's live jobs.
 */
const COMMAND_TIMEOUT_MS = 10_000;

type ScriptArg = string | number;
const TAKE_JOBS = jobScript<Array<string | number>>('take', 11);
const GUARD_JOBS = jobScript<string[]>('guard', 5);
const RAISE_DELAYED = jobScript<[number, string]>('raise', 2);
const SAVE_RECORD = jobScript<number>('save', 3);

type JobRecord = { data?: unknown; status?: string; options: QueuedJobOptions };

interface Running {
  job: QueuedJob;
  /** The parsed record, written back (with one retry less) when the job is retried. */
  record: JobRecord;
  /** When the safety-net timeout fails the job (ms since the epoch), or Infinity. */
  deadline: number;
  ended: boolean;
  /** Ended by the safety net while its handler still runs: it keeps its slot until the handler returns. */
  timedOut: boolean;
  /** The job's stall count when it was taken: its end is written only if no stall check re-queued it since. */
  stalls: number;
}

/**
 * The consumer's state is four named modes; each line of the loop reads as "in this mode, do that".
 * - Phase, its life: `new` → `running` (start) → `draining` (close: nothing more is taken, running
 *   jobs finish and their ends are written) → `closed` (drained, or the drain timed out: whatever
 *   ends now is left in `active` for a stall check to re-deliver).
 * - Intake, how free slots are filled: `take` (the finish-and-take script takes waiting jobs) or
 *   `wait` (the last take found fewer than it wanted: a blocking wait for the next job instead of
 *   polling).
 * - Waiter, the blocking connection: `idle`, `blocked` (a wait is under way and counts as one slot
 *   spoken for) or `pausing` (a wait failed; another starts in a second, the slot still spoken for).
 * - Link, the calls connection: `free`, `sending` (one finish-and-take call is under way, carrying
 *   its batch, whose jobs are vouched for until it is written) or `backoff` (a call failed; the
 *   next one goes after a delay that grows with each failure in a row).
 */
type Phase = 'new' | 'running' | 'draining' | 'closed';
type Intake = 'take' | 'wait';
type Waiter = 'idle' | 'blocked' | 'pausing';
interface Batch {
  ended: Ended[];
  claimed: string[];
  released: string[];
  since: number;
}
type Link = { mode: 'free' } | { mode: 'sending'; batch: Batch } | { mode: 'backoff'; timer: NodeJS.Timeout };

interface Ended {
  run: Running;
  end: JobEnd;
  /** The record to store for a retry. */
  record: string;
  delayMs: number;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Bee-Queue's backoff strategies (lib/backoff.js); a record naming another cannot be retried as it asks. */
const BACKOFF_STRATEGIES: ReadonlySet<unknown> = new Set(['immediate', 'fixed', 'exponential']);

/** Parses a job record, or says what is wrong with it. */
function parseRecord(raw: string): JobRecord | string {
  let record: unknown;
  try {
    record = JSON.parse(raw);
  } catch {
    return 'not valid JSON';
  }
  if (!isPlainObject(record)) return 'not a JSON object';
  if (!isPlainObject(record.data) || typeof record.data.kind !== 'string') return 'its data has no job kind';
  const options = record.options ?? {};
  if (!isPlainObject(options)) return 'its options are not an object';
  if (options.stacktraces !== undefined && !Array.isArray(options.stacktraces)) return 'its stacktraces are not a list';
  // Checked before the job runs: found only at its first failure, the job would be told "retry"
  // (its watchers too) and then be failed for good, with nothing recording that end.
  if (options.backoff !== undefined) {
    if (!isPlainObject(options.backoff)) return 'its backoff is not an object';
    if (!BACKOFF_STRATEGIES.has(options.backoff.strategy)) return `its backoff strategy ${JSON.stringify(options.backoff.strategy)} is unknown`;
  }
  return { ...record, options: options as QueuedJobOptions };
}

/**
 * Bee-Queue's Job#computeDelay and backoff strategies (lib/backoff.js): -1 when no retry is left
 * (or the strategy is unknown, as there), else the wait in ms. Mutates `options` as they do (the
 * exponential delay doubles). A delay that is not a number counts as 0.
 */
function retryDelay(options: QueuedJobOptions): number {
  if (!((options.retries ?? 0) > 0)) return -1;
  const backoff = options.backoff;
  const delay = Number.isFinite(backoff?.delay) && backoff!.delay > 0 ? backoff!.delay : 0;
  switch (backoff?.strategy ?? 'immediate') {
    case 'immediate':
      return 0;
    case 'fixed':
      return delay;
    case 'exponential':
      backoff!.delay = delay * 2;
      return delay;
    default:
      return -1;
  }
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** A queue's Redis keys, as Bee-Queue names them (`succeededAt`, `failedAt` and `stalls` are ours). */
export function queueKeys(prefix: string, queue: string) {
  const base = `${prefix}:${queue}:`;
  return {
    waiting: `${base}waiting`,
    active: `${base}active`,
    stalling: `${base}stalling`,
    stalls: `${base}stalls`,
    jobs: `${base}jobs`,
    delayed: `${base}delayed`,
    earlierDelayed: `${base}earlierDelayed`,
    stallBlock: `${base}stallBlock`,
    succeeded: `${base}succeeded`,
    failed: `${base}failed`,
    succeededAt: `${base}succeededAt`,
    failedAt: `${base}failedAt`,
  } as const;
}

export class JobConsumer {
  readonly stats: JobConsumerStats = { taken: 0, succeeded: 0, retried: 0, failed: 0, calls: 0, requeued: 0, superseded: 0 };
  private readonly commands: Redis;
  private readonly blocking: Redis;
  private readonly keys: ReturnType<typeof queueKeys>;
  private readonly running = new Set<Running>();
  /** Jobs the safety net ended whose handlers still run. */
  private zombies = 0;
  private ended: Ended[] = [];
  /** Ids a blocking wait moved to `active`; their records are read by the next call. */
  private claimed: string[] = [];
  /** Ids taken while closing, handed back to the queue by the next call. */
  private released: string[] = [];
  /** Calls on `commands` without a reply yet, and when the oldest of them (or the last reply) was. */
  private unanswered = 0;
  private unansweredSince = 0;
  private phase: Phase = 'new';
  private intake: Intake = 'take';
  private waiter: Waiter = 'idle';
  private link: Link = { mode: 'free' };
  /** Failed calls in a row: the backoff grows with them. */
  private failures = 0;
  private guardTimer: NodeJS.Timeout | undefined;
  private raiseTimer: NodeJS.Timeout | undefined;
  private raiseAt = Infinity;
  private closePromise: Promise<void> | undefined;
  private idleWaiters: Array<() => void> = [];
  /** Handed to every job; aborted when close() stops waiting for them. */
  private readonly stopping = new AbortController();

  constructor(private readonly opts: JobConsumerOptions) {
    if (!Number.isInteger(opts.concurrency) || opts.concurrency < 1) throw new Error(`concurrency must be a positive integer, got ${opts.concurrency}`);
    const name = `${opts.redis.options.connectionName ?? 'worker'}:${opts.queue}`;
    // Its own connection without auto-pipelining: the loop sends one call at a time, and batching
    // with other commands would only add an event-loop turn to every round trip.
    // (No commandTimeout: it costs a timer per call. The guard replaces a connection whose call hangs.)
    this.commands = opts.redis.duplicate({ connectionName: `${name}:jobs`, enableAutoPipelining: false, lazyConnect: true });
    // A blocked connection can do nothing else, so the wait gets one of its own. It holds a wait
    // across an outage (no retry limit); a socket silent for longer than a wait is dead and replaced.
    const blockTimeoutS = opts.blockTimeoutS ?? 5;
    this.blocking = opts.redis.duplicate({
      connectionName: `${name}:wait`,
      enableAutoPipelining: false,
      maxRetriesPerRequest: null,
      socketTimeout: blockTimeoutS * 1000 + COMMAND_TIMEOUT_MS,
      lazyConnect: true,
    });
    // Their errors are the owner's connection's errors too, which the owner already logs.
    this.commands.on('error', () => {});
    this.blocking.on('error', () => {});
    this.keys = queueKeys(opts.prefix, opts.queue);
  }

  /** The queue it consumes. */
  get queue(): string {
    return this.opts.queue;
  }

  /** Jobs running now. */
  get active(): number {
    return this.running.size;
  }

  /** Starts taking jobs: the first stall check (jobs of workers that died while none ran), due retries, then the queue. */
  start(): void {
    if (this.phase !== 'new') return;
    this.phase = 'running';
    this.guard();
    this.guardTimer = setInterval(this.guard, Math.max(1, Math.floor(this.opts.stallIntervalMs / 2)));
    this.raiseDelayed();
    this.pump();
  }

  /**
   * Stops taking jobs, lets the running ones finish for up to `timeoutMs` and writes their ends.
   * Jobs still running after that stay in `active`; a stall check re-queues them. Safe to call twice.
   */
  close(timeoutMs: number): Promise<void> {
    this.closePromise ??= (async () => {
      this.phase = 'draining';
      clearTimeout(this.raiseTimer);
      this.raiseTimer = undefined;
      // Ends the blocking wait. An id it took at that instant stays in `active` for a stall check.
      this.blocking.disconnect();
      this.pump();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(resolve, timeoutMs, true);
      });
      // The guard keeps vouching for the jobs that are draining, or another worker would re-queue them.
      const gaveUp = await Promise.race([this.idle().then(() => false), timedOut]);
      clearTimeout(timer);
      clearInterval(this.guardTimer);
      if (this.link.mode === 'backoff') clearTimeout(this.link.timer);
      this.phase = 'closed';
      if (gaveUp) {
        this.stopping.abort(new Error('the worker is shutting down'));
        this.opts.log.warn(
          { queue: this.opts.queue, running: this.running.size, unwritten: this.ended.length },
          'jobs still running at shutdown are left to be re-delivered by a stall check',
        );
        this.commands.disconnect();
      } else {
        // QUIT waits for a reply; a connection that went half-open right now must not hold shutdown up.
        let quitTimer: NodeJS.Timeout | undefined;
        await Promise.race([
          this.commands.quit().catch(() => undefined),
          new Promise((resolve) => (quitTimer = setTimeout(resolve, 2000))),
        ]);
        clearTimeout(quitTimer);
        this.commands.disconnect();
      }
    })();
    return this.closePromise;
  }

  private isIdle(): boolean {
    return this.running.size === 0 && this.ended.length === 0 && this.claimed.length === 0 && this.released.length === 0 && this.link.mode !== 'sending';
  }

  private idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Coalesces everything that happens in one turn of the event loop into one call. */
  private readonly schedulePump = atEndOfTurn(() => this.pump());

  /** Sends one finish-and-take call for whatever is pending, unless one is under way. */
  private pump(): void {
    if (this.link.mode !== 'free' || this.phase === 'closed') return;
    if (this.phase === 'draining' && this.isIdle()) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
      return;
    }
    const want =
      this.phase === 'running' ? this.opts.concurrency - this.running.size - this.zombies - this.claimed.length - (this.waiter === 'idle' ? 0 : 1) : 0;
    if (this.ended.length === 0 && this.claimed.length === 0 && this.released.length === 0) {
      if (want <= 0) return;
      if (this.intake === 'wait') {
        if (this.waiter === 'idle') this.waitForJob();
        return;
      }
    }
    const sending: Batch = { ended: this.ended, claimed: this.claimed, released: this.released, since: Date.now() };
    this.ended = [];
    this.claimed = [];
    this.released = [];
    const k = this.keys;
    const keep = this.opts.keep;
    const args: ScriptArg[] = [
      k.waiting, k.active, k.stalling, k.jobs, k.delayed, k.earlierDelayed, k.succeeded, k.failed, k.succeededAt, k.failedAt, k.stalls,
      sending.since, Math.max(0, want), sending.ended.length, sending.released.length, keep?.succeeded ?? 0, keep?.failed ?? 0,
    ];
    for (const e of sending.ended) args.push(e.run.job.id, e.end === 'retrying' ? 'r' : e.end === 'failed' ? 'f' : 's', e.record, e.delayMs, e.run.stalls);
    for (const id of sending.released) args.push(id);
    for (const id of sending.claimed) args.push(id);
    this.link = { mode: 'sending', batch: sending };
    this.stats.calls++;
    this.call(TAKE_JOBS.run(this.commands, ...args)).then(
      (out) => {
        this.failures = 0;
        const stale = new Set(out.slice(2, 2 + Number(out[1])).map(String));
        for (const e of sending.ended) {
          if (!stale.has(e.run.job.id)) this.reportEnd(e);
          else {
            this.stats.superseded++;
            this.opts.log.warn(
              { job: e.run.job.id, queue: this.opts.queue, end: e.end },
              'a stall check put this job back while it ran, and another delivery took it: that copy owns the job, this end was not written',
            );
          }
        }
        // A take that wanted nothing learns nothing about the queue.
        if (want > 0) this.intake = Number(out[0]) < want ? 'wait' : 'take';
        for (let i = 2 + stale.size; i + 2 < out.length; i += 3) {
          if (this.phase === 'closed') break; // the ids stay in `active`: a stall check re-queues them
          if (this.phase === 'draining') this.released.push(String(out[i]));
          else this.run(String(out[i]), String(out[i + 1]), Number(out[i + 2]));
        }
        // Only now: a job that ends while the batch is being started (an unusable record) must
        // not start another take that counts slots without the rest of the batch.
        this.link = { mode: 'free' };
        this.pump();
      },
      (err: unknown) => {
        this.link = { mode: 'free' };
        if (err instanceof Error && err.name === 'ReplyError' && /user_script|Error running script/.test(err.message)) {
          // The script itself failed: sending the same batch again would fail the same way. Its
          // jobs are no longer vouched for, so a stall check puts them back in the queue. (Other
          // error replies, such as OOM or READONLY during a failover, pass: they are retried below.)
          this.opts.log.error({ err, queue: this.opts.queue, ended: sending.ended.length }, 'the finish-and-take script failed; its jobs are left to the stall check');
          this.retryLater(err, 'retrying the job loop after a script error');
          return;
        }
        // Sending the batch again is safe: a retry is re-added only if the job is still active.
        // (A reply lost after the script ran is the exception: a retry with no delay may have been
        // taken by another worker meanwhile, and is then queued once more.)
        this.ended = sending.ended.concat(this.ended);
        this.claimed = sending.claimed.concat(this.claimed);
        this.released = sending.released.concat(this.released);
        this.retryLater(err, 'could not finish or take jobs');
      },
    );
  }

  /** Counts a call on `commands` until it is answered, for the half-open watchdog in guard(). */
  private call<T>(promise: Promise<T>): Promise<T> {
    if (this.unanswered++ === 0) this.unansweredSince = Date.now();
    const answered = () => {
      this.unanswered--;
      this.unansweredSince = Date.now();
    };
    promise.then(answered, answered);
    return promise;
  }

  private retryLater(err: unknown, what: string): void {
    if (this.phase === 'closed' || this.link.mode !== 'free') return;
    this.failures++;
    const delay = Math.min(5000, 50 * 2 ** Math.min(this.failures, 7));
    this.opts.log.warn({ err: message(err), queue: this.opts.queue, retryInMs: delay }, what);
    const timer = setTimeout(() => {
      this.link = { mode: 'free' };
      this.pump();
    }, delay);
    this.link = { mode: 'backoff', timer };
  }

  private waitForJob(): void {
    this.waiter = 'blocked';
    const k = this.keys;
    this.blocking.brpoplpush(k.waiting, k.active, this.opts.blockTimeoutS ?? 5).then(
      (id) => {
        this.waiter = 'idle';
        if (id) {
          this.claimed.push(id);
          this.intake = 'take';
        }
        this.pump();
      },
      (err: unknown) => {
        if (this.phase !== 'running') {
          this.waiter = 'idle';
          this.pump();
          return;
        }
        // The slot stays spoken for during the pause, so pump() does not start another wait at once.
        this.waiter = 'pausing';
        this.opts.log.warn({ err: message(err), queue: this.opts.queue }, 'waiting for a job failed; waiting again in a second');
        setTimeout(() => {
          this.waiter = 'idle';
          this.pump();
        }, 1000).unref();
      },
    );
  }

  private run(id: string, raw: string, stalls: number): void {
    this.stats.taken++;
    const parsed = parseRecord(raw);
    const record: JobRecord = typeof parsed === 'string' ? { options: {} } : parsed;
    const options = record.options;
    options.stacktraces ??= [];
    const timeout = options.timeout;
    const run: Running = {
      job: { id, data: record.data as JobEnvelope, options, saveOptions: () => this.save(run), stopping: this.stopping.signal, stalls },
      record,
      deadline: typeof timeout === 'number' && timeout > 0 ? Date.now() + timeout : Infinity,
      ended: false,
      timedOut: false,
      stalls,
    };
    this.running.add(run);
    if (typeof parsed === 'string') {
      // Retrying cannot repair a record: drop the job, loudly.
      this.opts.log.error({ job: id, queue: this.opts.queue, problem: parsed }, 'job record is unusable; dropping the job');
      this.end(run, new Error(`invalid job record: ${parsed}`), false);
      return;
    }
    let promise: Promise<unknown>;
    try {
      promise = Promise.resolve(this.opts.handler(run.job));
    } catch (err) {
      promise = Promise.reject(err);
    }
    promise.then(
      (result) => {
        if (!isVerdict(result)) this.settle(run, undefined, false);
        else if (result.end === 'abandon') this.abandon(run);
        else if (result.end === 'failed' && result.stillRunning) this.giveUp(run, result.error ?? new Error('job failed'), result.stillRunning);
        else this.settle(run, result.error ?? new Error('job failed'), result.end === 'retry');
      },
      (err: unknown) => this.settle(run, err ?? new Error('job failed'), true),
    );
  }

  private settle(run: Running, err: unknown, retryable: boolean): void {
    if (run.timedOut) {
      // The safety net already wrote this job's end; its slot is free now.
      run.timedOut = false;
      this.zombies--;
      this.schedulePump();
      return;
    }
    this.end(run, err, retryable);
  }

  /**
   * Writes the end of a job its handler gave up on while its work goes on, and keeps the slot as
   * the safety net does (a "zombie") until that work settles.
   */
  private giveUp(run: Running, err: unknown, stillRunning: Promise<unknown>): void {
    if (!run.timedOut) {
      run.timedOut = true;
      this.zombies++;
      this.end(run, err, false);
    }
    const release = () => this.settle(run, undefined, false);
    stillRunning.then(release, release);
  }

  /** Lets go of a job without writing its end: it stays in `active`, unvouched, for a stall check to re-deliver. */
  private abandon(run: Running): void {
    if (run.timedOut) {
      // The safety net already wrote its end (it never applies to a job recording a final failure).
      this.settle(run, undefined, false);
      return;
    }
    if (run.ended) return;
    run.ended = true;
    this.running.delete(run);
    this.opts.log.warn({ job: run.job.id, queue: this.opts.queue }, 'job let go without an end; a stall check will re-deliver it');
    if (this.phase === 'draining' && this.isIdle()) this.pump();
    else this.schedulePump();
  }

  /** Writes a running job's options (as its handler changed them) back to its record. */
  private async save(run: Running): Promise<boolean> {
    if (run.ended || this.phase === 'closed') return false;
    const stored = await SAVE_RECORD.run(this.commands, this.keys.active, this.keys.jobs, this.keys.stalls, run.job.id, JSON.stringify(run.record), run.stalls);
    return stored === 1;
  }

  private end(run: Running, err: unknown, retryable: boolean): void {
    if (run.ended) return;
    run.ended = true;
    this.running.delete(run);
    if (this.phase === 'closed') {
      this.opts.log.warn({ job: run.job.id, queue: this.opts.queue }, 'a job ended after shutdown; a stall check will re-deliver it');
      return;
    }
    let end: JobEnd = 'succeeded';
    let record = '';
    let delayMs = -1;
    if (err !== undefined) {
      const options = run.record.options;
      delayMs = retryable ? retryDelay(options) : -1;
      end = delayMs >= 0 ? 'retrying' : 'failed';
      if (end === 'retrying') options.retries = (options.retries ?? 1) - 1;
      if (end === 'retrying' || (this.opts.keep?.failed ?? 0) > 0) {
        // As Bee-Queue records a failed try: its stack trace first, and the status.
        options.stacktraces!.unshift(err instanceof Error ? (err.stack ?? err.message) : String(err));
        run.record.status = end;
        record = JSON.stringify(run.record);
      }
      if (end === 'retrying' && delayMs > 0) this.scheduleRaise(Date.now() + delayMs);
    } else if ((this.opts.keep?.succeeded ?? 0) > 0) {
      run.record.status = 'succeeded';
      record = JSON.stringify(run.record);
    }
    this.ended.push({ run, end, record, delayMs });
    // Nothing else can end in this turn: send at once rather than wait for the turn to finish.
    if (this.running.size === 0 && this.zombies === 0) this.pump();
    else this.schedulePump();
  }

  private reportEnd(e: Ended): void {
    if (e.end === 'succeeded') this.stats.succeeded++;
    else if (e.end === 'retrying') this.stats.retried++;
    else this.stats.failed++;
    try {
      this.opts.onEnd?.(e.run.job, e.end);
    } catch (err) {
      this.opts.log.warn({ err, job: e.run.job.id }, 'onEnd listener failed');
    }
  }

  /** The ids of every job this consumer holds in `active`: running, ended but not yet written, claimed, released. */
  private heldIds(): string[] {
    const ids = [...this.running].map((r) => r.job.id);
    for (const e of this.ended) ids.push(e.run.job.id);
    ids.push(...this.claimed, ...this.released);
    if (this.link.mode === 'sending') {
      const batch = this.link.batch;
      for (const e of batch.ended) ids.push(e.run.job.id);
      ids.push(...batch.claimed, ...batch.released);
    }
    return ids;
  }

  /**
   * Every half stall interval: fail jobs past their safety-net timeout, vouch for the rest, and
   * maybe check for stalled jobs. The safety net sits above the runner's own hard limit (which
   * aborts the work); a job that ignored that for so long is failed without a retry, and keeps its
   * slot until its handler returns, so a stuck handler can never run beside a second copy of itself.
   */
  private readonly guard = (): void => {
    const now = Date.now();
    const limit = Math.min(COMMAND_TIMEOUT_MS, Math.max(1000, this.opts.stallIntervalMs / 2));
    if (this.unanswered > 0 && now - this.unansweredSince > limit) {
      // ioredis sends the unanswered calls again on the new connection; a resend is safe (see pump()).
      this.opts.log.warn({ queue: this.opts.queue, waitedMs: now - this.unansweredSince }, 'no reply from Redis; reconnecting');
      this.unansweredSince = now;
      this.commands.disconnect(true);
    }
    for (const run of this.running) {
      // A job recording a final failure (its verdict saved in its record) is not a stuck one: it
      // keeps its record and stays active until that lands, or another worker takes it over.
      if (run.deadline > now || run.job.options.finalFailure) continue;
      this.opts.log.error({ job: run.job.id, queue: this.opts.queue, timeoutMs: run.job.options.timeout }, 'job ran past its timeout without stopping; failing it');
      run.timedOut = true;
      this.zombies++;
      this.end(run, new Error(`Job ${run.job.id} timed out (${run.job.options.timeout} ms)`), false);
    }
    const k = this.keys;
    this.call(GUARD_JOBS.run(this.commands, k.stallBlock, k.stalling, k.waiting, k.active, k.stalls, this.opts.stallIntervalMs, ...this.heldIds())).then(
      (stalled) => {
        if (stalled.length === 0) return;
        this.stats.requeued += stalled.length;
        this.intake = 'take';
        this.opts.log.warn({ queue: this.opts.queue, jobs: stalled }, 'jobs whose worker stopped vouching for them were put back in the queue');
        this.schedulePump();
      },
      (err: unknown) => this.opts.log.warn({ err: message(err), queue: this.opts.queue }, 'stall check failed'),
    );
  };

  private scheduleRaise(at: number): void {
    if (this.phase !== 'running' || (this.raiseTimer && this.raiseAt <= at)) return;
    clearTimeout(this.raiseTimer);
    this.raiseAt = at;
    this.raiseTimer = setTimeout(this.raiseDelayed, Math.max(0, at - Date.now()));
  }

  /** Moves due retries to the queue, then sleeps until the next one is due (or the poll interval). */
  private readonly raiseDelayed = (): void => {
    this.raiseTimer = undefined;
    this.raiseAt = Infinity;
    if (this.phase !== 'running') return;
    const poll = this.opts.delayedPollMs ?? 1000;
    this.call(RAISE_DELAYED.run(this.commands, this.keys.delayed, this.keys.waiting, Date.now(), RAISE_BATCH)).then(
      ([raised, next]) => {
        if (raised > 0) {
          this.intake = 'take';
          this.schedulePump();
        }
        const nextAt = raised >= RAISE_BATCH ? Date.now() : Number(next) >= 0 ? Number(next) : Infinity;
        this.scheduleRaise(Math.min(nextAt, Date.now() + poll));
      },
      (err: unknown) => {
        this.opts.log.warn({ err: message(err), queue: this.opts.queue }, 'could not move due retries to the queue');
        this.scheduleRaise(Date.now() + poll);
      },
    );
  };
}
