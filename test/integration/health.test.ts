/**
 * Health: `/healthz` says the process is alive whatever its dependencies do; `/readyz` names the one
 * that is down, within HEALTH_TIMEOUT_MS, and recovers by itself when it returns. Redis here is a
 * private redis-server the test stops and starts again; the worker's checks add its SD server.
 */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readiness, startHealthServer, type Readiness } from '../../src/health';
import { WAIT_MS } from '../helpers/budgets';
import { freePort, startStack, type Stack } from '../helpers/stack';
import { startRedis, stopRedis } from '../helpers/redisServer';
import { until } from '../helpers/wait';

const TIMEOUT_MS = 500;


async function ready(url: string): Promise<{ status: number; body: Readiness }> {
  const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(WAIT_MS) });
  return { status: res.status, body: (await res.json()) as Readiness };
}

describe('health', () => {
  let redisPort: number;
  let redis: ChildProcess;
  let stack: Stack;
  beforeAll(async () => {
    redisPort = await freePort();
    redis = await startRedis(redisPort);
    stack = await startStack({ env: { REDIS_URL: `redis://127.0.0.1:${redisPort}/0`, HEALTH_TIMEOUT_MS: String(TIMEOUT_MS) } });
  });
  afterAll(async () => {
    await stack?.close();
    if (redis) await stopRedis(redis);
  });

  it('is ready with every dependency up, on the API and on a worker (its SD server included)', async () => {
    expect((await fetch(`${stack.baseUrl}/healthz`)).status).toBe(200);
    const api = await ready(stack.baseUrl);
    expect(api.status).toBe(200);
    expect(Object.keys(api.body.checks).sort()).toEqual(['database', 'migrations', 'redis']);
    // /health is the older name of /readyz.
    expect((await fetch(`${stack.baseUrl}/health`)).status).toBe(200);

    const server = await startHealthServer(stack.worker!.healthChecks, TIMEOUT_MS, 0, '127.0.0.1');
    try {
      const worker = await ready(server.url);
      expect(worker.status).toBe(200);
      expect(Object.keys(worker.body.checks).sort()).toEqual(['database', 'migrations', 'redis', 'sd']);
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      expect((await fetch(`${server.url}/nothing`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });

  it('gives up on a check that never answers at its timeout, and reports it down', async () => {
    const result = await readiness([{ name: 'silent', run: () => new Promise(() => {}) }, { name: 'quick', run: async () => 'ok' }], TIMEOUT_MS);
    expect(result).toMatchObject({ ok: false, checks: { silent: { ok: false, error: `no answer within ${TIMEOUT_MS} ms` }, quick: { ok: true } } });
  });

  it('names Redis as down within its timeout while it is stopped, stays alive, and recovers when it returns', async () => {
    await stopRedis(redis);
    const down = await ready(stack.baseUrl);
    expect(down.status).toBe(503);
    expect(down.body.checks.redis).toMatchObject({ ok: false });
    expect(down.body.checks.database).toMatchObject({ ok: true });
    expect((await fetch(`${stack.baseUrl}/healthz`)).status).toBe(200);
    // The worker's checks say the same.
    const worker = await readiness(stack.worker!.healthChecks, TIMEOUT_MS);
    expect(worker.checks.redis).toMatchObject({ ok: false });

    redis = await startRedis(redisPort);
    await until(async () => (await ready(stack.baseUrl)).status === 200, '/readyz to recover');
    expect((await readiness(stack.worker!.healthChecks, TIMEOUT_MS)).ok).toBe(true);
  });
});
