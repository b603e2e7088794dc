/**
 * A generation's life, in one place: its statuses, the named transitions between them (and from
 * which statuses each may be taken), the terminal rule, and the progress value of each stage.
 * Every status change in the code is one of these transitions; the repository writes it only from
 * an allowed status (in the same statement), and refuses any other.
 *
 *   QUEUED ─start→ STARTED ─generate→ GENERATING ─postProcess→ POST_PROCESSING ─stage→ UPLOADING ─succeed→ SUCCEEDED
 *   a failed try ─retry→ RETRYING ─start→ STARTED …       any live status ─fail→ FAILED, ─cancel→ CANCELLED
 *   never started, past its start deadline ─expire→ CANCELLED (DEADLINE_EXCEEDED)
 *
 * A worker that died is replaced by a new attempt (`start` again from wherever it stopped), and a
 * re-delivered job whose images are already staged goes straight to `stage`.
 */

import { JobOvertaken } from '../jobs/errors';

/** The states of a generation, in the order a successful one passes through them. */
export const GENERATION_STATUSES = [
  'QUEUED',
  'STARTED',
  'GENERATING',
  'POST_PROCESSING',
  'UPLOADING',
  'RETRYING',
  'SUCCEEDED',
  'FAILED',
  'CANCELLED',
] as const;
export type GenerationStatus = (typeof GENERATION_STATUSES)[number];

export const TERMINAL_STATUSES: ReadonlySet<GenerationStatus> = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);
/** Nothing follows SUCCEEDED, FAILED or CANCELLED: a late or re-delivered step cannot undo an end. */
export const isTerminal = (s: GenerationStatus): boolean => TERMINAL_STATUSES.has(s);
export const LIVE_STATUSES: readonly GenerationStatus[] = GENERATION_STATUSES.filter((s) => !isTerminal(s));

/**
 * `progress` (0..1 over the whole generation) at each stage: sampling fills 0 to `generatingEnd`,
 * then each later stage has its fixed value. It never goes back (the repository and the progress
 * script both keep the greatest).
 */
export const PHASE_PROGRESS = {
  generatingEnd: 0.9,
  postProcessing: 0.9,
  uploading: 0.95,
  succeeded: 1,
} as const;

export type Transition = 'start' | 'generate' | 'postProcess' | 'stage' | 'retry' | 'succeed' | 'fail' | 'cancel' | 'expire';

/** Each transition's target and the statuses it may be taken from. */
export const TRANSITIONS: Readonly<Record<Transition, { to: GenerationStatus; from: readonly GenerationStatus[] }>> = {
  // A new attempt: the first, a retry, or a re-delivery after its worker died mid-way.
  start: { to: 'STARTED', from: ['QUEUED', 'RETRYING', 'STARTED', 'GENERATING', 'POST_PROCESSING'] },
  generate: { to: 'GENERATING', from: ['STARTED'] },
  // SD may answer before any progress reading showed it sampling. POST_PROCESSING again: the worker
  // writes it again when the connection dropped before it heard whether the first write committed.
  postProcess: { to: 'POST_PROCESSING', from: ['STARTED', 'GENERATING', 'POST_PROCESSING'] },
  // UPLOADING again: a re-delivery (or retry) finds the images staged and only re-queues the upload.
  stage: { to: 'UPLOADING', from: ['STARTED', 'GENERATING', 'POST_PROCESSING', 'UPLOADING', 'RETRYING'] },
  // A try failed before it started (QUEUED), while it ran, or after staging (queuing the upload).
  retry: { to: 'RETRYING', from: ['QUEUED', 'STARTED', 'GENERATING', 'POST_PROCESSING', 'UPLOADING', 'RETRYING'] },
  // RETRYING: a generation job failed after staging (queuing the upload), while the upload it did
  // queue ran; the upload job only runs with the images staged.
  succeed: { to: 'SUCCEEDED', from: ['UPLOADING', 'RETRYING'] },
  fail: { to: 'FAILED', from: LIVE_STATUSES },
  cancel: { to: 'CANCELLED', from: LIVE_STATUSES },
  // Not started by its startDeadlineSeconds: the statement also requires that no attempt ever
  // started (started_at unset) and that the deadline has passed by Postgres's clock. RETRYING: a
  // first try that failed before it could start. A generation a worker has started is never expired.
  expire: { to: 'CANCELLED', from: ['QUEUED', 'RETRYING'] },
};

export const canTransition = (from: GenerationStatus, transition: Transition): boolean => TRANSITIONS[transition].from.includes(from);

/**
 * A transition asked of a generation in a status it may not be taken from: never written. In a job
 * it means another delivery of the generation is ahead (a copy re-delivered by a stall check, an
 * upload that ran before a retry), so the job stops quietly (JobOvertaken) instead of failing a
 * generation that is moving on.
 */
export class IllegalTransitionError extends JobOvertaken {
  override name = 'IllegalTransitionError';
  constructor(
    readonly generationId: string,
    readonly from: GenerationStatus,
    readonly transition: Transition,
  ) {
    super(`Generation ${generationId}: ${transition} (→ ${TRANSITIONS[transition].to}) is not allowed from ${from}.`);
  }
}
