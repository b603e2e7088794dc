/**
 * The wrapper every job runs in, whatever its kind: time limits that really stop the work, the
 * retry decision (one table, src/jobs/errors.ts), and counters. Bee-Queue's own `.timeout()` only
 * races a promise; here the hard limit aborts an AbortSignal that the processors pass down to the
 * HTTP call, the SD server (interrupt) and the thread pool.
 */
import type BeeQueue from 'bee-queue';
import type { Logger } from '../logger';
import type { JobFailure } from './errors';
import { JobError, toJobFailure } from './errors';
import type { JobEnvelope, JobKind, JobPayloads } from './registry';

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

export function createJobHandler(processors: Processors, limits: RunnerLimits, log: Logger) {
  const counters: JobCounters = { succeeded: 0, failed: 0, retried: 0, active: 0 };

  async function handle(job: BeeQueue.Job<JobEnvelope>): Promise<void> {
    const { kind, payload } = job.data;
    const processor = processors[kind] as Processor<JobKind> | undefined;
    const jobLog = log.child({ job: job.id, kind });
    if (!processor) {
      // A job this worker does not know cannot succeed by retrying here.
      jobLog.error('no processor for this job kind; dropping it');
      counters.failed++;
      return;
    }
    const hard = new AbortController();
    const soft = new AbortController();
    const hardTimer = setTimeout(
      () => hard.abort(new AbortedWith({ code: 'TIME_LIMIT_EXCEEDED', message: `The job ran past its ${limits.timeLimitMs / 1000} s time limit.`, retryable: false })),
      limits.timeLimitMs,
    );
    const softTimer = setTimeout(() => soft.abort(), limits.softTimeLimitMs);
    const retriesLeft = Number((job.options as { retries?: number }).retries ?? 0);
    const ctx: JobContext<JobKind> = {
      kind,
      payload,
      jobId: job.id,
      retriesLeft,
      signal: hard.signal,
      softSignal: soft.signal,
      abort: (failure) => hard.abort(new AbortedWith(failure)),
      log: jobLog,
    };
    counters.active++;
    const started = performance.now();
    try {
      await processor.run(ctx);
      if (hard.signal.aborted) throw hard.signal.reason;
      counters.succeeded++;
      jobLog.debug({ ms: Math.round(performance.now() - started) }, 'job done');
    } catch (err) {
      const reason: unknown = hard.signal.aborted ? hard.signal.reason : err;
      const failure = reason instanceof AbortedWith ? reason.failure : toJobFailure(reason);
      if (failure.code === 'INTERNAL') jobLog.error({ err }, 'job failed with an unexpected error');
      if (failure.retryable && retriesLeft > 0) {
        counters.retried++;
        jobLog.warn({ failure, retriesLeft }, 'job failed; it will be retried');
        await processor.onRetry?.(ctx, failure);
        // Rethrowing hands the job back to Bee-Queue, which schedules the retry after the backoff.
        throw new JobError(failure.code, failure.message, { cause: err });
      }
      counters.failed++;
      jobLog.warn({ failure }, 'job failed for good');
      await processor.onFinalFailure(ctx, failure);
    } finally {
      counters.active--;
      clearTimeout(hardTimer);
      clearTimeout(softTimer);
    }
  }

  return { handle, counters };
}
