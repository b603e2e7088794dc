/**
 * Job failures and the one table that decides whether a failure is worth another try. Transient
 * errors (a server down, a 5xx, a garbled answer) are retried up to TASK_MAX_RETRIES times,
 * TASK_RETRY_DELAY_S apart; everything else fails at once, as in the old Celery service.
 */
import { isDatabaseUnavailable } from '../db/unavailable';

export interface JobFailure {
  code: string;
  /** Shown to the generation's owner: clear, and without internals. */
  message: string;
  retryable: boolean;
}

/**
 * Not a failure: the job has nothing left to do, because another delivery of the same work is ahead
 * of it or the work already ended (a re-delivered copy meeting a state it may not change). The job
 * ends quietly as done; it is neither retried nor recorded as failed.
 */
export class JobOvertaken extends Error {
  override name = 'JobOvertaken';
}

/** An expected failure raised by our own code, with a stable code. */
export class JobError extends Error {
  override name = 'JobError';
  constructor(
    readonly code: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export const RETRYABLE_CODES: ReadonlySet<string> = new Set([
  'SD_UNREACHABLE',
  'SD_TIMEOUT',
  'SD_SERVER_ERROR',
  'SD_BAD_RESPONSE',
  'STORAGE_UNAVAILABLE',
  'QUEUE_UNAVAILABLE',
  // Postgres could not be reached (src/db/unavailable.ts): a write the job did not wait out itself.
  'DATABASE_UNAVAILABLE',
  // The worker is shutting down; another worker will pick the job up.
  'IMAGING_POOL_CLOSED',
  'UNAVAILABLE',
  // A mail server that could not be reached, or answered 4xx ("try again later"). A 5xx is final.
  'MAIL_UNAVAILABLE',
  'MAIL_DEFERRED',
  // A webhook receiver that could not be reached, did not answer in time, or answered anything but
  // 2xx (a 3xx too: redirects are not followed), and a host whose name did not resolve. A 410 Gone
  // (WEBHOOK_GONE) and a refused address (WEBHOOK_ADDRESS_REFUSED) are final.
  'WEBHOOK_UNREACHABLE',
  'WEBHOOK_TIMEOUT',
  'WEBHOOK_REJECTED',
  'WEBHOOK_REDIRECTED',
  'WEBHOOK_UNRESOLVABLE',
]);

/** Network-level errors of Node itself (a service restarting, a dropped connection). */
const TRANSIENT_SYSTEM_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENOTFOUND']);

/** Converts anything thrown into a JobFailure, once. Unknown errors are not retried and their text is not shown. */
export function toJobFailure(err: unknown): JobFailure {
  if (err instanceof Error && 'code' in err && typeof err.code === 'string') {
    if (TRANSIENT_SYSTEM_CODES.has(err.code)) {
      return { code: 'UNAVAILABLE', message: `A service the worker needs is unavailable (${err.code}).`, retryable: true };
    }
    // Our own kinds: JobError, and the error classes of the SD client, storage, imaging, mail and webhooks.
    if (err instanceof JobError || /^(SD|STORAGE|IMAGE|IMAGING|MAIL|WEBHOOK)_[A-Z0-9_]+$/.test(err.code)) {
      return { code: err.code, message: err.message, retryable: RETRYABLE_CODES.has(err.code) };
    }
  }
  // After our own kinds (which may wrap one as their cause): node-postgres' and knex's own shapes of
  // a database that cannot be reached (a bare socket error above is already UNAVAILABLE).
  if (isDatabaseUnavailable(err)) {
    return { code: 'DATABASE_UNAVAILABLE', message: 'The database could not be reached.', retryable: true };
  }
  return { code: 'INTERNAL', message: 'The worker hit an unexpected error; it has been logged.', retryable: false };
}
