/**
 * Workers announce themselves in Redis, so operators can see who is consuming what: each worker
 * writes `<prefix>:worker:<id>` (JSON, expiring after WORKER_HEARTBEAT_TTL_MS) every
 * WORKER_HEARTBEAT_INTERVAL_MS and lists its id in the sorted set `<prefix>:workers` (scored by
 * when the announcement expires), in one MULTI per beat. A clean shutdown removes both; a worker
 * that dies simply stops beating and drops out when its key expires. A worker that generates also
 * announces its SD servers as its fleet last checked them (src/sd/fleet.ts), and adds the ones that
 * are up to `<prefix>:sd:up` (a sorted set of URLs scored by when that news expires): the queue's
 * ETA divides the line among them.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import type { FleetServerStatus, SdServerState } from '../sd/fleet';

export type { SdServerState };
/** One SD server as a worker announces it: without credentials; `busy` = that worker runs a job there. */
export type SdServerStatus = FleetServerStatus;

/** The SD servers some live worker found up: URL → epoch ms until which that holds. */
export const sdUpKey = (prefix: string) => `${prefix}:sd:up`;

export interface WorkerAnnouncement {
  id: string;
  host: string;
  queues: string[];
  /** Jobs it may run at once, all its queues together. */
  slots: number;
  /** Jobs it runs now. */
  busy: number;
  /** Epoch ms. */
  startedAt: number;
  lastSeenAt: number;
  /** The first of its SD servers (the field from before fleets); null for a worker that does not generate. */
  sdServer: SdServerStatus | null;
  /** Every SD server it generates with, in its list's order; empty for a worker that does not generate. */
  sdServers: SdServerStatus[];
}

export const workersKey = (prefix: string) => `${prefix}:workers`;
export const workerKey = (prefix: string, id: string) => `${prefix}:worker:${id}`;

/** A worker's id: its host, its pid and a few random characters (tests run several in one process). */
export const newWorkerId = () => `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;

export interface HeartbeatOptions {
  /** A connection the caller owns. */
  redis: Redis;
  prefix: string;
  id: string;
  queues: readonly string[];
  slots: number;
  /** Jobs running now, read at each beat. */
  busy(): number;
  intervalMs: number;
  ttlMs: number;
  /** Its SD servers as last checked, read at each beat, when the worker generates. */
  sd?: () => SdServerStatus[];
  log: Logger;
}

export class WorkerHeartbeat {
  private readonly startedAt = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  private stopped = false;
  private failing = false;
  private closing: Promise<void> | undefined;

  constructor(private readonly opts: HeartbeatOptions) {}

  /** Announces the worker (resolves after the first beat, which never rejects) and keeps beating. */
  start(): Promise<void> {
    return this.beat();
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    void this.beat();
  };

  private beat(): Promise<void> {
    this.beating = (async () => {
      const o = this.opts;
      const sdServers = o.sd?.() ?? [];
      if (this.stopped) return;
      const now = Date.now();
      const announcement: WorkerAnnouncement = {
        id: o.id,
        host: os.hostname(),
        queues: [...o.queues],
        slots: o.slots,
        busy: o.busy(),
        startedAt: this.startedAt,
        lastSeenAt: now,
        sdServer: sdServers[0] ?? null,
        sdServers,
      };
      const up = sdServers.filter((s) => s.state === 'up').flatMap((s) => [now + o.ttlMs, s.url]);
      try {
        const multi = o.redis.multi();
        if (up.length > 0) multi.zadd(sdUpKey(o.prefix), ...up);
        await multi
          .zremrangebyscore(sdUpKey(o.prefix), '-inf', now)
          .set(workerKey(o.prefix, o.id), JSON.stringify(announcement), 'PX', o.ttlMs)
          .zadd(workersKey(o.prefix), now + o.ttlMs, o.id)
          .zremrangebyscore(workersKey(o.prefix), '-inf', now)
          .exec();
        if (this.failing) o.log.info('worker heartbeat written again');
        this.failing = false;
      } catch (err) {
        if (!this.failing) o.log.warn({ err }, 'could not write the worker heartbeat; trying again at the next beat');
        this.failing = true;
      }
    })().finally(() => {
      if (!this.stopped) {
        this.timer = setTimeout(this.tick, this.opts.intervalMs);
        this.timer.unref();
      }
    });
    return this.beating;
  }

  /** Stops beating and removes the announcement. Safe to call twice; never rejects. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopped = true;
      clearTimeout(this.timer);
      await this.beating;
      const { redis, prefix, id, log } = this.opts;
      await redis
        .multi()
        .del(workerKey(prefix, id))
        .zrem(workersKey(prefix), id)
        .exec()
        .catch((err: unknown) => log.warn({ err }, 'could not remove the worker heartbeat; it expires by itself'));
    })();
    return this.closing;
  }
}

function parseAnnouncement(raw: string | null): WorkerAnnouncement | null {
  if (raw === null) return null;
  try {
    const v = JSON.parse(raw) as unknown;
    if (typeof v !== 'object' || v === null) return null;
    const a = v as WorkerAnnouncement;
    if (typeof a.id !== 'string' || !Array.isArray(a.queues) || typeof a.lastSeenAt !== 'number') return null;
    // Announced by a worker from before fleets: its one server is its list.
    if (!Array.isArray(a.sdServers)) a.sdServers = a.sdServer ? [{ ...a.sdServer, busy: a.sdServer.busy ?? false }] : [];
    return a;
  } catch {
    return null;
  }
}

/** The workers whose heartbeat has not expired, oldest first. */
export async function listWorkers(redis: Redis, prefix: string, now = Date.now()): Promise<WorkerAnnouncement[]> {
  const ids = await redis.zrangebyscore(workersKey(prefix), now, '+inf');
  if (ids.length === 0) return [];
  const raw = await redis.mget(ids.map((id) => workerKey(prefix, id)));
  return raw
    .map(parseAnnouncement)
    .filter((a): a is WorkerAnnouncement => a !== null)
    .sort((a, b) => a.startedAt - b.startedAt || a.id.localeCompare(b.id));
}
