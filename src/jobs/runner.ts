/**
 * The wrapper every job runs in, whatever its kind: time limits that really stop the work, the
 * retry decision (one table, src/jobs/errors.ts), state tracking and metrics. Bee-Queue's own
 * `.timeout()` only races a promise; here the hard limit aborts an AbortSignal that the processors
 * pass down to the HTTP call, the SD server (interrupt) and the thread pool.
 *
 * State tracking (./jobState, ./outcomeTracker) is handed to a sink that only counts the change in memory: the
 * job never waits for Redis because of it, and a tracking failure never fails a job.
 */
import os from 'node:os';
import type { Logger } from '../logger';
import { sleep } from '../sleep';
import type { JobVerdict, QueuedJob } from './consumer';
import type { JobFailure } from './errors';
import { JobError, JobOvertaken, toJobFailure } from './errors';
import type { JobOutcome, JobSnapshot } from './jobState';
import { JobMetrics } from './metrics';
import { JOB_QUEUES, type JobKind, type JobPayloads } from './registry';
import type { JobStateSink } from './outcomeTracker';

export interface JobContext<K extends JobKind> {
  kind: K;
  payload: JobPayloads[K];
  jobId: string;
  /** Tries left after this one (Bee-Queue counts them down). */
  retriesLeft: number;
  /** Aborted at the hard time limit, when the job is cancelled, or when it is given up. */
  signal: AbortSignal;
  /** Aborted at the soft time limit: finish quickly with what you have. */
  softSignal: AbortSignal;
  /** Stops this job's work with the given failure (e.g. the generation was cancelled elsewhere). */
  abort(failure: JobFailure): void;
  log: Logger;
}

export interface Processor<K extends JobKind> {
  run(ctx: JobContext<K>): Promise<void>;
  /** The job will be tried again after a delay. */
  onRetry?(ctx: JobContext<K>, failure: JobFailure): Promise<void>;
  /** The job will not run again: record the outcome (refunds happen here). */
  onFinalFailure(ctx: JobContext<K>, failure: JobFailure): Promise<void>;
}

export type Processors = { [K in JobKind]?: Processor<K> };

export interface RunnerLimits {
  timeLimitMs: number;
  softTimeLimitMs: number;
  /**
   * TASK_ABORT_GRACE_S: how long past the hard limit a processor that ignores its abort is waited
   * for. Then it is given up: its final failure (TIME_LIMIT_EXCEEDED) is recorded while it still
   * runs, and the consumer keeps its slot until it returns. Unset: waited for as long as it runs
   * (only the queue's safety net then ends the job, recording nothing).
   */
  abortGraceMs?: number;
  /** Waits between tries of recording a final failure (tests shorten them). Default 0.5 s doubling to 30 s. */
  landingDelayMs?: (attempt: number) => number;
}

export interface JobCounters {
  succeeded: number;
  failed: number;
  retried: number;
  active: number;
}

class AbortedWith extends Error {
  constructor(readonly failure: JobFailure) {
    super(failure.message);
  }
}

/**
 * An abort that creates its AbortController only when someone asks for the signal: making a signal
 * costs about 6 µs in Node 20, which a short job that never looks at it should not pay twice.
 */
class LazyAbort {
  private controller: AbortController | undefined;
  aborted = false;
  reason: unknown;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
  }
}

/**
 * One attempt of one job, and the context its processor sees. A class rather than an object of
 * closures: the wrapper runs for every job, and a no-op job should cost little more than Bee-Queue
 * itself (bench/scenarios/jobs.ts). Call `ctx.abort(...)` as a method.
 */
class JobRun<K extends JobKind> implements JobContext<K> {
  readonly hard = new LazyAbort();
  readonly soft = new LazyAbort();
  /** The soft-limit timer, then the hard-limit one, then the grace past it (one timer at a time). */
  timer: NodeJS.Timeout | undefined;
  /** Set while the processor runs: stops waiting for it (see RunnerLimits.abortGraceMs). */
  giveUp: (() => void) | undefined;
  private logger: Logger | undefined;

  constructor(
    readonly kind: K,
    readonly payload: JobPayloads[K],
    readonly jobId: string,
    readonly retriesLeft: number,
    private readonly parentLog: Logger,
    private readonly attempt: number,
  ) {}

  get signal(): AbortSignal {
    return this.hard.signal;
  }

  get softSignal(): AbortSignal {
    return this.soft.signal;
  }

  /** Made on first use: most jobs never log. */
  get log(): Logger {
    // Every line about a job names it, its queue, its attempt and (for a generation's jobs) the generation.
    const generationId = (this.payload as { generationId?: unknown }).generationId;
    return (this.logger ??= this.parentLog.child({
      job: this.jobId,
      kind: this.kind,
      queue: JOB_QUEUES[this.kind],
      attempt: this.attempt,
      ...(typeof generationId === 'string' ? { generation: generationId } : {}),
    }));
  }

  abort(failure: JobFailure): void {
    this.hard.abort(new AbortedWith(failure));
  }
}

function onSoftLimit(run: JobRun<JobKind>, limits: RunnerLimits): void {
  run.soft.abort();
  run.timer = setTimeout(onHardLimit, limits.timeLimitMs - limits.softTimeLimitMs, run, limits);
}

function onHardLimit(run: JobRun<JobKind>, limits: RunnerLimits): void {
  run.abort({ code: 'TIME_LIMIT_EXCEEDED', message: `The job ran past its ${limits.timeLimitMs / 1000} s time limit.`, retryable: false });
  if (limits.abortGraceMs !== undefined) run.timer = setTimeout(onIgnoredAbort, limits.abortGraceMs, run);
}

function onIgnoredAbort(run: JobRun<JobKind>): void {
  run.timer = undefined;
  run.giveUp?.();
}

/** What the runner races a processor's run against once the processor ignored its abort. */
const GIVEN_UP = Symbol('given up');

/** Waits before trying again to record a final failure: 0.5 s, doubling up to 30 s. */
const landingDelayMs = (attempt: number) => Math.min(30_000, 500 * 2 ** attempt);
/**
 * Tries of recording a final failure in one delivery of the job (about two minutes of backoff).
 * After that, with the verdict saved in the job's record, the job is let go: a stall check
 * re-delivers it, to this worker or another, and that copy only records the verdict. No slot is
 * held for the whole of a long database outage, and shutdown is never held up by it.
 */
export const LANDING_TRIES_PER_DELIVERY = 10;

/**
 * Records a final failure (the processor's onFinalFailure: the refund, the final state) until it
 * lands: the job is over either way, so it is never retried nor run again for this. If the first
 * try fails, the failure is first remembered in the job's record, so that a copy re-delivered after
 * this worker died only records it, without running the job (and calling the GPU) again.
 * Resolves 'landed', or 'abandon' when this delivery gives up (the worker is stopping, or the tries
 * ran out with the verdict safely saved) and leaves the rest to a re-delivery.
 */
async function landFinalFailure(
  run: JobRun<JobKind>,
  job: QueuedJob,
  processor: Processor<JobKind>,
  failure: JobFailure,
  delayMs: (attempt: number) => number = landingDelayMs,
): Promise<'landed' | 'abandon'> {
  // Saved first (one Redis call, on a rare path): a worker that dies on its first try, hanging on a
  // database that is gone, has already left the verdict with the job.
  let saved: boolean | undefined = job.options.finalFailure ? true : undefined;
  job.options.finalFailure = failure;
  const stopping = job.stopping;
  for (let attempt = 0; ; attempt++) {
    if (saved === undefined) saved = await job.saveOptions?.().catch(() => undefined);
    try {
      await processor.onFinalFailure(run, failure);
      return 'landed';
    } catch (err) {
      const giveUp = stopping?.aborted || (saved === true && attempt + 1 >= LANDING_TRIES_PER_DELIVERY);
      run.log.error(
        { err, failure, attempt },
        giveUp ? 'could not record the end of a job that failed for good; leaving it to be re-delivered' : 'could not record the end of a job that failed for good; trying again',
      );
      if (giveUp) return 'abandon';
      await sleep(delayMs(attempt), stopping);
      if (stopping?.aborted) return 'abandon';
    }
  }
}

export interface JobTracking {
  /** Receives each job's state when it starts and ends (a JobOutcomeTracker in the worker). None: metrics only. */
  sink?: JobStateSink;
  /** Names this process in the snapshots. Default host:pid. */
  workerId?: string;
}

export function createJobHandler(processors: Processors, limits: RunnerLimits, log: Logger, tracking: JobTracking = {}) {
  const counters: JobCounters = { succeeded: 0, failed: 0, retried: 0, active: 0 };
  const metrics = new JobMetrics();
  const sink = tracking.sink;
  const workerId = tracking.workerId ?? `${os.hostname()}:${process.pid}`;

  /** Tracking is best effort: whatever a sink does wrong, the job's outcome stays the job's own. */
  function record(snapshot: JobSnapshot): void {
    if (!sink) return;
    try {
      sink.record(snapshot);
    } catch (err) {
      log.warn({ err, job: snapshot.jobId }, 'could not record a job state');
    }
  }

  /**
   * Runs one try of a job and says how it ended: nothing (it succeeded), or a JobVerdict the consumer
   * carries out as it is: `retry` (a transient failure with retries left, decided here from the one
   * error table) or `failed` (for good, its end recorded first).
   */
  async function handle(job: QueuedJob): Promise<JobVerdict | undefined> {
    const { kind, payload } = job.data;
    const processor = processors[kind] as Processor<JobKind> | undefined;
    const options = job.options;
    // Bee-Queue keeps one stack trace per failed try in the job's options: the count is the tries so far.
    // A stall check's re-delivery is a try too (the job's worker stopped vouching for it): counted
    // from the consumer's stall count, so a copy re-queued while the first still ran is attempt 2.
    const attempt = (options.stacktraces?.length ?? 0) + (job.stalls ?? 0) + 1;
    if (!processor) {
      // A job this worker does not know cannot succeed by retrying here.
      log.error({ job: job.id, kind }, 'no processor for this job kind; dropping it');
      counters.failed++;
      metrics.ended(kind, 'failed', null, false);
      const now = Date.now();
      record({ jobId: job.id, kind, state: 'failed', attempt, startedAt: now, finishedAt: now, durationMs: null, errorCode: 'NO_PROCESSOR', worker: workerId });
      return { end: 'failed', error: new JobError('NO_PROCESSOR', `No processor for jobs of kind ${kind}.`) };
    }
    const run = new JobRun(kind, payload, job.id, Number(options.retries ?? 0), log, attempt);
    // One timer at a time: the soft limit's, which then arms the hard limit's.
    run.timer = setTimeout(onSoftLimit, limits.softTimeLimitMs, run, limits);
    counters.active++;
    metrics.started();
    const started = performance.now();
    const start: JobSnapshot = {
      jobId: job.id,
      kind,
      state: 'active',
      attempt,
      startedAt: Date.now(),
      finishedAt: null,
      durationMs: null,
      errorCode: null,
      worker: workerId,
    };
    record(start);
    // How the attempt ended, recorded once in `finally` (after the processor's retry/failure hooks).
    let outcome: JobOutcome = 'failed';
    let errorCode: string | null = 'INTERNAL';
    /** The processor's run, when it was given up on while it still ran. */
    let stillRunning: Promise<unknown> | undefined;
    try {
      let failure: JobFailure;
      let cause: unknown;
      if (options.finalFailure) {
        // Judged failed for good by a worker that died before recording it: only record it.
        failure = options.finalFailure;
      } else {
        try {
          const running = processor.run(run);
          const givenUp = limits.abortGraceMs === undefined ? undefined : new Promise<typeof GIVEN_UP>((resolve) => (run.giveUp = () => resolve(GIVEN_UP)));
          // A run that finished is done, even if a limit fired as it ended: its work is recorded.
          if ((await (givenUp ? Promise.race([running, givenUp]) : running)) === GIVEN_UP) {
            // It ignored the abort for the whole grace: give up on it. The abort's failure is
            // recorded below while it still runs; its slot stays taken until it returns.
            stillRunning = running;
            running.catch(() => undefined);
            run.log.error({ graceMs: limits.abortGraceMs }, 'the job ignored its hard time limit; giving up on it while it still runs');
            throw run.hard.reason;
          }
          counters.succeeded++;
          outcome = 'succeeded';
          errorCode = null;
          if (log.isLevelEnabled('debug')) run.log.debug({ ms: Math.round(performance.now() - started) }, 'job done');
          return undefined;
        } catch (err) {
          if (err instanceof JobOvertaken && !run.hard.aborted) {
            // Another delivery of the same work is ahead of this one: nothing left to do here.
            run.log.warn({ reason: err.message }, 'job overtaken by another delivery; it stops here');
            counters.succeeded++;
            outcome = 'succeeded';
            errorCode = null;
            return undefined;
          }
          const reason: unknown = run.hard.aborted ? run.hard.reason : err;
          failure = reason instanceof AbortedWith ? reason.failure : toJobFailure(reason);
          cause = stillRunning ? undefined : err;
          if (failure.code === 'INTERNAL') run.log.error({ err }, 'job failed with an unexpected error');
        }
      }
      errorCode = failure.code;
      const error = new JobError(failure.code, failure.message, { cause });
      if (failure.retryable && run.retriesLeft > 0 && !options.finalFailure) {
        counters.retried++;
        outcome = 'retrying';
        run.log.warn({ failure, retriesLeft: run.retriesLeft }, 'job failed; it will be retried');
        // Telling the watchers is best effort: the retry itself must happen whatever they heard.
        await processor.onRetry?.(run, failure).catch((err: unknown) => run.log.warn({ err }, 'could not record the retry; retrying anyway'));
        return { end: 'retry', error };
      }
      counters.failed++;
      run.log.warn({ failure }, 'job failed for good');
      if ((await landFinalFailure(run, job, processor, failure, limits.landingDelayMs)) === 'abandon') {
        // Left to a re-delivery, which only records the saved verdict. (A processor given up on
        // that still runs then no longer holds its slot: rare, it takes a database down for minutes.)
        return { end: 'abandon', error };
      }
      return stillRunning ? { end: 'failed', error, stillRunning } : { end: 'failed', error };
    } finally {
      counters.active--;
      clearTimeout(run.timer);
      run.giveUp = undefined;
      const durationMs = Math.round((performance.now() - started) * 1000) / 1000;
      metrics.ended(kind, outcome, durationMs);
      record({ ...start, state: outcome, finishedAt: Date.now(), durationMs, errorCode });
    }
  }

  return { handle, counters, metrics };
}
