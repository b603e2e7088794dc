/**
 * Generic job state, for every job kind: what the job wrapper (./runner.ts) hands its sink when a
 * job starts and ends. The worker's sink, ./outcomeTracker.ts, counts the ends per queue in Redis
 * (the operators' figures, src/jobs/queueStats.ts); a generation's own progress is separate
 * (src/progress/).
 */

export const JOB_STATES = ['active', 'succeeded', 'failed', 'retrying'] as const;
/** `retrying`: this attempt failed and another one is scheduled; `failed` and `succeeded` are final. */
export type JobState = (typeof JOB_STATES)[number];
export type JobOutcome = Exclude<JobState, 'active'>;

export interface JobSnapshot {
  jobId: string;
  /** The job kind (src/jobs/registry.ts); a plain string so an unknown kind can be recorded too. */
  kind: string;
  state: JobState;
  /** 1 for the first try; a retry counts up (a stalled job re-delivered by Bee-Queue does not). */
  attempt: number;
  /** Epoch milliseconds. */
  startedAt: number;
  finishedAt: number | null;
  durationMs: number | null;
  /** The failure's stable code (src/jobs/errors.ts) for `failed` and `retrying`. */
  errorCode: string | null;
  /** host:pid of the worker that ran the attempt. */
  worker: string;
}
