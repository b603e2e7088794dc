/**
 * What admins see of the machinery: each queue's figures (src/jobs/queueStats.ts) and the workers
 * alive now with their SD servers (src/jobs/presence.ts), both read from Redis. Resolvers call this;
 * anyone but an admin gets FORBIDDEN.
 */
import type { Redis } from 'ioredis';
import type { AuthUser } from '../auth/tokens';
import { DomainError } from '../errors';
import { listWorkers, type WorkerAnnouncement } from '../jobs/presence';
import { readQueueStats, type QueueStats } from '../jobs/queueStats';

export interface OperatorServiceDeps {
  redis: Redis;
  prefix: string;
  /** Every queue of the service, in the order they are listed. */
  queues: readonly string[];
}

const requireAdmin = (actor: AuthUser, what: string) => {
  if (!actor.isAdmin) throw new DomainError('FORBIDDEN', `Only an admin may read ${what}.`);
};

export class OperatorService {
  constructor(private readonly deps: OperatorServiceDeps) {}

  /** Every queue's depth, oldest waiting job and recent outcomes, in one Redis call. */
  async queues(actor: AuthUser): Promise<QueueStats[]> {
    requireAdmin(actor, 'the queues');
    return readQueueStats(this.deps.redis, this.deps.prefix, this.deps.queues);
  }

  /** The workers whose heartbeat has not expired, the longest running first. */
  async workers(actor: AuthUser): Promise<WorkerAnnouncement[]> {
    requireAdmin(actor, 'the workers');
    return listWorkers(this.deps.redis, this.deps.prefix);
  }
}
