/**
 * A worker's Stable Diffusion servers (APP_SD_API_URL may list several). A1111 runs one job at a
 * time, so a job first takes a free server with `acquire()`, which also takes that server's lease
 * in Redis: workers on several machines sharing one list never send two jobs to one server.
 *
 * Glossary:
 * - lease: `<prefix>:sd:lease:<url>` = a random token, SET NX PX SD_LEASE_TTL_MS, renewed every
 *   third of the TTL while the job runs (only while the token is still ours), deleted at the end
 *   (only if still ours). A lease that could not be renewed for a whole TTL, or that another worker
 *   holds now, is *lost*: its `signal` aborts so the job stops sending to that server before
 *   another worker may start there.
 * - up/down: a server that stopped answering (`markDown`, or a failed check) is taken out; the
 *   check every SD_SERVER_CHECK_INTERVAL_MS puts it back once it answers again. While no server is
 *   up, `acquire()` hands out a down one all the same, so the call fails and the job's retry rules
 *   apply, as with a single server.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { SdServerSetting } from '../config';
import type { Logger } from '../logger';
import { RedisScript } from '../redis';
import { sleep } from '../sleep';
import { SdClient, SdError } from './client';

export type SdServerState = 'up' | 'down';

/** One server as this worker sees it (the operators' `sdServers`). */
export interface FleetServerStatus {
  /** Without credentials. */
  url: string;
  state: SdServerState;
  /** Epoch ms of the last check or of the failure that took it out. */
  lastCheckedAt: number;
  /** Why it counts as down. */
  error: string | null;
  /** This worker runs a job there now. */
  busy: boolean;
}

export interface SdServerLease {
  readonly url: string;
  readonly client: SdClient;
  /** Aborts when the lease is lost: stop using the server at once. */
  readonly signal: AbortSignal;
  readonly lost: boolean;
  /** Stops renewing and deletes the lease if it is still ours. Never rejects; safe to call twice. */
  release(): Promise<void>;
  /**
   * After a call that did not end well (failed, aborted, cut): the server may still be running it.
   * Keeps the lease (renewing it) until the client's interrupts have ended and the server shows no
   * job, then releases it; if that is not seen within a third of SD_LEASE_TTL_MS (the server does not
   * answer, or keeps running), stops renewing and lets the lease run out by itself instead of handing
   * a busy server to the next job. Never rejects.
   */
  releaseWhenIdle(): Promise<void>;
}

export interface SdFleetOptions {
  servers: readonly SdServerSetting[];
  /** A connection the caller owns. */
  redis: Redis;
  prefix: string;
  leaseTtlMs: number;
  checkIntervalMs: number;
  waitPollMs: number;
  /** Bound of each check (HEALTH_TIMEOUT_MS). */
  checkTimeoutMs: number;
  /** Builds the client of one server (the worker passes its progress interval, logger, metrics). */
  client(setting: SdServerSetting): SdClient;
  log: Logger;
}

/** Deletes the lease only when it still holds our token. */
const RELEASE = new RedisScript<number>(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`, 1);
/** Extends the lease only when it still holds our token: 1 renewed, 0 lost. */
const RENEW = new RedisScript<number>(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`, 1);

export const sdLeaseKey = (prefix: string, url: string) => `${prefix}:sd:lease:${url}`;

/** Errors that say the server itself stopped answering (not that it refused or failed this job). */
export function isServerGone(err: unknown): boolean {
  return err instanceof SdError && (err.code === 'SD_UNREACHABLE' || err.code === 'SD_TIMEOUT');
}

interface Member {
  setting: SdServerSetting;
  client: SdClient;
  state: SdServerState;
  lastCheckedAt: number;
  error: string | null;
  busy: boolean;
}

export class SdFleet {
  private readonly members: Member[];
  private readonly redis: Redis;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> = Promise.resolve();
  private closed = false;
  /** Where the next search for a free server starts: spreads jobs over the list. */
  private next = 0;
  /** Wakes a waiting job before its next poll (a server was released or came back). */
  private readonly wakers = new Map<object, () => void>();
  private readonly leases = new Set<LeaseImpl>();
  /** This worker's jobs waiting for a server, first come first: their place in line. */
  private readonly waiting: object[] = [];

  constructor(private readonly opts: SdFleetOptions) {
    if (opts.servers.length === 0) throw new RangeError('an SD fleet needs at least one server');
    this.members = opts.servers.map((setting) => ({ setting, client: opts.client(setting), state: 'up', lastCheckedAt: 0, error: null, busy: false }));
    this.redis = opts.redis;
  }

  get size(): number {
    return this.members.length;
  }

  /** The client of the first server up (else the first listed): the one whose samplers the worker reads at start. */
  get first(): SdClient {
    return (this.members.find((m) => m.state === 'up') ?? this.members[0]!).client;
  }

  /** Checks every server once (resolves when done, never rejects), then keeps checking. */
  async start(): Promise<void> {
    await this.checkAll();
    this.schedule();
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.checking = this.checkAll().finally(() => this.schedule());
    }, this.opts.checkIntervalMs);
    this.timer.unref();
  }

  /** Asks each server this worker is not generating on for its samplers. */
  private async checkAll(): Promise<void> {
    await Promise.all(
      this.members.map(async (m) => {
        // A server running our job answers that job; its failure is noticed there.
        if (m.busy) return;
        try {
          await m.client.samplers(AbortSignal.timeout(this.opts.checkTimeoutMs));
          if (m.state === 'down') this.opts.log.info({ sd: m.setting.url }, 'sd server answers again; back in use');
          m.state = 'up';
          m.error = null;
          this.wakeHead();
        } catch (err) {
          if (m.state === 'up') this.opts.log.warn({ sd: m.setting.url, err: messageOf(err) }, 'sd server does not answer its check; taken out');
          m.state = 'down';
          m.error = messageOf(err);
        }
        m.lastCheckedAt = Date.now();
      }),
    );
  }

  /** True once any server answers (the worker's readiness). */
  async checkAny(signal: AbortSignal): Promise<void> {
    const errors: unknown[] = [];
    for (const m of this.members) {
      try {
        await m.client.samplers(signal);
        return;
      } catch (err) {
        errors.push(err);
      }
    }
    throw new Error(`no SD server answers: ${errors.map(messageOf).join('; ')}`);
  }

  /** Takes a server out after it stopped answering a job; a later check puts it back. */
  markDown(url: string, err: unknown): void {
    const m = this.members.find((x) => x.setting.url === url);
    if (!m) return;
    if (m.state === 'up') this.opts.log.warn({ sd: url, err: messageOf(err) }, 'sd server stopped answering; taken out until its check passes');
    m.state = 'down';
    m.error = messageOf(err);
    m.lastCheckedAt = Date.now();
  }

  status(): FleetServerStatus[] {
    return this.members.map((m) => ({ url: m.setting.url, state: m.state, lastCheckedAt: m.lastCheckedAt, error: m.error, busy: m.busy }));
  }

  /** Servers up by this worker's last look (the ETA divides the line among them). */
  upCount(): number {
    return this.members.filter((m) => m.state === 'up').length;
  }

  /**
   * Waits for a server that is free here and whose lease it can take, preferring those that are
   * up; `avoid` (a server that just failed this job) is taken only when nothing else is free.
   * While it waits, `onWait` is told its place among this worker's jobs waiting for a server
   * (1 = next), when it starts waiting and whenever that place changes. Rejects with SD_ABORTED
   * when `signal` aborts.
   */
  async acquire(signal: AbortSignal, opts: { avoid?: string; onWait?: (position: number) => void } = {}): Promise<SdServerLease> {
    const me = {};
    let told = 0;
    try {
      for (;;) {
        if (signal.aborted || this.closed) throw new SdError('SD_ABORTED', 'waiting for a free Stable Diffusion server was aborted.', { cause: signal.reason });
        // First come, first served among this worker's jobs: only the head of the line tries.
        if (this.waiting.length === 0 || this.waiting[0] === me) {
          const lease = await this.tryAcquire(opts.avoid);
          if (lease) return lease;
        }
        if (!this.waiting.includes(me)) this.waiting.push(me);
        const position = this.waiting.indexOf(me) + 1;
        if (position !== told) {
          told = position;
          opts.onWait?.(position);
        }
        await this.nap(me, signal);
      }
    } finally {
      const i = this.waiting.indexOf(me);
      if (i >= 0) this.waiting.splice(i, 1);
      // The next in line may try at once.
      this.wakeHead();
    }
  }

  /** Until the next poll, a server freed here (for the head of the line), or `signal`. */
  private nap(me: object, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        this.wakers.delete(me);
        resolve();
      };
      const t = setTimeout(done, this.opts.waitPollMs);
      signal.addEventListener('abort', done, { once: true });
      this.wakers.set(me, done);
    });
  }

  private wakeHead(): void {
    const head = this.waiting[0];
    if (head) this.wakers.get(head)?.();
  }

  private async tryAcquire(avoid: string | undefined): Promise<LeaseImpl | null> {
    const free = this.members.filter((m) => !m.busy);
    const anyUp = this.members.some((m) => m.state === 'up');
    // Nothing up: try the down ones too, so the job fails there and its retry rules apply.
    const usable = free.filter((m) => m.state === 'up' || !anyUp);
    const ordered = rotate(usable, this.next % Math.max(1, this.members.length), this.members);
    const preferred = [...ordered.filter((m) => m.setting.url !== avoid), ...ordered.filter((m) => m.setting.url === avoid)];
    for (const m of preferred) {
      if (m.busy) continue; // taken by another job of this worker while we awaited Redis
      m.busy = true;
      const token = randomBytes(12).toString('hex');
      const key = sdLeaseKey(this.opts.prefix, m.setting.url);
      let ok: string | null;
      // The lease cannot live longer than from the moment the SET is sent (see LeaseImpl's fence).
      const sentAt = performance.now();
      try {
        ok = await this.redis.set(key, token, 'PX', this.opts.leaseTtlMs, 'NX');
      } catch (err) {
        m.busy = false;
        throw new SdError('SD_UNREACHABLE', `could not take the lease of Stable Diffusion at ${m.setting.url} (Redis): ${messageOf(err)}`, { cause: err });
      }
      if (ok !== 'OK') {
        m.busy = false;
        continue;
      }
      this.next = this.members.indexOf(m) + 1;
      const lease = new LeaseImpl(this, m, key, token, this.opts, sentAt);
      this.leases.add(lease);
      return lease;
    }
    return null;
  }

  /** Called by a lease when it ends. */
  freed(lease: LeaseImpl, m: Member): void {
    this.leases.delete(lease);
    m.busy = false;
    this.wakeHead();
  }

  renew(key: string, token: string): Promise<number> {
    return RENEW.run(this.redis, key, token, this.opts.leaseTtlMs);
  }

  releaseKey(key: string, token: string): Promise<number> {
    return RELEASE.run(this.redis, key, token);
  }

  /** Stops checking and closes the clients (leases still held are released first). Safe to call twice. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.wakeHead();
    await this.checking;
    await Promise.all([...this.leases].map((l) => l.release()));
    await Promise.all(this.members.map((m) => m.client.close()));
  }
}

class LeaseImpl implements SdServerLease {
  private readonly controller = new AbortController();
  private renewTimer: NodeJS.Timeout | undefined;
  private fenceTimer: NodeJS.Timeout | undefined;
  private releasing: Promise<void> | undefined;
  private ended = false;

  constructor(
    private readonly fleet: SdFleet,
    private readonly member: Member,
    private readonly key: string,
    private readonly token: string,
    private readonly opts: SdFleetOptions,
    sentAt: number,
  ) {
    // Counted from before the SET was sent: the lease cannot have lived longer than that.
    this.fence(sentAt);
    this.scheduleRenew();
  }

  get url(): string {
    return this.member.setting.url;
  }
  get client(): SdClient {
    return this.member.client;
  }
  get signal(): AbortSignal {
    return this.controller.signal;
  }
  get lost(): boolean {
    return this.controller.signal.aborted;
  }

  /**
   * The lease surely holds until `since + TTL`. A little before that, unless a renewal has moved
   * the fence on, the lease counts as lost: Redis may drop the key then and let another worker in.
   */
  private fence(since: number): void {
    clearTimeout(this.fenceTimer);
    const margin = Math.min(1000, this.opts.leaseTtlMs / 10);
    const ms = Math.max(0, since + this.opts.leaseTtlMs - margin - performance.now());
    this.fenceTimer = setTimeout(() => this.lose(`its lease could not be renewed within SD_LEASE_TTL_MS (${this.opts.leaseTtlMs} ms)`), ms);
    this.fenceTimer.unref();
  }

  private scheduleRenew(): void {
    this.renewTimer = setTimeout(() => void this.renewOnce(), Math.max(1, Math.floor(this.opts.leaseTtlMs / 3)));
    this.renewTimer.unref();
  }

  private async renewOnce(): Promise<void> {
    if (this.ended) return;
    const sentAt = performance.now();
    try {
      const renewed = await this.fleet.renew(this.key, this.token);
      if (this.ended) return;
      if (renewed !== 1) return this.lose('another worker holds its lease now');
      this.fence(sentAt);
    } catch (err) {
      // Redis did not answer: keep trying; the fence decides when it is too late.
      this.opts.log.warn({ sd: this.url, err: messageOf(err) }, 'could not renew the lease of an sd server');
    }
    if (!this.ended) this.scheduleRenew();
  }

  private lose(why: string): void {
    if (this.ended || this.lost) return;
    this.opts.log.warn({ sd: this.url, why }, 'lost the lease of an sd server; its job stops there');
    clearTimeout(this.renewTimer);
    clearTimeout(this.fenceTimer);
    this.controller.abort(new SdError('SD_ABORTED', `the lease of Stable Diffusion at ${this.url} was lost: ${why}`));
  }

  releaseWhenIdle(): Promise<void> {
    if (this.lost || this.releasing) return this.release();
    return (async () => {
      const client = this.member.client;
      const until = performance.now() + this.opts.leaseTtlMs / 3;
      try {
        await client.settled();
        while (!this.lost && performance.now() < until) {
          if (await client.isIdle(AbortSignal.timeout(Math.max(1, Math.ceil(until - performance.now()))))) return await this.release();
          await sleep(this.opts.waitPollMs);
        }
      } catch (err) {
        // The server cannot be read: whether it still runs the call is unknown.
        this.opts.log.debug({ sd: this.url, err: messageOf(err) }, 'an sd server could not be read after an abandoned call');
      }
      if (this.lost) return await this.release();
      this.runOut();
    })();
  }

  /** Stops renewing and leaves the key to expire; the server counts as busy here until it surely has. */
  private runOut(): void {
    if (this.releasing) return;
    this.opts.log.warn({ sd: this.url }, 'an sd server did not show itself idle after an abandoned call; its lease runs out instead of being handed on');
    this.ended = true;
    clearTimeout(this.renewTimer);
    clearTimeout(this.fenceTimer);
    // Nothing is left to release: the key goes by itself, and so does the mark here, after its TTL.
    this.releasing = Promise.resolve();
    setTimeout(() => this.fleet.freed(this, this.member), this.opts.leaseTtlMs).unref();
  }

  release(): Promise<void> {
    this.releasing ??= (async () => {
      this.ended = true;
      clearTimeout(this.renewTimer);
      clearTimeout(this.fenceTimer);
      try {
        await this.fleet.releaseKey(this.key, this.token);
      } catch (err) {
        // It expires by itself after SD_LEASE_TTL_MS.
        this.opts.log.warn({ sd: this.url, err: messageOf(err) }, 'could not release the lease of an sd server; it expires by itself');
      } finally {
        this.fleet.freed(this, this.member);
      }
    })();
    return this.releasing;
  }
}

/** `items` (a subset of `all`, in `all`'s order) starting from the first at or after index `from` of `all`. */
function rotate<T>(items: T[], from: number, all: readonly T[]): T[] {
  const pos = (x: T) => (all.indexOf(x) - from + all.length) % all.length;
  return [...items].sort((a, b) => pos(a) - pos(b));
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
