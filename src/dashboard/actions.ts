/**
 * Retry and remove, as the dashboard offers them, carried out by the service's rules instead of
 * arena's (whose Bee-Queue "retry" adds a copy of the job under a new id and leaves the failed one,
 * and whose remove would leave a generation's credits reserved for a job that no longer exists):
 * - retry: only a failed job, put back in its queue under its own id (storedJobs.retryFailedJob).
 *   The worker then applies the rules of any delivery: a generation that has already ended (FAILED
 *   and refunded, CANCELLED, SUCCEEDED) is not run again and its credits are not touched; a live
 *   one takes a new attempt, counted against its limit.
 * - remove: a job that ended is dropped from Redis (Postgres keeps the history). A generation job
 *   that has not ended cancels its generation (the credits go back once, its watchers and webhook
 *   are told) and leaves the queue if it has not started; a running one is stopped by its worker.
 *   Other jobs that have not ended are refused: each is a step of work recorded in Postgres
 *   (an upload, a mail, a webhook) that would be left half done.
 */
import type { Redis } from 'ioredis';
import type { AuthUser } from '../auth/tokens';
import { QUEUE_NAMES, type QueueName } from '../config';
import type { GenerationService } from '../generation/service';
import { findStoredJob, forgetEndedJob, removeUnstartedJob, retryFailedJob } from '../jobs/storedJobs';
import type { Logger } from '../logger';

export interface ActionResult {
  id: string;
  ok: boolean;
  /** What was done, or why not. */
  message: string;
  /** 404: no such job; 409: not in a state that allows it. */
  status: 200 | 404 | 409;
}

export interface DashboardActionsDeps {
  redis: Redis;
  prefix: string;
  generations: GenerationService;
  log: Logger;
}

export const isQueueName = (name: string): name is QueueName => (QUEUE_NAMES as readonly string[]).includes(name);

const kindOf = (data: unknown): string | null => {
  const kind = (data as { kind?: unknown } | null)?.kind;
  return typeof kind === 'string' ? kind : null;
};

/** Who did an admin action, on its log line. */
const who = (admin: AuthUser) => ({ admin: admin.id, adminEmail: admin.email });

export class DashboardActions {
  constructor(private readonly deps: DashboardActionsDeps) {}

  async retry(admin: AuthUser, queue: QueueName, id: string): Promise<ActionResult> {
    const { redis, prefix, log } = this.deps;
    const job = await findStoredJob(redis, prefix, queue, id);
    if (!job) return { id, ok: false, status: 404, message: `No job ${id} in ${queue}.` };
    if (job.state !== 'failed') return { id, ok: false, status: 409, message: `Job ${id} is ${job.state}: only a failed job can be retried.` };
    if (!(await retryFailedJob(redis, prefix, queue, job))) return { id, ok: false, status: 409, message: `Job ${id} changed meanwhile; reload the page.` };
    log.info({ ...who(admin), action: 'retry', queue, job: id }, 'failed job put back in its queue from the dashboard');
    return { id, ok: true, status: 200, message: `Job ${id} is waiting again.` };
  }

  async remove(admin: AuthUser, queue: QueueName, id: string): Promise<ActionResult> {
    const { redis, prefix, generations, log } = this.deps;
    const job = await findStoredJob(redis, prefix, queue, id);
    if (!job) return { id, ok: false, status: 404, message: `No job ${id} in ${queue}.` };
    if (job.state === 'succeeded' || job.state === 'failed') {
      if (!(await forgetEndedJob(redis, prefix, queue, id))) return { id, ok: false, status: 409, message: `Job ${id} changed meanwhile; reload the page.` };
      log.info({ ...who(admin), action: 'remove', queue, job: id }, 'ended job removed from the dashboard');
      return { id, ok: true, status: 200, message: `Job ${id} was removed.` };
    }
    const generationId = (job.data as { payload?: { generationId?: unknown } } | null)?.payload?.generationId;
    if (kindOf(job.data) !== 'generateImage' || typeof generationId !== 'string') {
      return {
        id,
        ok: false,
        status: 409,
        message: `Job ${id} is ${job.state}: a ${kindOf(job.data) ?? 'job'} that has not ended cannot be removed (its work would be left half done); wait for it to end.`,
      };
    }
    // The service's own cancel: the refund (once), the final state, the webhook and the watchers.
    const generation = await generations.cancel(admin, generationId);
    const removed = job.state !== 'active' && (await removeUnstartedJob(redis, prefix, queue, id));
    log.info({ ...who(admin), action: 'remove', queue, job: id, generation: generationId, status: generation.status, removed }, 'generation job removed from the dashboard');
    return {
      id,
      ok: true,
      status: 200,
      message: removed
        ? `Generation ${generationId} is ${generation.status}; its job was removed.`
        : `Generation ${generationId} is ${generation.status}; its worker stops the job.`,
    };
  }
}
