/**
 * The admins' GraphQL view: `queues` (depth, the oldest waiting job, what ended in the last hour,
 * counted by the workers) and `workers` (each announces itself with an expiring heartbeat, with its
 * SD server's state, and is gone once it stops); FORBIDDEN for anyone else.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserWithToken } from '../../src/auth/tokens';
import { createLogger } from '../../src/logger';
import { workerKey } from '../../src/jobs/presence';
import { createWorker } from '../../workers/worker';
import type { OperatorsQuery } from '../gql/graphql';
import { codeOf, gql } from '../helpers/graphql';
import { startStack, type Stack } from '../helpers/stack';
import { until } from '../helpers/wait';
import { OperatorsDoc } from './documents';
import { events, generate, watch } from './helpers';

const TTL_MS = 1500;

describe('queues and workers for admins', () => {
  let stack: Stack;
  let admin: string;
  beforeAll(async () => {
    stack = await startStack({ env: { WORKER_HEARTBEAT_INTERVAL_MS: '100', WORKER_HEARTBEAT_TTL_MS: String(TTL_MS) } });
    ({ token: admin } = await createUserWithToken(stack.tdb.db, { email: 'ops@example.com', credits: 0, isAdmin: true }));
  });
  afterAll(async () => {
    await stack?.close();
  });

  const read = async (token = admin): Promise<OperatorsQuery> => {
    const res = await gql(stack.baseUrl, OperatorsDoc, {}, token);
    expect(res.errors).toBeUndefined();
    return res.data!;
  };
  const queue = (q: OperatorsQuery, name: string) => q.queues.find((x) => x.name === name)!;

  it('shows a running worker with its heartbeat, slots and SD server, and the queues it emptied', async () => {
    const worker = stack.worker!;
    const before = await read();
    expect(before.workers).toHaveLength(1);
    const w = before.workers[0]!;
    const { slots } = stack.config.worker;
    expect(w).toMatchObject({
      id: worker.id,
      queues: ['high_priority', 'normal_priority', 'low_priority', 'webhooks'],
      slots: slots.high_priority + slots.normal_priority + slots.low_priority + slots.webhooks,
      busy: 0,
      sdServer: { url: stack.env.APP_SD_API_URL!.replace(/\/+$/, ''), state: 'UP', error: null },
      sdServers: [{ url: stack.env.APP_SD_API_URL!.replace(/\/+$/, ''), state: 'UP', busy: false, error: null }],
    });
    expect(Date.parse(w.lastSeenAt)).toBeGreaterThanOrEqual(Date.parse(w.startedAt));
    // The heartbeat is renewed: lastSeenAt moves on, and the key expires by itself within its TTL.
    await until(async () => (await read()).workers[0]!.lastSeenAt !== w.lastSeenAt, 'the next heartbeat');
    const pttl = await stack.redis.pttl(workerKey(stack.config.redis.prefix, worker.id));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(TTL_MS);

    expect(before.queues.map((q) => q.name)).toEqual(['high_priority', 'normal_priority', 'low_priority', 'webhooks']);
    expect(queue(before, 'high_priority')).toMatchObject({ waiting: 0, active: 0, succeededLastHour: 0, failedLastHour: 0, oldestWaitingSeconds: 0 });

    const { token } = await stack.createUser(3);
    const ok = await generate(stack, token, { steps: 3, width: 64, height: 64 });
    expect(events(await watch(stack.baseUrl, ok.id, token).done).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    stack.sim.failNext('bad-request');
    const bad = await generate(stack, token, { steps: 3, width: 64, height: 64 });
    expect(events(await watch(stack.baseUrl, bad.id, token).done).at(-1)).toMatchObject({ status: 'FAILED' });
    // Counted by the worker in batches, off the jobs' path: read once they have landed.
    await until(async () => queue(await read(), 'high_priority').failedLastHour === 1, 'the failure to be counted');
    await until(async () => queue(await read(), 'normal_priority').succeededLastHour === 1, 'the upload to be counted');
    const after = await read();
    expect(queue(after, 'high_priority')).toMatchObject({ succeeded: 1, failed: 1, succeededLastHour: 1, failedLastHour: 1, waiting: 0 });
    expect(queue(after, 'normal_priority')).toMatchObject({ succeeded: 1, failed: 0 });
  });

  it('reports a worker whose SD server does not answer as DOWN', async () => {
    const log = createLogger('silent');
    const blind = createWorker({ config: stack.config, db: stack.tdb.db, log, storage: stack.storage, sdUrl: 'http://user:secret@127.0.0.1:9/', queues: ['high_priority'] });
    try {
      await blind.start();
      const w = (await read()).workers.find((x) => x.id === blind.id);
      expect(w).toMatchObject({ queues: ['high_priority'], slots: stack.config.worker.concurrency, sdServer: { url: 'http://127.0.0.1:9', state: 'DOWN' } });
      expect(w!.sdServer!.error).toBeTruthy();
      expect(w!.sdServers).toMatchObject([{ url: 'http://127.0.0.1:9', state: 'DOWN', busy: false }]);
    } finally {
      await blind.close();
    }
    expect((await read()).workers.map((x) => x.id)).toEqual([stack.worker!.id]);
  });

  it('FORBIDDEN for a user who is not an admin, UNAUTHENTICATED without a token', async () => {
    const { token } = await stack.createUser(0);
    for (const t of [token, undefined]) {
      const res = await gql(stack.baseUrl, OperatorsDoc, {}, t);
      expect(res.data).toBeNull();
      expect(codeOf(res)).toBe(t ? 'FORBIDDEN' : 'UNAUTHENTICATED');
    }
  });

  it('drops a worker once it stops; a job then waits, and its wait is shown', async () => {
    const worker = stack.worker!;
    await worker.close();
    // A clean shutdown removes the announcement at once, without waiting for its TTL.
    expect((await read()).workers).toEqual([]);
    const { token } = await stack.createUser(1);
    await generate(stack, token, { steps: 3, width: 64, height: 64 });
    expect(queue(await read(), 'high_priority')).toMatchObject({ waiting: 1, active: 0 });
    await until(async () => queue(await read(), 'high_priority').oldestWaitingSeconds > 0, 'the waiting job to age');
  });
});
