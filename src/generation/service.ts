/**
 * What the API does with generations: create (reserve credits, insert, enqueue), read, stream and
 * cancel. Resolvers call this; it knows nothing of GraphQL except the public error kinds.
 */
import { randomUUID } from 'node:crypto';
import { parseUuid } from '../ids';
import type { Knex } from 'knex';
import type { AuthUser } from '../auth/tokens';
import type { CreditMeter } from '../credits/meter';
import { DomainError, notFound, rateLimited, serviceUnavailable } from '../errors';
import type { RateLimits } from '../limits/rateLimits';
import type { JobProducer } from '../jobs/queues';
import type { Logger } from '../logger';
import type { Page, PageRequest } from '../paging';
import type { ProgressEvent } from '../progress/event';
import type { ProgressHub } from '../progress/hub';
import type { ProgressPublisher } from '../progress/publisher';
import { progressStream, type ProgressStream, type ProgressStreamSource } from '../progress/stream';
import type { GenerationInput } from './input';
import { progressFromRow, progressFromRows } from './progressOf';
import type { QueueInfo } from './queueInfo';
import type { GenerationRow } from './repository';
import { GenerationInserter } from './inserter';
import { countUnfinishedGenerations, endGenerationWithRefund, findGeneration, findGenerations, pageGenerations } from './repository';
import { isTerminal, type GenerationStatus } from './lifecycle';
import { requestHash } from './idempotency';
import {
  IDEMPOTENCY_KEY_CONSTRAINT,
  insertKeyedGenerationReservingCredits,
  readIdempotencyKey,
  releaseIdempotencyKey,
  type NewGeneration,
} from '../db/statements';
import { queueWebhook } from '../webhooks/events';
import type { WebhookService, WebhookTarget } from '../webhooks/service';


/** The one place an incoming generation id is parsed; a malformed id is simply not found. */
export const parseGenerationId = parseUuid;

export interface GenerationServiceDeps {
  db: Knex;
  producer: JobProducer;
  publisher: ProgressPublisher;
  hub: ProgressHub;
  queueInfo: QueueInfo;
  resyncMs: number;
  log: Logger;
  /** Checks and stores a generation's own webhook receiver. */
  webhooks: WebhookService;
  /**
   * EMAIL_VERIFICATION_REQUIRED: generating needs a verified address. Given, `isEmailVerified`
   * reads it fresh when the cached caller says "not verified" (it may have been verified since).
   */
  emailVerification?: { isEmailVerified(userId: string): Promise<boolean> };
  /** Counts the credits this process charges and refunds (its /metrics). */
  credits?: CreditMeter;
  /** RATE_LIMIT_GENERATIONS_PER_MINUTE, counted in Redis before anything is reserved. */
  rateLimits?: Pick<RateLimits, 'generation'>;
  /** MAX_UNFINISHED_GENERATIONS_PER_USER, checked by the statement that creates the generation; 0: none. */
  maxUnfinishedPerUser?: number;
  /** IDEMPOTENCY_TTL_S: how long an idempotency key answers with its generation. Default 86400. */
  idempotencyTtlS?: number;
}

/** What a submit may ask beside the generation's settings (both checked at the edge). */
export interface SubmitOptions {
  /** The same key from the same user within IDEMPOTENCY_TTL_S answers with the same generation. */
  idempotencyKey?: string | null;
  /** Still QUEUED this long after the insert, the generation is cancelled (DEADLINE_EXCEEDED). */
  startDeadlineSeconds?: number | null;
}

export interface Submitted {
  row: GenerationRow;
  /** True when an idempotency key answered with the generation an earlier request created (nothing charged or queued now). */
  replayed: boolean;
}

/** Claiming a key that keeps being taken and expiring between our tries: give up after this many. */
const KEY_CLAIM_TRIES = 3;

/** A unique violation on the key. Duck-typed: PGlite (dev) raises its own error class with the same fields as node-postgres. */
function isKeyTaken(err: unknown): boolean {
  const e = err as { code?: unknown; constraint?: unknown } | null;
  return typeof e === 'object' && e !== null && e.code === '23505' && e.constraint === IDEMPOTENCY_KEY_CONSTRAINT;
}

/** How soon to try again after MAX_UNFINISHED_GENERATIONS_PER_USER: a guess, about one generation on a mid-range GPU. */
const UNFINISHED_RETRY_S = 10;

export class GenerationService {
  private readonly inserter: GenerationInserter;

  constructor(private readonly deps: GenerationServiceDeps) {
    this.inserter = new GenerationInserter(deps.db, { maxUnfinished: deps.maxUnfinishedPerUser ?? 0 });
  }

  async create(user: AuthUser, input: GenerationInput, webhook: WebhookTarget | null = null, opts: SubmitOptions = {}): Promise<Submitted> {
    const { db, producer, log, emailVerification, webhooks, credits, rateLimits } = this.deps;
    const key = opts.idempotencyKey ?? null;
    const startDeadlineSeconds = opts.startDeadlineSeconds ?? null;
    const hash = key === null ? '' : requestHash({ input, startDeadlineSeconds, webhook });
    // First, before any work: a client past its rate is refused with nothing reserved or queued;
    // but a retry with a live key gets its generation (it asks for no new work).
    try {
      await rateLimits?.generation(user.id);
    } catch (err) {
      const replay = key !== null && err instanceof DomainError && err.code === 'RATE_LIMITED' ? await this.replayOf(user.id, key, hash) : null;
      if (!replay) throw err;
      return { row: replay, replayed: true };
    }
    if (emailVerification && !user.emailVerified && !(await emailVerification.isEmailVerified(user.id))) {
      throw new DomainError('EMAIL_NOT_VERIFIED', 'Confirm your email address first: follow the link in the mail sent at sign-up (signUp again sends a new one).');
    }
    // Before anything is reserved: a receiver that could never be delivered to is refused now.
    if (webhook) await webhooks.checkTarget(user.id, webhook);
    const id = randomUUID();
    const generation: NewGeneration = { id, userId: user.id, input, startDeadlineSeconds };
    let row: GenerationRow | null;
    if (key === null) {
      // The hot path: batched with other requests, no statement more than before keys existed.
      row = await this.inserter.insert(generation);
    } else {
      const claimed = await this.insertKeyed(generation, key, hash);
      if (claimed.replayed && claimed.row) return { row: claimed.row, replayed: true };
      row = claimed.row;
    }
    if (!row) {
      // Refused by the statement: too few credits, or too many unfinished. Only this path asks which.
      const max = this.deps.maxUnfinishedPerUser ?? 0;
      if (max > 0 && (await countUnfinishedGenerations(db, user.id)) >= max) {
        throw rateLimited(`You have ${max} generations that have not finished, the most at once; wait for one to finish (or cancel one).`, UNFINISHED_RETRY_S);
      }
      throw new DomainError(
        'INSUFFICIENT_CREDITS',
        `Not enough photo credits: this generation needs ${input.batchSize}.`,
        { required: input.batchSize },
      );
    }
    credits?.charged(row.credits_reserved);
    try {
      // Stored before the job is queued, so the job's events find it.
      if (webhook) await webhooks.saveTarget(id, webhook);
      await producer.enqueue('generateImage', id, { generationId: id });
    } catch (err) {
      // The job could not be queued: end the generation now and give the credits back, so a
      // Redis outage never keeps a user's credits.
      log.error({ err, generationId: id }, 'enqueue failed; refunding');
      const ended = await endGenerationWithRefund(db, id, 'fail', {
        code: 'ENQUEUE_FAILED',
        message: 'The job queue is unavailable; your credits were returned. Try again shortly.',
        retryable: true,
      }, credits);
      // Not awaited: with Redis unreachable it would only add ENQUEUE_TIMEOUT_MS to this answer.
      if (ended) void queueWebhook({ db, producer, log }, id, 'FAILED');
      // The request failed: the same key sent again must create a generation, not answer with this one.
      if (key !== null) await releaseIdempotencyKey(db, id).catch((e: unknown) => log.error({ err: e, generationId: id }, 'could not release the idempotency key'));
      throw serviceUnavailable('The job queue is unavailable; your credits were returned. Try again shortly.');
    }
    return { row, replayed: false };
  }

  /**
   * Creates the generation claiming `key` in the same statement, or answers with the generation the
   * key already names. The race of two requests with one key (on two API processes) is settled by
   * the key's primary key in Postgres: the second statement waits for the first, fails on the key and
   * charges nothing; it then reads the winner's generation (a second statement, only on this path).
   * A statement refused for credits or unfinished generations reads the key too: a retry of a request
   * that spent the user's last credits answers with its generation, not INSUFFICIENT_CREDITS.
   * A key whose TTL has passed is deleted by that read and claimed again.
   */
  private async insertKeyed(generation: NewGeneration, key: string, hash: string): Promise<{ row: GenerationRow | null; replayed: boolean }> {
    const { db } = this.deps;
    const claim = { key, inputHash: hash, ttlS: this.deps.idempotencyTtlS ?? 86_400 };
    for (let tries = 1; ; tries++) {
      let refused = false;
      try {
        const row = await insertKeyedGenerationReservingCredits(db, generation, claim, this.deps.maxUnfinishedPerUser ?? 0);
        if (row) return { row, replayed: false };
        refused = true;
      } catch (err) {
        if (!isKeyTaken(err)) throw err;
      }
      const found = await this.replayOf(generation.userId, key, hash);
      if (found) return { row: found, replayed: true };
      if (refused) return { row: null, replayed: false };
      // Released (its request failed) or past its TTL (deleted by the read): claim it again.
      if (tries >= KEY_CLAIM_TRIES) throw serviceUnavailable('The idempotency key is being taken and released by other requests right now; try again shortly.');
    }
  }

  /**
   * The generation a live key of the user names when `hash` is its request's; IDEMPOTENCY_CONFLICT
   * when the key was used for another request; null when there is no live key (one past its TTL is
   * deleted, so it may be claimed again).
   */
  private async replayOf(userId: string, key: string, hash: string): Promise<GenerationRow | null> {
    const found = await readIdempotencyKey(this.deps.db, userId, key);
    if (!found || found.expired) return null;
    if (found.inputHash !== hash) {
      throw new DomainError(
        'IDEMPOTENCY_CONFLICT',
        'This idempotency key was already used with a different request; send a new key for a new generation.',
        { generationId: found.generation.id },
      );
    }
    return found.generation;
  }

  /** The generation if `user` may see it (owner or admin), else null: others' ids look missing. */
  async findVisible(user: AuthUser, rawId: string): Promise<GenerationRow | null> {
    return (await this.findVisibleMany(user, [rawId]))[0] ?? null;
  }

  /** `findVisible` of each id, in one query however many. */
  async findVisibleMany(user: AuthUser, rawIds: readonly string[]): Promise<Array<GenerationRow | null>> {
    const ids = rawIds.map((raw) => parseGenerationId(raw));
    const rows = await findGenerations(this.deps.db, [...new Set(ids.filter((id) => id !== null))]);
    const byId = new Map(rows.filter((r) => r.user_id === user.id || user.isAdmin).map((r) => [r.id, r]));
    return ids.map((id) => (id ? (byId.get(id) ?? null) : null));
  }

  /** The caller's own generations, a page at a time, newest first; `status` filters on the recorded status. */
  list(user: AuthUser, req: PageRequest, status: GenerationStatus | null): Promise<Page<GenerationRow>> {
    return pageGenerations(this.deps.db, user.id, req, status);
  }

  /** The current state: the Redis snapshot while it lives, else what Postgres recorded. */
  async currentProgress(id: string): Promise<ProgressEvent | null> {
    return (await this.currentProgressOf([id]))[0] ?? null;
  }

  /**
   * `currentProgress` of each id, at a constant cost however many: one Redis call for the
   * snapshots, then for those without one a query for the rows, one for the images of the
   * succeeded ones and one Redis call for the queued ones' places.
   */
  async currentProgressOf(ids: readonly string[]): Promise<Array<ProgressEvent | null>> {
    const snapshots = await this.deps.publisher.readMany(ids);
    // A snapshot published before image URLs were made per answer carries URLs instead of storage
    // keys (until it expires after RESULT_EXPIRES_S); Postgres has the keys.
    const usable = snapshots.map((s) => (s && s.images.every((i) => typeof i.key === 'string') ? s : null));
    const missing = [...new Set(ids.filter((_id, i) => !usable[i]))];
    if (missing.length === 0) return usable;
    const recorded = await this.withQueuePositions(await progressFromRows(this.deps.db, await findGenerations(this.deps.db, missing)));
    const byId = new Map(recorded.map((e) => [e.generationId, e]));
    return ids.map((id, i) => usable[i] ?? byId.get(id) ?? null);
  }

  /**
   * The state of a generation `create` has just returned, known without reading Redis or Postgres:
   * QUEUED with seq 0, as Postgres has it (a worker may already have moved on; any later read or
   * event shows that). Without the queue position, which costs a Redis read: see withQueuePosition.
   */
  createdProgress(row: GenerationRow): Promise<ProgressEvent> {
    // No I/O for a generation that has not succeeded: only SUCCEEDED reads its images.
    return progressFromRow(this.deps.db, row);
  }

  /** Adds the place in the job queue (and the ETA) to a QUEUED state read from Postgres. */
  async withQueuePosition(event: ProgressEvent): Promise<ProgressEvent> {
    return (await this.withQueuePositions([event]))[0]!;
  }

  /** `withQueuePosition` of each event, in one Redis call for all the queued ones (none without any). */
  async withQueuePositions(events: readonly ProgressEvent[]): Promise<ProgressEvent[]> {
    const queued = events.filter((e) => e.status === 'QUEUED');
    if (queued.length === 0) return [...events];
    const positions = await this.deps.queueInfo.positions(queued.map((e) => e.generationId));
    const byId = new Map(queued.map((e, i) => [e.generationId, positions[i] ?? null]));
    return events.map((e) => {
      const q = byId.get(e.generationId);
      return q ? { ...e, queuePosition: q.position, etaSeconds: q.etaSeconds } : e;
    });
  }

  /** What every progress stream of this process shares: one object, so a stream holds no closures. */
  private streamSource: ProgressStreamSource | undefined;

  /** A progress stream; given a slot (src/limits/streamSlots.ts), the stream gives it back when it ends. */
  stream(id: string, slot?: { release(): void }): ProgressStream {
    this.streamSource ??= this.progressStreamSource();
    const stream = progressStream(id, this.streamSource);
    return slot ? stream.holdSlot(slot) : stream;
  }

  private progressStreamSource(): ProgressStreamSource {
    const { hub, queueInfo, publisher, resyncMs, log } = this.deps;
    return {
      hub,
      resyncMs,
      queuedTickMs: 1000,
      readCurrent: (generationId) => this.currentProgress(generationId),
      readSeqs: (generationIds) => publisher.readSeqs(generationIds),
      // While queued, any API process watching publishes the moving queue position; the script
      // refuses it once the generation has started, and skips it when the position is unchanged.
      onQueuedTick: async (latest) => {
        const q = await queueInfo.position(latest.generationId);
        if (!q) return;
        await publisher.publish(
          { ...latest, queuePosition: q.position, etaSeconds: q.etaSeconds },
          { onlyIfQueued: true, dedupe: `queue:${q.position}` },
        );
      },
      onError: (err, generationId) => log.warn({ err, generationId }, 'progress stream re-read failed'),
    };
  }

  /**
   * Cancels a generation that has not finished. A queued one never reaches the GPU; a running one is
   * stopped by its worker, which sees the CANCELLED row. Credits go back once.
   */
  async cancel(user: AuthUser, rawId: string): Promise<GenerationRow> {
    const row = await this.findVisible(user, rawId);
    if (!row) throw notFound('Generation', rawId);
    const ended = isTerminal(row.status)
      ? null
      : await endGenerationWithRefund(this.deps.db, row.id, 'cancel', {
          code: 'CANCELLED',
          message: 'The generation was cancelled.',
          retryable: false,
        }, this.deps.credits);
    if (ended) await queueWebhook(this.deps, row.id, 'CANCELLED');
    const final = ended ?? (await findGeneration(this.deps.db, row.id)) ?? row;
    // Publish the final state even when it was already recorded: if an earlier publish was lost
    // (a cancel whose publish failed, a worker that died between its two writes), this heals the
    // watchers and the running job. The publish script ignores it when the snapshot is final.
    if (isTerminal(final.status)) await this.deps.publisher.publish(await progressFromRow(this.deps.db, final));
    return final;
  }
}
