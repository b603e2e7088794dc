/**
 * The queue dashboard in a real headless Chromium, as an operator uses it: sign in with an admin's
 * token, open every page (the queue list, each queue, each state list, a job), see a generation
 * running, one waiting behind it and one that failed, retry the failed one and see it leave the
 * failed list. A token that is not an admin's is refused, and no token gets the sign-in form.
 * With DASHBOARD_SCREENSHOT=docs/dashboard.png it also saves the picture the README shows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { createUserWithToken } from '../../src/auth/tokens';
import { QUEUE_NAMES } from '../../src/config';
import { BROWSER_UI_MS, PROCESS_START_MS } from '../helpers/budgets';
import { launchChromium, recordCspViolations, UI_TIMEOUT } from '../helpers/graphiqlBrowser';
import { startStack, type Stack } from '../helpers/stack';
import { storedState } from '../helpers/storedJobs';
import { until } from '../helpers/wait';
import { events, generate, watch } from '../integration/helpers';

const STATES = ['waiting', 'active', 'delayed', 'succeeded', 'failed'] as const;

describe('the queue dashboard in a browser', () => {
  let stack: Stack;
  let browser: Browser;
  beforeAll(async () => {
    // One generation slot: with the simulator paused, the second generation waits behind the first.
    stack = await startStack({ env: { WORKER_CONCURRENCY: '1' } });
    browser = await launchChromium();
  }, PROCESS_START_MS);
  afterAll(async () => {
    stack?.sim.resume();
    await browser?.close();
    await stack?.close();
  });

  /** Opens a dashboard page and checks it answered 200 and shows arena's layout. */
  async function visit(page: Page, path: string): Promise<string> {
    const res = await page.goto(`${stack.baseUrl}/admin/queues${path}`, { timeout: UI_TIMEOUT });
    expect(res?.status(), path).toBe(200);
    await page.locator('.navbar').first().waitFor({ timeout: UI_TIMEOUT });
    return page.content();
  }

  it('shows waiting, active and failed generations to an admin, and retries the failed one', { timeout: BROWSER_UI_MS * 4 }, async () => {
    const admin = await createUserWithToken(stack.tdb.db, { email: 'ops@example.com', credits: 0, isAdmin: true });
    const user = await stack.createUser(10);
    // A generation Stable Diffusion refuses: it fails for good, and its job is kept as failed.
    stack.sim.failNext('bad-request');
    const failed = await generate(stack, user.token, { steps: 3, width: 64, height: 64, prompt: 'refused' });
    expect(events(await watch(stack.baseUrl, failed.id, user.token).done).at(-1)).toMatchObject({ status: 'FAILED' });
    await until(async () => (await storedState(stack, 'high_priority', failed.id)) === 'failed', 'the failed job to be kept');
    // One held mid-generation, one waiting behind it.
    stack.sim.pause();
    const running = await generate(stack, user.token, { steps: 3, width: 64, height: 64, prompt: 'running' });
    await until(async () => (await storedState(stack, 'high_priority', running.id)) === 'active', 'the first generation to run');
    const waiting = await generate(stack, user.token, { steps: 3, width: 64, height: 64, prompt: 'waiting' });
    expect(await storedState(stack, 'high_priority', waiting.id)).toBe('waiting');

    const context = await browser.newContext();
    const cspViolations = await recordCspViolations(context);
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    // Requests cut short by going to the next page do not count.
    context.on('requestfailed', (r) => {
      if (r.failure()?.errorText !== 'net::ERR_ABORTED') problems.push(`${r.url()}: ${r.failure()?.errorText}`);
    });
    context.on('response', (r) => {
      if (r.status() >= 400 && !r.url().includes('/admin/queues/login') && r.url() !== `${stack.baseUrl}/admin/queues/`) problems.push(`${r.status()} ${r.url()}`);
    });
    // Arena asks before it retries.
    page.on('dialog', (d) => void d.accept());

    // No token: the sign-in form.
    const first = await page.goto(`${stack.baseUrl}/admin/queues/`, { timeout: UI_TIMEOUT });
    expect(first?.status()).toBe(401);
    await page.locator('input[name="token"]').fill(admin.token, { timeout: UI_TIMEOUT });
    await Promise.all([page.waitForURL(`${stack.baseUrl}/admin/queues/`, { timeout: UI_TIMEOUT }), page.locator('button[type="submit"]').click()]);
    const cookie = (await context.cookies()).find((c) => c.name === 'sdjobs_admin');
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/admin' });

    // Every page: the list, each queue, each of its state lists.
    const list = await visit(page, '/');
    for (const q of QUEUE_NAMES) expect(list).toContain(`/admin/queues/sdjobs/${q}`);
    for (const q of QUEUE_NAMES) {
      await visit(page, `/sdjobs/${q}`);
      for (const state of STATES) await visit(page, `/sdjobs/${q}/${state}`);
    }
    expect(await visit(page, '/sdjobs/high_priority/waiting')).toContain(waiting.id);
    expect(await visit(page, '/sdjobs/high_priority/active')).toContain(running.id);
    expect(await visit(page, '/sdjobs/high_priority/failed')).toContain(failed.id);
    await visit(page, '/sdjobs/high_priority');
    const count = (state: string) => page.locator(`li.list-group-item:has(a[href$="/high_priority/${state}"]) .badge`).innerText({ timeout: UI_TIMEOUT });
    for (const state of ['waiting', 'active', 'failed']) expect(await count(state), state).toBe('1');
    const screenshot = process.env.DASHBOARD_SCREENSHOT;
    if (screenshot) {
      await page.setViewportSize({ width: 1100, height: 760 });
      await page.screenshot({ path: screenshot, fullPage: false });
    }

    // The failed job's page, and its Retry button.
    const jobPage = await visit(page, `/sdjobs/high_priority/${failed.id}`);
    expect(jobPage).toContain('failed');
    await Promise.all([page.waitForEvent('load', { timeout: UI_TIMEOUT }), page.locator('.js-retry-job').first().click({ timeout: UI_TIMEOUT })]);
    await until(async () => (await storedState(stack, 'high_priority', failed.id)) !== 'failed', 'the retried job to leave the failed list');
    expect(await visit(page, '/sdjobs/high_priority/failed')).not.toContain(failed.id);
    expect(problems).toEqual([]);
    // The sign-in form and arena's pages ran under their policies, nothing refused.
    expect(cspViolations).toEqual([]);

    // A token that is not an admin's: refused.
    const other = await browser.newContext();
    const refused = await other.newPage();
    await refused.goto(`${stack.baseUrl}/admin/queues/login`, { timeout: UI_TIMEOUT });
    await refused.locator('input[name="token"]').fill(user.token, { timeout: UI_TIMEOUT });
    const [answer] = await Promise.all([refused.waitForResponse((r) => r.url().endsWith('/admin/queues/login') && r.request().method() === 'POST'), refused.locator('button[type="submit"]').click()]);
    expect(answer.status()).toBe(403);
    await refused.getByText('Admins only').waitFor({ timeout: UI_TIMEOUT });
    await other.close();
    await context.close();

    stack.sim.resume();
    for (const id of [running.id, waiting.id]) expect(events(await watch(stack.baseUrl, id, user.token).done).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
  });
});
