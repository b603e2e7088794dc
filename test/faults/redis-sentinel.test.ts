/**
 * A Redis primary failover under load (issue 13): a primary, a replica and three sentinels started
 * here from `redis-server` on loopback ports; the API (a spawned `node` process) and a worker find
 * the primary through the sentinels (REDIS_SENTINELS). The primary is killed while clients submit
 * generateImage in a loop and progress streams are open; the sentinels promote the replica. Every
 * generation accepted before, during or after the failover SUCCEEDED, each charged once (a job the
 * failover lost, written to the old primary but not yet to the replica, is queued again by the
 * stranded sweep); every request was answered, with an id or SERVICE_UNAVAILABLE; the open streams
 * got their terminal state.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESSES_TEST_MS } from '../helpers/budgets';
import { expectLoadSettled, LOAD_ENV, startGenerationLoad, watchLatest } from '../helpers/generationLoad';
import { subscribe, type Subscription } from '../helpers/graphql';
import { startRedis, startSentinel, stopRedis } from '../helpers/redisServer';
import { freePort, startStack, type Stack } from '../helpers/stack';
import { until } from '../helpers/wait';
import { graphql } from '../gql';

const NAME = 'sdjobs-test';
const CREDITS = 10_000;

const ProgressDoc = graphql(`
  subscription FailoverProgress($id: ID!) {
    generationProgress(id: $id) {
      status
    }
  }
`);

describe('a Redis primary failover under load, with Sentinel', () => {
  let dir: string;
  const servers: ChildProcess[] = [];
  const sentinelClients: Redis[] = [];
  let primary: ChildProcess;
  let primaryPort: number;
  let replicaPort: number;
  let stack: Stack;
  let api: { baseUrl: string; stop(): Promise<void> };

  /** What every sentinel says the primary is (host:port), or null. */
  const primaries = () =>
    Promise.all(
      sentinelClients.map(async (s) => {
        const addr = (await s.call('SENTINEL', 'get-master-addr-by-name', NAME).catch(() => null)) as [string, string] | null;
        return addr ? `${addr[0]}:${addr[1]}` : null;
      }),
    );

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-sentinel-'));
    primaryPort = await freePort();
    primary = await startRedis(primaryPort);
    servers.push(primary);
    replicaPort = await freePort();
    // Started before the sentinels, so their first look at the primary lists it.
    servers.push(await startRedis(replicaPort, { replicaOf: primaryPort }));
    const sentinelPorts = [await freePort(), await freePort(), await freePort()];
    for (const port of sentinelPorts) {
      servers.push(await startSentinel(port, { name: NAME, primaryPort, quorum: 2, downAfterMs: 1000, dir }));
      sentinelClients.push(new Redis({ host: '127.0.0.1', port, lazyConnect: false }));
    }
    // A failover needs sentinels that know the replica and each other (they meet over the primary).
    await until(
      async () => {
        const known = await Promise.all(
          sentinelClients.map(async (s) => {
            const replicas = (await s.call('SENTINEL', 'replicas', NAME)) as unknown[];
            const others = (await s.call('SENTINEL', 'sentinels', NAME)) as unknown[];
            return replicas.length === 1 && others.length === 2;
          }),
        );
        return known.every(Boolean);
      },
      'the sentinels to know the replica and each other',
      PROCESSES_TEST_MS / 4,
    );
    stack = await startStack({
      env: {
        // With sentinels REDIS_URL gives only the database; the address comes from them.
        REDIS_URL: 'redis://127.0.0.1:1/0',
        REDIS_SENTINELS: sentinelPorts.map((p) => `127.0.0.1:${p}`).join(','),
        REDIS_SENTINEL_NAME: NAME,
        REDIS_COMMAND_TIMEOUT_MS: '1000',
        // Jobs written to the old primary after its last replication are lost; they are queued again soon.
        STRANDED_SWEEP_INTERVAL_MS: '1000',
        STRANDED_MIN_AGE_S: '5',
        ...LOAD_ENV,
      },
    });
    api = await stack.spawnApi();
  }, PROCESSES_TEST_MS);
  afterAll(async () => {
    await api?.stop();
    await stack?.close();
    for (const s of sentinelClients) s.disconnect();
    for (const s of servers) await stopRedis(s);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('keeps every accepted generation, each charged once, and ends the open streams', { timeout: PROCESSES_TEST_MS }, async () => {
    expect(await primaries()).toEqual(Array(3).fill(`127.0.0.1:${primaryPort}`));
    const users = await Promise.all([0, 1, 2].map(() => stack.createUser(CREDITS)));
    const load = startGenerationLoad(() => api.baseUrl, users.map((u) => u.token));
    let streams: Array<Subscription<unknown>> = [];
    try {
      await until(() => load.accepted().length >= 6, 'generations to be accepted before the failover');
      const watched = watchLatest(load, 3, (id, client) => subscribe(api.baseUrl, ProgressDoc, { id }, users[client]!.token));
      streams = watched.streams;
      await watched.listening;

      await stopRedis(primary);
      const killedAt = performance.now();
      await until(async () => (await primaries()).every((p) => p === `127.0.0.1:${replicaPort}`), 'the sentinels to promote the replica', PROCESSES_TEST_MS / 4);
      const promotedAt = performance.now();
      await until(() => load.answers.filter((a) => a.sentAt > promotedAt && a.id).length >= 6, 'generations to be accepted on the new primary');
      await load.stop();

      // Every request was answered, with an id or SERVICE_UNAVAILABLE (no 500, nothing masked).
      expect(load.answers.filter((a) => a.status !== 200 || (!a.id && a.code !== 'SERVICE_UNAVAILABLE'))).toEqual([]);
      const refused = load.answers.filter((a) => a.code === 'SERVICE_UNAVAILABLE');
      expect(refused.filter((a) => a.retryAfter !== '5')).toEqual([]);
      if (process.env.FAULT_REPORT) {
        const slowest = Math.max(0, ...refused.map((a) => a.answeredAt - a.sentAt));
        console.info(
          `failover: promoted ${Math.round(promotedAt - killedAt)} ms after the kill; ${refused.length} refused (slowest ${Math.round(slowest)} ms), ${load.accepted().length} accepted`,
        );
      }

      // Every accepted generation finishes, each charged once; the open streams end with it.
      await expectLoadSettled(stack.tdb.db, users, CREDITS, load, streams, PROCESSES_TEST_MS / 2);
    } finally {
      for (const s of streams) s.close();
      await load.stop();
    }
  });
});
