/**
 * GraphiQL in a real headless Chromium: the mutation and then the subscription, run from its UI,
 * with the subscription's events arriving over SSE while the generation runs.
 */
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiServer, type ApiServer } from '../../src/api/server';
import { createLogger } from '../../src/logger';
import { freePort, startStack, type Stack } from '../helpers/stack';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

describe('GraphiQL in a browser', () => {
  let stack: Stack;
  let api: ApiServer;
  let url: string;
  let browser: Browser;
  let userId: string;

  beforeAll(async () => {
    stack = await startStack({ simulator: { stepMs: 100 } });
    const user = await stack.createUser(3);
    userId = user.userId;
    // A second API on the same stack whose GraphiQL opens with this user's token, as dev mode does.
    api = await createApiServer({
      config: stack.config,
      db: stack.tdb.db,
      log: createLogger('silent'),
      localFilesDir: stack.config.storage.dir,
      graphiql: { headers: JSON.stringify({ Authorization: `Bearer ${user.token}` }) },
    });
    url = await api.listen(await freePort(), '127.0.0.1');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS }).catch((err: unknown) => {
      throw new Error(`Chromium is needed for this test (apt-get install -y chromium, or set CHROMIUM_PATH): ${String(err)}`);
    });
  });
  afterAll(async () => {
    await browser?.close();
    await api?.close();
    await stack?.close();
  });

  async function runInGraphiQL(query: string, until: (text: string) => boolean, onText?: (text: string) => void) {
    const page = await browser.newPage();
    const failedRequests: string[] = [];
    // Requests cut short by closing the page (an open subscription, a late introspection) do not count.
    page.on('requestfailed', (r) => {
      if (r.failure()?.errorText !== 'net::ERR_ABORTED') failedRequests.push(`${r.url()}: ${r.failure()?.errorText}`);
    });
    await page.goto(`${url}/graphql?query=${encodeURIComponent(query)}`);
    const run = page.locator('.graphiql-execute-button');
    await run.waitFor({ timeout: 20_000 });
    await run.click();
    const response = page.locator('.graphiql-response');
    const deadline = Date.now() + 20_000;
    let text = '';
    while (Date.now() < deadline) {
      text = (await response.innerText().catch(() => '')).replace(/\u00a0/g, ' ');
      onText?.(text);
      if (until(text)) break;
      await page.waitForTimeout(25);
    }
    await page.close();
    expect(failedRequests, 'every asset loads from the API itself').toEqual([]);
    return text;
  }

  it('runs generateImage and then watches generationProgress stream to SUCCEEDED', async () => {
    const mutation = 'mutation { generateImage(input: { prompt: "a browser test", steps: 40, width: 128, height: 128 }) { id status } }';
    const created = await runInGraphiQL(mutation, (t) => /"id":\s*"[0-9a-f-]{36}"/.test(t));
    const id = created.match(/"id":\s*"([0-9a-f-]{36})"/)?.[1];
    expect(id, created).toBeDefined();

    const seen = new Set<string>();
    const subscription = `subscription { generationProgress(id: "${id}") { status step progress } }`;
    const final = await runInGraphiQL(
      subscription,
      (t) => t.includes('SUCCEEDED'),
      (t) => {
        const status = t.match(/"status":\s*"([A-Z_]+)"/)?.[1];
        if (status) seen.add(status);
      },
    );
    expect(final).toContain('"status": "SUCCEEDED"');
    // Live: intermediate states were on screen before the end.
    expect(seen.has("GENERATING"), [...seen].join(",")).toBe(true);
    expect(seen.size).toBeGreaterThanOrEqual(3);
    expect(await stack.credits(userId)).toBe(2);
  });
});
