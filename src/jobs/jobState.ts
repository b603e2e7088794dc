/**
 * Generic job state, for every job kind: what the job wrapper records when a job starts and ends.
 * Each job has one snapshot in Redis, `${prefix}:job:${jobId}` (a JSON string, expiring after
 * RESULT_EXPIRES_S), and every change is also PUBLISHed on `${prefix}:job-events`, in batches (one
 * message lists the changes written together, see ./stateTracker). A queue dashboard and the old
 * `GET /api/v1/generation-status/{task_id}` route read these; a generation's own progress stream is
 * separate (src/progress/).
 */
import type { Redis } from 'ioredis';

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

/** What one message on the job-events channel carries. */
export interface JobEventBatch {
  changes: JobSnapshot[];
}

export const jobStateKey = (prefix: string, jobId: string) => `${prefix}:job:${jobId}`;
export const jobEventsChannel = (prefix: string) => `${prefix}:job-events`;

function isJobSnapshot(v: unknown): v is JobSnapshot {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Record<string, unknown>;
  return (
    typeof s.jobId === 'string' &&
    typeof s.kind === 'string' &&
    typeof s.state === 'string' &&
    (JOB_STATES as readonly string[]).includes(s.state) &&
    typeof s.attempt === 'number' &&
    typeof s.startedAt === 'number'
  );
}

/** Parses a stored snapshot; null for anything that is not one (never throws). */
export function parseJobSnapshot(raw: string | null): JobSnapshot | null {
  if (raw === null) return null;
  try {
    const v: unknown = JSON.parse(raw);
    return isJobSnapshot(v) ? v : null;
  } catch {
    return null;
  }
}

/** Parses a job-events message into its changes; an unreadable message gives none. */
export function parseJobEvents(message: string): JobSnapshot[] {
  try {
    const v: unknown = JSON.parse(message);
    const changes = typeof v === 'object' && v !== null ? (v as { changes?: unknown }).changes : undefined;
    return Array.isArray(changes) ? changes.filter(isJobSnapshot) : [];
  } catch {
    return [];
  }
}

/** A job's last recorded state, or null when it never ran here or its snapshot has expired. */
export async function readJobSnapshot(redis: Redis, prefix: string, jobId: string): Promise<JobSnapshot | null> {
  return parseJobSnapshot(await redis.get(jobStateKey(prefix, jobId)));
}
