/**
 * GraphiQL in a real headless Chromium, each test in a fresh browser context (no stored tabs), as a
 * person opening dev mode's link for the first time: the example tabs with the token, every asset
 * served by the API itself, Monaco's GraphQL worker autocompleting from the schema, and the
 * Generate and Watch examples run from the UI with the events arriving live over SSE.
 */
import { readdir } from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { graphiqlExamples, graphiqlExampleTabs } from '../../src/api/graphiqlExamples';
import { createApiServer, type ApiServer } from '../../src/api/server';
import { createLogger } from '../../src/logger';
import {
  editorText,
  editorTool,
  generateThenWatch,
  launchChromium,
  non2xx,
  openGraphiQL,
  openTab,
  recordCspViolations,
  recordedStates,
  UI_TIMEOUT,
  waitForEditorText,
} from '../helpers/graphiqlBrowser';
import { freePort, startStack, type Stack } from '../helpers/stack';

const TERMINAL = ['SUCCEEDED', 'FAILED', 'CANCELLED'];


describe('GraphiQL in a browser', () => {
  let stack: Stack;
  let api: ApiServer;
  let url: string;
  let browser: Browser;
  let userId: string;
  let token: string;

  beforeAll(async () => {
    // The Generate and Watch test pauses the simulator until the browser shows the stream live.
    stack = await startStack({ simulator: { stepMs: 50 } });
    const user = await stack.createUser(3);
    userId = user.userId;
    token = user.token;
    // A second API on the same stack whose GraphiQL opens with the examples and this user's token, as dev mode does.
    api = await createApiServer({
      config: stack.config,
      db: stack.tdb.db,
      log: createLogger('silent'),
      imageUrls: stack.imageUrls,
      graphiql: graphiqlExamples(token),
    });
    url = await api.listen(await freePort(), '127.0.0.1');
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await api?.close();
    await stack?.close();
  });

  it('opens with the four example tabs, Generate in the editor and the token in the headers', { timeout: 120_000 }, async () => {
    const { context, page, problems, cspViolations } = await openGraphiQL(browser, url);
    try {
      const examples = graphiqlExampleTabs(token);
      expect(await page.locator('.graphiql-tab').allInnerTexts()).toEqual(['Generate', 'Watch', 'Me', 'Stop']);
      expect(await page.locator('.graphiql-tab-active').innerText()).toBe('Generate');

      const query = await waitForEditorText(page, '.graphiql-query-editor', (t) => t.includes('mutation Generate'));
      expect(query).toContain('generateImage(input: { prompt: "a lighthouse at dusk, oil painting", steps: 20 })');
      expect(query).not.toMatch(/Welcome to/);
      const headers = await editorTool(page, 'Headers');
      await waitForEditorText(page, headers, (t) => t.includes(`Bearer ${token}`));

      // A reload before any edit: the same tabs (once GraphiQL has stored them, 500 ms after the start).
      await page.waitForFunction(() => localStorage.getItem('graphiql:tabState') !== null, undefined, { timeout: UI_TIMEOUT });
      await page.reload({ timeout: UI_TIMEOUT });
      await page.locator('.graphiql-tab').nth(3).waitFor({ timeout: UI_TIMEOUT });
      await waitForEditorText(page, '.graphiql-query-editor', (t) => t.includes('mutation Generate'));
      expect(await page.locator('.graphiql-tab').allInnerTexts()).toEqual(['Generate', 'Watch', 'Me', 'Stop']);
      expect(await page.locator('.graphiql-tab-active').innerText()).toBe('Generate');

      // Every tab: its operation, the token, and for Watch and Stop the id to replace.
      for (const tab of examples) {
        await openTab(page, tab.title);
        const operation = tab.query.split('\n').find((l) => !l.startsWith('#')) ?? '';
        await waitForEditorText(page, '.graphiql-query-editor', (t) => t.includes(operation));
        await waitForEditorText(page, await editorTool(page, 'Headers'), (t) => t.includes(`Bearer ${token}`));
        const variables = await editorText(page, await editorTool(page, 'Variables'));
        if (tab.variables) expect(variables).toContain('"id": "PASTE-THE-ID-HERE"');
      }

      // A reload brings back the same tabs with the one last open (GraphiQL keeps them in localStorage).
      await openTab(page, 'Watch');
      await waitForEditorText(page, '.graphiql-query-editor', (t) => t.includes('subscription Watch'));
      // GraphiQL stores the tabs and the editors' contents after debounces of up to 500 ms; a reload
      // before that finds the editors unlike any stored tab and opens one more.
      await page.waitForFunction(
        (auth) => {
          const tabs = JSON.parse(localStorage.getItem('graphiql:tabState') ?? '{}') as { activeTabIndex?: number };
          return (
            tabs.activeTabIndex === 1 &&
            localStorage.getItem('graphiql:query')?.includes('subscription Watch') &&
            localStorage.getItem('graphiql:variables')?.includes('PASTE-THE-ID-HERE') &&
            localStorage.getItem('graphiql:headers')?.includes(auth)
          );
        },
        `Bearer ${token}`,
        { timeout: UI_TIMEOUT },
      );
      await page.reload({ timeout: UI_TIMEOUT });
      await page.locator('.graphiql-tab').nth(3).waitFor({ timeout: UI_TIMEOUT });
      await waitForEditorText(page, '.graphiql-query-editor', (t) => t.includes('subscription Watch'));
      expect(await page.locator('.graphiql-tab').allInnerTexts()).toEqual(['Generate', 'Watch', 'Me', 'Stop']);
      expect(await page.locator('.graphiql-tab-active').innerText()).toBe('Watch');
      expect(problems).toEqual([]);
      expect(cspViolations).toEqual([]);
    } finally {
      await context.close();
    }
  });

  it('opens just the query of a link with ?query= on a first visit', { timeout: 120_000 }, async () => {
    const context = await browser.newContext();
    const cspViolations = await recordCspViolations(context);
    try {
      const page = await context.newPage();
      await page.goto(`${url}/graphql?query=${encodeURIComponent('query Mine { me { photoCredits } }')}`, { timeout: UI_TIMEOUT });
      await waitForEditorText(page, '.graphiql-query-editor', (t) => t.includes('query Mine'));
      expect(await page.locator('.graphiql-tab').allInnerTexts()).toEqual(['Mine']);
      const headers = await editorTool(page, 'Headers');
      await waitForEditorText(page, headers, (t) => t.includes(`Bearer ${token}`));
      expect(cspViolations).toEqual([]);
    } finally {
      await context.close();
    }
  });

  it('serves every asset the page and its workers ask for', { timeout: 120_000 }, async () => {
    const session = await openGraphiQL(browser, url);
    const { context, page, requests, workers, problems, cspViolations } = session;
    try {
      // Monaco starts its editor, JSON and GraphQL workers from the monacoeditorwork files.
      await page.waitForFunction(() => document.querySelectorAll('.graphiql-editor-tool .monaco-editor').length > 0, undefined, { timeout: UI_TIMEOUT });
      const deadline = Date.now() + UI_TIMEOUT;
      while (new Set(workers.map((w) => w.url())).size < 3 && Date.now() < deadline) await page.waitForTimeout(100);
      expect(new Set(workers.map((w) => w.url())).size, 'editor, JSON and GraphQL workers').toBeGreaterThanOrEqual(3);

      const asked = requests.map((r) => r.url());
      for (const file of ['graphiql.css', 'yoga-graphiql.umd.js', ...(await workerFiles())]) {
        expect(asked, file).toContain(`${url}/graphiql-assets/${file}`);
      }
      expect(await non2xx(session)).toEqual([]);
      expect(problems).toEqual([]);
      expect(cspViolations).toEqual([]);

      // Over plain HTTP: every asset the page names, and every file Monaco's workers are made from.
      const pageAnswer = await fetch(`${url}/graphql`, { headers: { accept: 'text/html' } });
      // The page's own policy (the browser above ran under it): scripts by hash, never 'unsafe-inline'.
      const policy = pageAnswer.headers.get('content-security-policy') ?? '';
      expect(policy).toMatch(/script-src 'self' 'sha256-[^;]+;/);
      expect(policy).not.toMatch(/script-src[^;]*unsafe-inline/);
      expect(policy).toContain("frame-ancestors 'none'");
      const html = await pageAnswer.text();
      expect(html).not.toContain('unpkg.com');
      const named = new Set([...html.matchAll(/\/graphiql-assets\/[^"'\s)>]+/g)].map((m) => m[0]));
      for (const file of await workerFiles()) named.add(`/graphiql-assets/${file}`);
      expect(named.size).toBeGreaterThanOrEqual(5);
      for (const asset of named) {
        const res = await fetch(`${url}${asset}`);
        expect(res.status, asset).toBe(200);
        expect(res.headers.get('content-type'), asset).toMatch(/^(application\/javascript|text\/css)/);
        expect((await res.arrayBuffer()).byteLength, asset).toBeGreaterThan(100);
      }
      // Path traversal stays refused over HTTP (fetch would normalize these paths away; raw requests do not).
      for (const raw of ['/graphiql-assets/../package.json', '/graphiql-assets/monacoeditorwork/../../package.json', '/graphiql-assets/%2e%2e/package.json']) {
        expect(await rawStatus(url, raw), raw).toBe(404);
      }
    } finally {
      await context.close();
    }
  });

  it('autocompletes from the schema as a person types (the GraphQL worker runs)', { timeout: 120_000 }, async () => {
    const session = await openGraphiQL(browser, url);
    const { context, page, problems, cspViolations } = session;
    try {
      await page.locator('.graphiql-query-editor .monaco-editor').first().click();
      await page.keyboard.press('Control+End');
      await page.keyboard.press('Enter');
      await page.keyboard.type('query { ge');
      const suggestion = page.locator('.suggest-widget .monaco-list-row', { hasText: 'generation' }).first();
      await suggestion.waitFor({ timeout: UI_TIMEOUT });
      expect(await suggestion.innerText()).toContain('generation');
      expect(await non2xx(session)).toEqual([]);
      expect(problems).toEqual([]);
      expect(cspViolations).toEqual([]);
    } finally {
      await context.close();
    }
  });

  it('runs the Generate example, then watches it live to SUCCEEDED in the Watch tab', { timeout: 180_000 }, async () => {
    const session = await openGraphiQL(browser, url, { recordEventStreams: true });
    const { context, page, problems, cspViolations } = session;
    const sim = stack.sim;
    try {
      // Paused: the generation stays mid-sampling (GENERATING, step 0) until the browser shows it
      // live, however slow the machine; then it may run to the end.
      sim.pause();
      await generateThenWatch(page);

      // Live: a running state is on screen before the end.
      await waitForEditorText(page, '.graphiql-response', (t) => /"status":\s*"GENERATING"/.test(t));
      sim.resume();
      const final = await waitForEditorText(page, '.graphiql-response', (t) => /"status":\s*"(SUCCEEDED|FAILED|CANCELLED)"/.test(t));
      expect(final).toContain('"status": "SUCCEEDED"');
      expect(final).not.toContain('preview');

      // What the browser received: the stream began before the end, in order, and completed.
      const { body, states } = await recordedStates(page);
      expect(TERMINAL, body).not.toContain(states[0]?.status);
      expect(states.map((s) => s.status)).toContain('GENERATING');
      expect(states.every((s, i) => i === 0 || s.seq > (states[i - 1]?.seq ?? Infinity)), body).toBe(true);
      expect(new Set(states.map((s) => s.status)).size, body).toBeGreaterThanOrEqual(3);
      expect(states.at(-1)?.status).toBe('SUCCEEDED');
      expect(body).toMatch(/"url":"http[^"]+\.webp\?expires=\d+&signature=[\w-]+"/);
      expect(body).toMatch(/event: complete/);
      expect(await stack.credits(userId)).toBe(2);
      expect(await non2xx(session)).toEqual([]);
      expect(problems).toEqual([]);
      expect(cspViolations).toEqual([]);
    } finally {
      sim.resume();
      await context.close();
    }
  });
});

/** The files Monaco's workers are made from, as the installed package has them. */
async function workerFiles(): Promise<string[]> {
  const dist = path.join(path.dirname(createRequire(import.meta.url).resolve('@graphql-yoga/graphiql/package.json')), 'dist');
  const files = await readdir(path.join(dist, 'monacoeditorwork'));
  return files.filter((f) => f.endsWith('.js')).map((f) => `monacoeditorwork/${f}`);
}

/** The status of a GET sent with exactly this path (no URL normalization on the way). */
function rawStatus(base: string, rawPath: string): Promise<number> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    http.get({ hostname, port, path: rawPath }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
}
