/**
 * GraphiQL driven in a real headless Chromium (Debian's, through playwright-core): open the page as a
 * first visit, switch tabs, read and fill its Monaco editors, and read the event streams it receives.
 * Shared by the GraphiQL tests and the README walk-through over `npm run dev`.
 */
import { chromium, type Browser, type BrowserContext, type Page, type Request, type Worker } from 'playwright-core';
import { BROWSER_UI_MS } from './budgets';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Page loads parse 5 MB of JavaScript: slow when the two cores are busy with other test files. */
export const UI_TIMEOUT = BROWSER_UI_MS;

/** Monaco renders spaces as no-break spaces and puts line numbers in the same element. */
export async function editorText(page: Page, selector: string): Promise<string> {
  return (await page.locator(selector).first().innerText({ timeout: UI_TIMEOUT })).replace(/\u00a0/g, ' ');
}

/** Waits until the editor under `selector` shows text that satisfies `ok`; returns that text. */
export async function waitForEditorText(page: Page, selector: string, ok: (text: string) => boolean): Promise<string> {
  const deadline = Date.now() + UI_TIMEOUT;
  for (;;) {
    const text = await editorText(page, selector).catch(() => '');
    if (ok(text)) return text;
    if (Date.now() > deadline) throw new Error(`${selector} never showed the expected text; it shows:\n${text}`);
    await page.waitForTimeout(50);
  }
}

export interface Session {
  context: BrowserContext;
  page: Page;
  /** Every request the page and its workers made. */
  requests: Request[];
  /** The statuses of the blob: requests that were answered. */
  blobAnswers: Map<Request, number>;
  workers: Worker[];
  /** Console errors, failed requests and uncaught exceptions. */
  problems: string[];
  /** Content-Security-Policy violations the page and its workers reported (recordCspViolations). */
  cspViolations: string[];
}

/**
 * Collects every Content-Security-Policy violation of the context's pages and their workers: the
 * `securitypolicyviolation` events of each document, and the console messages Chromium writes for
 * a refusal (the only report a worker's refusals get). Call it before the pages load.
 */
export async function recordCspViolations(context: BrowserContext): Promise<string[]> {
  const violations: string[] = [];
  await context.exposeBinding('__reportCspViolation', (_source, text: string) => void violations.push(text));
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      const report = (globalThis as unknown as { __reportCspViolation(text: string): Promise<void> }).__reportCspViolation;
      void report(`${e.effectiveDirective} refused ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  const fromConsole = (m: { text(): string }) => {
    if (/Content Security Policy/i.test(m.text())) violations.push(`console: ${m.text()}`);
  };
  const watchPage = (page: Page) => {
    page.on('console', fromConsole);
    page.on('worker', (w) => w.on('console', fromConsole));
  };
  context.pages().forEach(watchPage);
  context.on('page', watchPage);
  return violations;
}

/** Debian's Chromium, headless, with the flags this machine's closed network needs. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS }).catch((err: unknown) => {
    throw new Error(`Chromium is needed for this test (apt-get install -y chromium, or set CHROMIUM_PATH): ${String(err)}`);
  });
}

/** The statuses of the generation events a recorded event stream carried, in order. */
export async function recordedStates(page: Page): Promise<{ body: string; states: Array<{ seq: number; status: string }> }> {
  const body = await page
    .waitForFunction(() => (globalThis as unknown as EventStreams).__eventStreams.find((s) => s.includes('event: complete')), undefined, { timeout: UI_TIMEOUT })
    .then((handle) => handle.jsonValue());
  if (typeof body !== 'string') throw new Error('no completed event stream');
  const events = [...body.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1] ?? '{}') as { data?: { generationProgress?: { seq: number; status: string } } });
  const states = events.map((e) => e.data?.generationProgress).filter((p): p is { seq: number; status: string } => p !== undefined);
  return { body, states };
}

/**
 * Presses ▶ and waits until the result pane satisfies `ok`; returns its text. GraphiQL updates the
 * operation to run after a debounce, so a run right after switching tabs or editing can name the
 * previous tab's operation ("Cannot infer operation …"); a person is never that fast, so that
 * answer is taken as "not yet" and ▶ pressed again.
 */
export async function runActiveTab(page: Page, ok: (text: string) => boolean): Promise<string> {
  let previous: string | null = null;
  for (let attempt = 1; ; attempt++) {
    await page.locator('.graphiql-execute-button').click({ timeout: UI_TIMEOUT });
    // A new answer: one that satisfies `ok`, or an error other than the one already on screen.
    const text = await waitForEditorText(page, '.graphiql-response', (t) => ok(t) || (/Cannot infer operation/.test(t) && t !== previous));
    if (ok(text) || attempt === 5) return text;
    previous = text;
    await page.waitForTimeout(500); // GraphiQL's debounce, as a person's pause
  }
}

/**
 * The README's walk-through in the open page: run the Generate tab, copy the id into the Watch
 * tab's Variables (pasting, as a person would), run Watch. Returns the id; `onGenerated` runs as soon
 * as the id is on screen.
 */
export async function generateThenWatch(page: Page, onGenerated: () => void = () => undefined): Promise<string> {
  const created = await runActiveTab(page, (t) => /"id":\s*"[0-9a-f-]{36}"/.test(t));
  const id = created.match(/"id":\s*"([0-9a-f-]{36})"/)?.[1];
  if (!id) throw new Error(`no generation id in:\n${created}`);
  onGenerated();
  // The Watch tab, as its comment says: paste the id into Variables, then run.
  await openTab(page, 'Watch');
  await waitForEditorText(page, '.graphiql-query-editor', (t) => t.includes('subscription Watch'));
  const variables = await editorTool(page, 'Variables');
  await page.locator(variables).click();
  await page.keyboard.press('Control+A');
  await page.evaluate((text) => navigator.clipboard.writeText(text), JSON.stringify({ id }));
  await page.keyboard.press('Control+V');
  await waitForEditorText(page, variables, (t) => t.includes(id));
  await runActiveTab(page, (t) => /"generationProgress"/.test(t));
  return id;
}

/** A new browser context (empty localStorage: a first visit) with GraphiQL loaded and its editors up. */
export async function openGraphiQL(browser: Browser, url: string, opts: { recordEventStreams?: boolean } = {}): Promise<Session> {
  const context = await browser.newContext();
  if (opts.recordEventStreams) await context.addInitScript(recordEventStreams);
  // The Watch example is filled in by pasting, as a person would.
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });
  const cspViolations = await recordCspViolations(context);
  const s: Session = { context, page: await context.newPage(), requests: [], blobAnswers: new Map(), workers: [], problems: [], cspViolations };
  context.on('request', (r) => s.requests.push(r));
  context.on('response', (r) => {
    if (r.url().startsWith('blob:')) s.blobAnswers.set(r.request(), r.status());
  });
  // Requests cut short by closing the page (an open subscription) do not count.
  context.on('requestfailed', (r) => {
    if (r.failure()?.errorText !== 'net::ERR_ABORTED') s.problems.push(`request failed: ${r.url()}: ${r.failure()?.errorText}`);
  });
  s.page.on('worker', (w) => s.workers.push(w));
  s.page.on('console', (m) => {
    if (m.type() === 'error') s.problems.push(`console: ${m.text()} (${m.location().url})`);
  });
  s.page.on('pageerror', (err) => s.problems.push(`page error: ${err.message}`));
  await s.page.goto(`${url}/graphql`, { timeout: UI_TIMEOUT });
  await s.page.locator('.graphiql-tab').nth(3).waitFor({ timeout: UI_TIMEOUT });
  await s.page.locator('.graphiql-query-editor .monaco-editor').first().waitFor({ timeout: UI_TIMEOUT });
  return s;
}

/** Shows the Variables or Headers pane under the query editor; returns its editor's selector. */
export async function editorTool(page: Page, name: 'Variables' | 'Headers'): Promise<string> {
  await page.locator(`.graphiql-editor-tools button[data-name="${name.toLowerCase()}"]`).click({ timeout: UI_TIMEOUT });
  // Both editors live in the same section; only the shown one is visible.
  const selector = `.graphiql-editor-tool .monaco-editor[data-uri$="${name === 'Variables' ? '-variables.json' : '-request-headers.json'}"]`;
  await page.locator(selector).waitFor({ state: 'visible', timeout: UI_TIMEOUT });
  return selector;
}

/**
 * Opens a tab by keyboard. GraphiQL's tabs can be dragged to reorder them, and while they settle
 * after a run a mouse click's press and release can land on different elements (no click).
 */
export async function openTab(page: Page, title: string): Promise<void> {
  const exactly = new RegExp(`^${title}$`);
  const button = page.locator('.graphiql-tab-button', { hasText: exactly });
  await button.focus({ timeout: UI_TIMEOUT });
  await button.press('Enter');
  await page.locator('.graphiql-tab-active .graphiql-tab-button', { hasText: exactly }).waitFor({ timeout: UI_TIMEOUT });
}

/** Waits for the answers to the requests recorded so far; returns those that were not 2xx. */
export async function non2xx({ requests, blobAnswers }: Session): Promise<string[]> {
  const answers = await Promise.all(
    requests.map(async (r) => {
      let status: number | undefined;
      if (r.url().startsWith('blob:')) {
        // A worker's script, made in the page from a fetched monacoeditorwork file (a request of its
        // own). Monaco ends one worker while it loads, and Chromium then reports nothing for it.
        status = blobAnswers.get(r);
        if (status === undefined) return null;
      } else {
        const res = await Promise.race([r.response(), new Promise<null>((resolve) => setTimeout(resolve, UI_TIMEOUT, null).unref())]);
        status = res?.status();
      }
      return status !== undefined && status >= 200 && status < 300 ? null : `${status ?? 'no answer'} ${r.method()} ${r.url()}`;
    }),
  );
  return answers.filter((a): a is string => a !== null);
}

export interface EventStreams {
  __eventStreams: string[];
}

/**
 * Runs in the page before GraphiQL: keeps a copy of every event stream the page receives, since
 * Chromium keeps no body for a streamed response. GraphiQL gets the same stream, untouched.
 */
export function recordEventStreams(): void {
  const streams: string[] = [];
  (globalThis as unknown as EventStreams).__eventStreams = streams;
  const fetchOriginal = globalThis.fetch.bind(globalThis);
  globalThis.fetch = async (...args: Parameters<typeof fetch>) => {
    const res = await fetchOriginal(...args);
    if (!res.body || !res.headers.get('content-type')?.includes('text/event-stream')) return res;
    const [forPage, forTest] = res.body.tee();
    const at = streams.push('') - 1;
    void (async () => {
      const reader = forTest.getReader();
      const decoder = new TextDecoder();
      for (let r = await reader.read(); !r.done; r = await reader.read()) streams[at] += decoder.decode(r.value, { stream: true });
    })().catch(() => undefined); // GraphiQL aborts the request once the stream has completed
    return new Response(forPage, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}
