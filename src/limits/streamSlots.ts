/**
 * Open generationProgress streams: at most MAX_SUBSCRIPTIONS_PER_USER per user over every API
 * process, at most MAX_SUBSCRIPTIONS_PER_PROCESS in this one; 0 turns either off.
 *
 * Each user's open streams are a sorted set in Redis (stream id → its last heartbeat). A stream
 * takes its slot before it starts (one script: drop stale slots, count, add) and gives it back when
 * it ends (ZREM). This process renews the slots of all its open streams every
 * SUBSCRIPTION_HEARTBEAT_MS (one script per user, pipelined); a slot not renewed for three
 * heartbeats belongs to a process that died, and the next acquire drops it. So a crashed replica
 * holds its users' slots for at most three heartbeats.
 *
 * Redis unreachable: the per-user count fails OPEN (the stream is allowed, logged once per outage),
 * and the slot is added by the next heartbeat once Redis answers. The per-process count needs no
 * Redis.
 */
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Config } from '../config';
import { rateLimited, serviceUnavailable } from '../errors';
import type { Logger } from '../logger';
import { RedisScript } from '../redis';
import { OutageLog } from './outage';

/** Held by one open stream; `release()` (safe to call twice) gives the slot back. */
export interface StreamSlot {
  release(): void;
}

/** A slot lives this many heartbeats without one. */
const STALE_AFTER_BEATS = 3;
/** Per-process refusals: another replica may have room, so soon. */
const PROCESS_FULL_RETRY_S = 5;

const script = (name: string) => readFileSync(new URL(`./scripts/${name}.lua`, import.meta.url), 'utf8');

/** Key: the user's slots. Arguments: the stream's id, the most, staleMs. 1 taken, 0 full. */
const ACQUIRE = new RedisScript<number>(script('acquireStreamSlot'), 1);
/** Key: the user's slots. Arguments: staleMs, then the ids to renew. */
const TOUCH = new RedisScript<number>(script('touchStreamSlots'), 1);

class Slot implements StreamSlot {
  private released = false;
  constructor(
    private readonly owner: StreamSlots,
    readonly userId: string,
    readonly id: string,
    /** Whether it is counted in Redis (the per-user limit is on). */
    readonly shared: boolean,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    this.owner.released(this);
  }
}

export class StreamSlots {
  /** Streams of this process holding (or asking for) a slot. */
  private open = 0;
  /** Stream ids held in Redis, by user: what the heartbeat renews. */
  private readonly held = new Map<string, Set<string>>();
  private readonly processId = randomBytes(6).toString('hex');
  private seq = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Set by close(): a slot Redis grants after it is not kept. */
  private closed = false;
  private readonly staleMs: number;
  private readonly outage: OutageLog;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly settings: Pick<Config['rateLimits'], 'subscriptionsPerUser' | 'subscriptionsPerProcess' | 'subscriptionHeartbeatMs'>,
    private readonly log: Logger,
  ) {
    this.staleMs = settings.subscriptionHeartbeatMs * STALE_AFTER_BEATS;
    this.outage = new OutageLog(log, 'open streams are not counted per user');
  }

  /** Open streams of this process. */
  get openCount(): number {
    return this.open;
  }

  private key(userId: string): string {
    return `${this.prefix}:limit:streams:${userId}`;
  }

  /** A slot for a new stream of the user, or RATE_LIMITED (before the stream starts). */
  async acquire(userId: string): Promise<StreamSlot> {
    const { subscriptionsPerProcess: perProcess, subscriptionsPerUser: perUser } = this.settings;
    if (perProcess > 0 && this.open >= perProcess) {
      throw rateLimited(`This server has ${perProcess} open streams, its most; try again in a moment.`, PROCESS_FULL_RETRY_S);
    }
    // Counted before the await, so that streams asking at once cannot all pass the check.
    this.open++;
    const slot = new Slot(this, userId, `${this.processId}:${++this.seq}`, perUser > 0);
    if (!slot.shared) return slot;
    let taken = true;
    try {
      taken = (await ACQUIRE.run(this.redis, this.key(userId), slot.id, perUser, this.staleMs)) === 1;
      this.outage.ok();
    } catch (err) {
      this.outage.failed(err, 'open streams per user');
    }
    if (this.closed) {
      // close() ran while Redis answered: no heartbeat will renew this entry, which goes stale by itself.
      this.open--;
      throw serviceUnavailable('This server is shutting down; open the stream again.');
    }
    if (!taken) {
      this.open--;
      // A stream of a process that died holds its slot up to staleMs: the longest wait that surely helps.
      throw rateLimited(`You have ${perUser} open progress streams, the most at once; close one first.`, this.staleMs / 1000);
    }
    let ids = this.held.get(userId);
    if (!ids) this.held.set(userId, (ids = new Set()));
    ids.add(slot.id);
    this.timer ??= setInterval(() => void this.heartbeat(), this.settings.subscriptionHeartbeatMs).unref();
    return slot;
  }

  /** From Slot.release(). */
  released(slot: Slot): void {
    this.open--;
    if (!slot.shared) return;
    const ids = this.held.get(slot.userId);
    ids?.delete(slot.id);
    if (ids?.size === 0) this.held.delete(slot.userId);
    // Not awaited: a stream ends at once. Sent on the same connection after any heartbeat already
    // sent, so a renewal in flight cannot bring the slot back; if Redis is away it goes stale instead.
    this.redis.zrem(this.key(slot.userId), slot.id).then(
      () => this.outage.ok(),
      (err: unknown) => this.outage.failed(err, 'open streams per user'),
    );
  }

  private async heartbeat(): Promise<void> {
    if (this.held.size === 0) return;
    try {
      await Promise.all([...this.held].map(([userId, ids]) => TOUCH.run(this.redis, this.key(userId), this.staleMs, ...ids)));
      this.outage.ok();
    } catch (err) {
      this.outage.failed(err, 'open streams per user');
    }
  }

  /** Stops the heartbeat and gives back the slots still held (the streams should have ended first). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.timer = undefined;
    const left = [...this.held];
    this.held.clear();
    await Promise.allSettled(left.map(([userId, ids]) => this.redis.zrem(this.key(userId), ...ids)));
    if (left.length > 0) this.log.debug({ users: left.length }, 'stream slots given back at close');
  }
}
