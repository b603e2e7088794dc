/**
 * The queue dashboard at /admin/queues over the whole service: who may open it (an admin's token,
 * as Bearer or as the sign-in form's cookie), what retry and remove do (the service's rules, not
 * arena's), and that a dashboard that fails, even one whose process dies, leaves the API answering.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserWithToken } from '../../src/auth/tokens';
import { queueKeys } from '../../src/jobs/consumer';
import { startStack, type Stack } from '../helpers/stack';
import { storedState } from '../helpers/storedJobs';
import { until } from '../helpers/wait';
import { events, generate, watch } from './helpers';

const BASE = '/admin/queues';

describe('the queue dashboard', () => {
  const lines: string[] = [];
  let stack: Stack;
  let admin: { userId: string; token: string };
  let user: { userId: string; token: string };
  /** The log lines of an admin action taken from the dashboard. */
  const adminLines = (action: string) => lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.action === action && 'adminEmail' in l);
  const open = (path: string, init: RequestInit = {}) => fetch(`${stack.baseUrl}${BASE}${path}`, { redirect: 'manual', ...init });
  const asAdmin = (path: string, init: RequestInit = {}) =>
    open(path, { ...init, headers: { authorization: `Bearer ${admin.token}`, ...(init.headers as Record<string, string> | undefined) } });

  beforeAll(async () => {
    // One generation slot: with the simulator paused, a second generation waits behind the first.
    stack = await startStack({ env: { LOG_LEVEL: 'debug', WORKER_CONCURRENCY: '1' }, logLines: lines });
    admin = await createUserWithToken(stack.tdb.db, { email: 'ops@example.com', credits: 0, isAdmin: true });
    user = await stack.createUser(10);
  });
  afterAll(async () => {
    stack?.sim.resume();
    await stack?.close();
  });

  it('asks for a token, refuses one that is not an admin, and keeps an admin signed in with a strict cookie', async () => {
    const anonymous = await open('');
    expect(anonymous.status).toBe(401);
    expect(await anonymous.text()).toContain('name="token"');
    expect((await open('/login')).status).toBe(200);

    const notAdmin = await open('', { headers: { authorization: `Bearer ${user.token}` } });
    expect(notAdmin.status).toBe(403);
    expect(await notAdmin.text()).toContain('Admins only');
    const wrong = await open('/login', { method: 'POST', body: new URLSearchParams({ token: 'sdk_nope' }) });
    expect(wrong.status).toBe(401);
    expect((await open('/login', { method: 'POST', body: new URLSearchParams({ token: user.token }) })).status).toBe(403);

    const signedIn = await open('/login', { method: 'POST', body: new URLSearchParams({ token: admin.token }) });
    expect(signedIn.status).toBe(303);
    expect(signedIn.headers.get('location')).toBe(`${BASE}/`);
    const cookie = signedIn.headers.get('set-cookie')!;
    expect(cookie).toMatch(/; Path=\/admin; HttpOnly; SameSite=Strict$/);
    const viaProxy = await open('/login', { method: 'POST', body: new URLSearchParams({ token: admin.token }), headers: { 'x-forwarded-proto': 'https' } });
    expect(viaProxy.headers.get('set-cookie')).toMatch(/; Secure$/);

    const list = await open('/', { headers: { cookie: cookie.split(';')[0]! } });
    expect(list.status).toBe(200);

    // Changes from another origin, from the "null" origin of a cross-origin redirect or from an
    // Origin that is not a URL are refused (403, not a server error); a bulk change must be JSON.
    const change = (headers: Record<string, string>) =>
      asAdmin('/api/queue/sdjobs/high_priority/job/bulk', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ jobs: ['x'], queueState: 'failed' }) });
    for (const origin of ['https://elsewhere.example', 'null', 'not a url']) expect((await change({ origin })).status, origin).toBe(403);
    expect((await change({ 'content-type': 'text/plain' })).status).toBe(415);
    const page = await list.text();
    for (const q of ['high_priority', 'normal_priority', 'low_priority', 'webhooks']) expect(page).toContain(q);
    expect((await asAdmin('/sdjobs/high_priority')).status).toBe(200);
    // Arena's own routes that change queues are not reachable, whoever asks.
    expect((await asAdmin('/api/queue/sdjobs/high_priority/job', { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status).toBe(405);
    // No line of the log holds a token.
    for (const token of [admin.token, user.token]) expect(lines.filter((l) => l.includes(token))).toEqual([]);
  });

  it('retries a failed generation job without calling SD again or touching credits when its generation already failed', async () => {
    stack.sim.failNext('bad-request');
    const { id } = await generate(stack, user.token, { steps: 3, width: 64, height: 64 });
    expect(events(await watch(stack.baseUrl, id, user.token).done).at(-1)).toMatchObject({ status: 'FAILED' });
    await until(async () => (await storedState(stack, 'high_priority', id)) === 'failed', 'the job to be kept as failed');
    const credits = await stack.credits(user.userId);
    const calls = stack.sim.stats.txt2imgCalls;
    const before = await stack.tdb.db('generations').where({ id }).first();

    // Only a failed job may be retried; a retry is refused for one that is not.
    expect((await asAdmin(`/api/queue/sdjobs/low_priority/job/${id}`, { method: 'PATCH' })).status).toBe(404);
    const retried = await asAdmin(`/api/queue/sdjobs/high_priority/job/${id}`, { method: 'PATCH' });
    expect(retried.status, await retried.clone().text()).toBe(200);
    // It runs again under its own id: the worker finds the generation FAILED and leaves it so.
    await until(async () => (await storedState(stack, 'high_priority', id)) === 'succeeded', 'the retried job to end');
    expect((await asAdmin(`/api/queue/sdjobs/high_priority/job/${id}`, { method: 'PATCH' })).status).toBe(409);
    expect(stack.sim.stats.txt2imgCalls).toBe(calls);
    expect(await stack.credits(user.userId)).toBe(credits);
    expect(await stack.tdb.db('generations').where({ id }).first()).toMatchObject({ status: 'FAILED', attempts: before.attempts, refunded_at: before.refunded_at });

    // Removing an ended job only drops it from Redis.
    expect((await asAdmin(`/api/queue/sdjobs/high_priority/job/${id}`, { method: 'DELETE' })).status).toBe(200);
    expect(await storedState(stack, 'high_priority', id)).toBeNull();

    // Each action is logged at info level with who did it, what and on which job.
    const who = { admin: admin.userId, adminEmail: 'ops@example.com', queue: 'high_priority', job: id };
    expect(adminLines('retry')).toEqual([expect.objectContaining({ ...who, level: 30 })]);
    expect(adminLines('remove').filter((l) => l.job === id)).toEqual([expect.objectContaining({ ...who, level: 30 })]);
  });

  it('removes a waiting generation job by cancelling its generation (credits back once); other unfinished jobs stay', async () => {
    stack.sim.pause();
    const running = await generate(stack, user.token, { steps: 3, width: 64, height: 64 });
    await until(async () => (await storedState(stack, 'high_priority', running.id)) === 'active', 'the first generation to run');
    const creditsBefore = await stack.credits(user.userId);
    const waiting = await generate(stack, user.token, { steps: 3, width: 64, height: 64 });
    expect(await storedState(stack, 'high_priority', waiting.id)).toBe('waiting');
    expect(await stack.credits(user.userId)).toBe(creditsBefore - 1);

    const removed = await asAdmin(`/api/queue/sdjobs/high_priority/job/bulk`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jobs: [encodeURIComponent(waiting.id)], queueState: 'waiting' }),
    });
    expect(removed.status, await removed.clone().text()).toBe(200);
    expect(await storedState(stack, 'high_priority', waiting.id)).toBeNull();
    expect(await stack.tdb.db('generations').where({ id: waiting.id }).first()).toMatchObject({ status: 'CANCELLED' });
    expect(await stack.credits(user.userId)).toBe(creditsBefore);
    expect(adminLines('remove').filter((l) => l.job === waiting.id)).toEqual([
      expect.objectContaining({ admin: admin.userId, adminEmail: 'ops@example.com', generation: waiting.id, status: 'CANCELLED', level: 30 }),
    ]);

    // A mail waiting for its retry (due in an hour) is a step of recorded work: not removed.
    const keys = queueKeys(stack.config.redis.prefix, 'low_priority');
    const mail = { data: { kind: 'sendEmail', payload: {} }, options: { retries: 2, stacktraces: ['Error: 451'] }, status: 'retrying', progress: 0 };
    await stack.redis.hset(keys.jobs, 'sendEmail:held', JSON.stringify(mail));
    await stack.redis.zadd(keys.delayed, Date.now() + 3_600_000, 'sendEmail:held');
    const refused = await asAdmin('/api/queue/sdjobs/low_priority/job/sendEmail%3Aheld', { method: 'DELETE' });
    expect(refused.status).toBe(409);
    expect(await refused.text()).toContain('cannot be removed');
    expect(await storedState(stack, 'low_priority', 'sendEmail:held')).toBe('delayed');
    stack.sim.resume();
    await watch(stack.baseUrl, running.id, user.token).done;
  });

  it('keeps the API answering when the dashboard fails, and comes back when the cause is gone', async () => {
    // A record that is not JSON among the failed jobs: Bee-Queue's JSON.parse throws inside arena's
    // async handler, a rejection that nobody catches, and the dashboard's process dies of it.
    const keys = queueKeys(stack.config.redis.prefix, 'webhooks');
    await stack.redis.hset(keys.jobs, 'poison', 'not json {');
    await stack.redis.sadd(keys.failed, 'poison');
    expect((await asAdmin('/sdjobs/webhooks')).status).toBe(200);
    const broken = await asAdmin('/sdjobs/webhooks/failed');
    expect(broken.status).toBe(502);
    // The API itself goes on: health, GraphQL, and a generation from start to end.
    expect((await fetch(`${stack.baseUrl}/healthz`)).status).toBe(200);
    const { id } = await generate(stack, user.token, { steps: 3, width: 64, height: 64 });
    expect(events(await watch(stack.baseUrl, id, user.token).done).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    expect(lines.some((l) => l.includes('the dashboard process exited'))).toBe(true);

    // Through the dashboard's own remove, the poison goes; the next page starts a new process.
    expect((await asAdmin('/api/queue/sdjobs/webhooks/job/poison', { method: 'DELETE' })).status).toBe(200);
    const healed = await asAdmin('/sdjobs/webhooks/failed');
    expect(healed.status).toBe(200);
  });
});
