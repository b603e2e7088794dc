/**
 * What the API does with generations: create (reserve credits, insert, enqueue), read, stream and
 * cancel. Resolvers call this; it knows nothing of GraphQL except the public error kinds.
 */
import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { AuthUser } from '../auth/tokens';
import { PublicError } from '../errors';
import type { JobProducer } from '../jobs/queues';
import type { Logger } from '../logger';
import type { ProgressEvent } from '../progress/event';
import type { ProgressHub } from '../progress/hub';
import type { ProgressPublisher } from '../progress/publisher';
import { progressStream } from '../progress/stream';
import type { GenerationInput } from './input';
import { progressFromRow } from './progressOf';
import type { QueueInfo } from './queueInfo';
import type { GenerationRow } from './repository';
import { endGenerationWithRefund, findGeneration, insertGenerationReservingCredits } from './repository';
import { isTerminal } from './status';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The one place an incoming generation id is parsed; a malformed id is simply not found. */
export const parseGenerationId = (raw: string): string | null => (UUID.test(raw) ? raw.toLowerCase() : null);

export interface GenerationServiceDeps {
  db: Knex;
  producer: JobProducer;
  publisher: ProgressPublisher;
  hub: ProgressHub;
  queueInfo: QueueInfo;
  resyncMs: number;
  log: Logger;
}

export class GenerationService {
  constructor(private readonly deps: GenerationServiceDeps) {}

  async create(user: AuthUser, input: GenerationInput): Promise<GenerationRow> {
    const { db, producer, log } = this.deps;
    const id = randomUUID();
    const row = await insertGenerationReservingCredits(db, { id, userId: user.id, input });
    if (!row) {
      throw new PublicError(
        'INSUFFICIENT_CREDITS',
        `Not enough photo credits: this generation needs ${input.batchSize}.`,
        { required: input.batchSize },
      );
    }
    try {
      await producer.enqueue('generateImage', id, { generationId: id });
    } catch (err) {
      // The job could not be queued: end the generation now and give the credits back, so a
      // Redis outage never keeps a user's credits.
      log.error({ err, generationId: id }, 'enqueue failed; refunding');
      await endGenerationWithRefund(db, id, 'FAILED', {
        code: 'ENQUEUE_FAILED',
        message: 'The job queue is unavailable; your credits were returned. Try again shortly.',
        retryable: true,
      });
      throw err;
    }
    return row;
  }

  /** The generation if `user` may see it (owner or admin), else null: others' ids look missing. */
  async findVisible(user: AuthUser, rawId: string): Promise<GenerationRow | null> {
    const id = parseGenerationId(rawId);
    if (!id) return null;
    const row = await findGeneration(this.deps.db, id);
    if (!row || (row.user_id !== user.id && !user.isAdmin)) return null;
    return row;
  }

  /** The current state: the Redis snapshot while it lives, else what Postgres recorded. */
  async currentProgress(id: string): Promise<ProgressEvent | null> {
    const snapshot = await this.deps.publisher.read(id);
    if (snapshot) return snapshot;
    const row = await findGeneration(this.deps.db, id);
    if (!row) return null;
    const event = await progressFromRow(this.deps.db, row);
    if (event.status === 'QUEUED') {
      const q = await this.deps.queueInfo.position(id);
      if (q) return { ...event, queuePosition: q.position, etaSeconds: q.etaSeconds };
    }
    return event;
  }

  stream(id: string) {
    const { hub, queueInfo, publisher, resyncMs, log } = this.deps;
    return progressStream(id, {
      hub,
      resyncMs,
      queuedTickMs: 1000,
      readCurrent: () => this.currentProgress(id),
      // While queued, any API process watching publishes the moving queue position; the script
      // refuses it once the generation has started, and skips it when the position is unchanged.
      onQueuedTick: async (latest) => {
        const q = await queueInfo.position(id);
        if (!q) return;
        await publisher.publish(
          { ...latest, queuePosition: q.position, etaSeconds: q.etaSeconds },
          { onlyIfQueued: true, dedupe: `queue:${q.position}` },
        );
      },
      onError: (err) => log.warn({ err, generationId: id }, 'progress stream re-read failed'),
    });
  }

  /**
   * Cancels a generation that has not finished. A queued one never reaches the GPU; a running one is
   * stopped by its worker, which sees the CANCELLED row. Credits go back once.
   */
  async cancel(user: AuthUser, rawId: string): Promise<GenerationRow> {
    const row = await this.findVisible(user, rawId);
    if (!row) throw new PublicError('NOT_FOUND', `Generation ${rawId} was not found.`);
    if (isTerminal(row.status)) return row;
    const ended = await endGenerationWithRefund(this.deps.db, row.id, 'CANCELLED', {
      code: 'CANCELLED',
      message: 'The generation was cancelled.',
      retryable: false,
    });
    const final = ended ?? (await findGeneration(this.deps.db, row.id)) ?? row;
    if (ended) {
      await this.deps.publisher.publish({ ...(await progressFromRow(this.deps.db, ended)) });
    }
    return final;
  }
}
