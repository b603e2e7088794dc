/**
 * What an operator may do to a job stored in Redis, beside the service's own producers and
 * consumers: see where it is, put a failed one back in its queue, drop one that ended, remove one
 * that has not started. Each change is one script that checks the job is still where it was seen,
 * so it never races a worker into running a job twice. The rules that decide *whether* a job may be
 * retried or removed (a generation's credits, its state) are the dashboard's (src/dashboard/actions.ts).
 */
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { queueKeys, type QueuedJobOptions } from './consumer';

export type StoredState = 'waiting' | 'active' | 'delayed' | 'succeeded' | 'failed';

export interface StoredJob {
  id: string;
  state: StoredState;
  /** The record as stored (JSON), for a change that must find it unchanged. */
  raw: string;
  data: unknown;
  options: QueuedJobOptions;
}

const scripts = new Map<string, string>();
function script(name: 'forget' | 'retry' | 'remove'): string {
  let lua = scripts.get(name);
  if (lua === undefined) {
    lua = readFileSync(new URL(`./scripts/${name}.lua`, import.meta.url), 'utf8');
    scripts.set(name, lua);
  }
  return lua;
}

/** The job and the state it is in, or null when the queue has no such job. */
export async function findStoredJob(redis: Redis, prefix: string, queue: string, id: string): Promise<StoredJob | null> {
  const k = queueKeys(prefix, queue);
  const replies = (await redis.multi().hget(k.jobs, id).sismember(k.failed, id).sismember(k.succeeded, id).zscore(k.delayed, id).lpos(k.active, id).exec()) ?? [];
  const [raw, failed, succeeded, delayed, active] = replies.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
  if (typeof raw !== 'string') return null;
  const state: StoredState = failed ? 'failed' : succeeded ? 'succeeded' : delayed != null ? 'delayed' : active != null ? 'active' : 'waiting';
  let record: { data?: unknown; options?: QueuedJobOptions } = {};
  try {
    const parsed: unknown = JSON.parse(raw);
    if (typeof parsed === 'object' && parsed !== null) record = parsed;
  } catch {
    // An unusable record is still a job an operator may see and remove.
  }
  return { id, state, raw, data: record.data, options: record.options ?? {} };
}

/**
 * Puts a failed job back at the end of its queue under its own id: a new try, as the consumer
 * would make one, without the verdict of the last one (its stack traces stay, so tries are still
 * counted). False when it is no longer that failed job.
 */
export async function retryFailedJob(redis: Redis, prefix: string, queue: string, job: StoredJob): Promise<boolean> {
  if (job.state !== 'failed') return false;
  const { finalFailure: _verdict, ...options } = job.options;
  const record = JSON.stringify({ data: job.data, options, status: 'created', progress: 0 });
  const k = queueKeys(prefix, queue);
  return (await redis.eval(script('retry'), 4, k.jobs, k.failed, k.failedAt, k.waiting, job.id, job.raw, record)) === 1;
}

/** Drops a kept job that ended, so that its id may be used again. False when it had not ended. */
export async function forgetEndedJob(redis: Redis, prefix: string, queue: string, id: string): Promise<boolean> {
  const k = queueKeys(prefix, queue);
  return (await redis.eval(script('forget'), 5, k.jobs, k.succeeded, k.failed, k.succeededAt, k.failedAt, id)) === 1;
}

/** Removes a job that is waiting or delayed. False when it has started (or is gone). */
export async function removeUnstartedJob(redis: Redis, prefix: string, queue: string, id: string): Promise<boolean> {
  const k = queueKeys(prefix, queue);
  return (await redis.eval(script('remove'), 3, k.jobs, k.waiting, k.delayed, id)) === 1;
}
