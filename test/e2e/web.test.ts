/**
 * The web page in headless Chromium, as a person uses it: sign up, follow the mail's link, sign in,
 * generate and watch the bar move through real steps with the live preview, see the image, cancel a
 * second generation, find both in the recent list, and sign out; on a laptop and on a phone. A
 * screenshot of each state goes to test/artifacts/web/ (ignored by git) for review.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BROWSER_UI_MS, PROCESSES_TEST_MS } from '../helpers/budgets';
import { launchChromium, recordCspViolations } from '../helpers/graphiqlBrowser';
import { linkIn, startSmtp, type TestSmtp } from '../helpers/smtp';
import { startStack, type Stack } from '../helpers/stack';

const ARTIFACTS = path.resolve(import.meta.dirname, '../artifacts/web');
const PASSWORD = 'a long passphrase';

describe('the web page', { timeout: PROCESSES_TEST_MS }, () => {
  let smtp: TestSmtp;
  let stack: Stack;
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];
  let cspViolations: string[] = [];
  const shot = (name: string) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });

  beforeAll(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    smtp = await startSmtp();
    // Steps slow enough for the bar to be seen at several of them.
    stack = await startStack({ simulator: { stepMs: 100 }, env: { SMTP_URL: smtp.url } });
    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    cspViolations = await recordCspViolations(context);
    page = await context.newPage();
    page.setDefaultTimeout(BROWSER_UI_MS);
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
    page.on('response', (r) => r.status() >= 400 && problems.push(`${r.status()} ${r.url()}`));
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    await smtp?.close();
  });

  it('signs a person up, and in after they follow the link in the mail', async () => {
    const email = `web-${Date.now()}@example.com`;
    await page.goto(stack.baseUrl);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await shot('1-signed-out');
    await page.getByRole('button', { name: 'New here? Create an account' }).click();
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign up' }).click();
    await page.getByRole('status').filter({ hasText: 'on its way' }).waitFor();
    await shot('2-signed-up');

    const link = linkIn(await smtp.waitFor(email));
    await page.goto(link.toString());
    await page.getByRole('button', { name: 'Confirm my address' }).click();
    await page.getByText('is confirmed').waitFor();

    await page.goto(stack.baseUrl);
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByTestId('credits').textContent()).toBe('10 credits');
    await shot('3-signed-in');
  });

  it('generates: the bar moves through real steps with the live preview, then shows the image', async () => {
    await page.getByLabel('Prompt', { exact: true }).fill('a lighthouse at dusk');
    await page.getByLabel('Size').selectOption('256x256');
    await page.getByLabel('Steps').fill('12');
    // Every text the detail line shows, recorded in the page as it changes (polling could miss some).
    await page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { seenDetails: string[] }).seenDetails = seen;
      const detail = document.querySelector('[data-testid="detail"]')!;
      new MutationObserver(() => seen.push(detail.textContent ?? '')).observe(detail, { childList: true, characterData: true, subtree: true });
    });
    await page.getByRole('button', { name: 'Generate' }).click();
    // A preview shows while it samples: the moment for a screenshot.
    await page.getByTestId('preview').and(page.locator('[src^="data:image/webp"]')).waitFor();
    const sawPreview = true;
    await shot('4-generating');
    await expect.poll(() => page.getByTestId('status').textContent()).toMatch(/Succeeded|Failed|Cancelled/);
    const details = await page.evaluate(() => (window as unknown as { seenDetails: string[] }).seenDetails);
    const steps = new Set(details.map((d) => /Step (\d+) of 12/.exec(d)?.[1]).filter((n) => n && n !== '0' && n !== '12'));
    expect(await page.getByTestId('status').textContent()).toBe('Succeeded');
    expect(steps.size, [...steps].join(',')).toBeGreaterThanOrEqual(3);
    expect(sawPreview).toBe(true);
    expect(await page.getByRole('progressbar').getAttribute('aria-valuenow')).toBe('100');
    const image = page.getByTestId('results').locator('.image.loaded img');
    await image.waitFor();
    expect(await image.evaluate((img: HTMLImageElement) => img.naturalWidth)).toBe(256);
    await expect.poll(() => page.getByTestId('credits').textContent()).toBe('9 credits');
    await shot('5-succeeded');
  });

  it('cancels a second generation, and lists both among the recent ones', async () => {
    stack.sim.pause();
    try {
      await page.getByLabel('Prompt', { exact: true }).fill('a second thought');
      await page.getByRole('button', { name: 'Generate' }).click();
      await expect.poll(() => page.getByTestId('status').textContent()).toMatch(/Queued|Started|Generating/);
      await page.getByRole('button', { name: 'Cancel' }).click();
      await expect.poll(() => page.getByTestId('status').textContent()).toBe('Cancelled');
    } finally {
      stack.sim.resume();
    }
    await expect.poll(() => page.getByTestId('recent').locator('li').evaluateAll((items) => items.map((li) => li.getAttribute('data-status')))).toEqual(['CANCELLED', 'SUCCEEDED']);
    await expect.poll(() => page.getByTestId('credits').textContent()).toBe('9 credits');
    await shot('6-cancelled');
  });

  it('fits a phone, then signs out', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    await shot('7-phone');
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    expect(problems).toEqual([]);
    // Every page above (the app, the account page of the mail's link) ran under its CSP without a refusal.
    expect(cspViolations).toEqual([]);
  });
});
