/**
 * `npm run dev` on a fresh checkout: no DATABASE_URL (embedded PGlite), no APP_SD_API_URL (the
 * simulator), Redis present. The demo token it prints must drive a whole generation.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_START_MS, PROCESSES_TEST_MS } from '../helpers/budgets';
import {
  editorTool,
  generateThenWatch,
  launchChromium,
  non2xx,
  openGraphiQL,
  openTab,
  recordedStates,
  runActiveTab,
  UI_TIMEOUT,
  waitForEditorText,
} from '../helpers/graphiqlBrowser';
import { runCommand, spawnWatched, type Watched } from '../helpers/run';
import { freePort, REDIS_URL } from '../helpers/stack';
import { events, expectWellFormedStream, HAPPY_ORDER, statusPath, watch } from '../integration/helpers';
import { gql } from '../helpers/graphql';
import { graphql } from '../gql';
import { GenerateDoc, GenerationDoc, MeDoc } from '../integration/documents';

const ROOT = path.resolve(import.meta.dirname, '../..');
/**
 * `node --import tsx`, as the npm scripts run the entries, with tsx's loader named by its file:
 * the processes run in a folder of their own, where `tsx` alone would not resolve.
 */
const NODE_TSX = [process.execPath, '--import', import.meta.resolve('tsx')] as const;

/** Runs one of the project's scripts in `cwd` (as `npm run` would from a clone there). */
function script(cwd: string, env: NodeJS.ProcessEnv, file: string, args: string[] = []) {
  return runCommand(NODE_TSX[0], [...NODE_TSX.slice(1), path.join(ROOT, file), ...args], { cwd, env });
}

interface Dev extends Watched {
  token: string;
  baseUrl: string;
  /** SIGTERM, and the exit code. */
  stop(): Promise<number | null>;
}

/** `npm run dev` in `cwd`; resolves once it printed its token. */
async function startDev(cwd: string, env: NodeJS.ProcessEnv, port: number): Promise<Dev> {
  const dev = spawnWatched(NODE_TSX[0], [...NODE_TSX.slice(1), path.join(ROOT, 'src/main/dev.ts')], { cwd, env: { ...env, PORT: String(port) } });
  await dev.waitFor(/Token:\s+sdk_/);
  return {
    ...dev,
    token: /Token:\s+(sdk_\S+)/.exec(dev.output())![1]!,
    baseUrl: `http://127.0.0.1:${port}`,
    async stop() {
      if (dev.child.exitCode === null) dev.child.kill('SIGTERM');
      return dev.exited;
    },
  };
}

describe('npm run dev', { timeout: PROCESSES_TEST_MS }, () => {
  let dev: Dev;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let port: number;
  let baseUrl: string;
  let token: string;
  let output = '';
  const prefix = `t${randomBytes(5).toString('hex')}`;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-dev-'));
    port = await freePort();
    env = { ...process.env, REDIS_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'warn', NODE_ENV: 'development' };
    for (const k of ['DATABASE_URL', 'APP_DATABASE_URL', 'APP_SD_API_URL', 'PUBLIC_URL', 'STORAGE_DIR', 'SD_SIMULATOR_STEP_MS']) delete env[k];
    // Started in an empty folder, like a fresh clone: .data/ does not exist yet.
    dev = await startDev(dir, env, port);
    ({ token, baseUrl } = dev);
    output = dev.output();
  }, PROCESS_START_MS);

  afterAll(async () => {
    await dev?.stop();
    const redis = new Redis(REDIS_URL);
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('says loudly that it uses the simulator and embedded PGlite, and prints a ready GraphiQL link', () => {
    expect(output).toMatch(/SIMULATOR/);
    expect(output).toMatch(/embedded PGlite in \.data\/pglite/);
    expect(output).toMatch(/GraphiQL:\s+http:\/\/localhost:\d+\/graphql/);
  });

  it('serves the web page at /, signed in as the demo user', async () => {
    expect(output).toMatch(/Web page:\s+http:\/\/localhost:\d+\//);
    const res = await fetch(`${baseUrl}/`);
    expect(res.status).toBe(200);
    const html = await res.text();
    expect(html).toContain(`window.__SDJOBS__ = {"token":"${token}"}`);
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    expect((await fetch(`${baseUrl}${script}`)).headers.get('content-type')).toMatch(/javascript/);
  });

  it('serves GraphiQL from its own assets, with the demo token filled in', async () => {
    const res = await fetch(`${baseUrl}/graphql`, { headers: { accept: 'text/html' } });
    expect(res.status).toBe(200);
    const html = await res.text();
    expect(html).toContain('/graphiql-assets/yoga-graphiql.umd.js');
    expect(html).not.toContain('unpkg.com');
    expect(html).toContain(token);
    const asset = await fetch(`${baseUrl}/graphiql-assets/yoga-graphiql.umd.js`);
    expect(asset.status).toBe(200);
  });

  it('runs a generation from the demo token to a clean WebP', async () => {
    const res = await gql(baseUrl, GenerateDoc, { input: { prompt: 'a lighthouse at dusk', steps: 12 } }, token);
    const id = res.data?.generateImage.id;
    expect(id, JSON.stringify(res)).toBeDefined();
    const list = events(await watch(baseUrl, id!, token).done);
    expectWellFormedStream(list, id!);
    const path = statusPath(list);
    // The first state depends on how fast the worker took the job; from there on, every state is shown.
    expect(HAPPY_ORDER.slice(HAPPY_ORDER.indexOf(path[0]!))).toEqual(path);
    expect(path.slice(-4)).toEqual(['GENERATING', 'POST_PROCESSING', 'UPLOADING', 'SUCCEEDED']);
    expect(list.filter((e) => e.status === 'GENERATING').length).toBeGreaterThanOrEqual(2);
    const image = await fetch(list[list.length - 1]!.images[0]!.url.replace(/^http:\/\/localhost:\d+/, baseUrl));
    expect(image.headers.get('content-type')).toBe('image/webp');
    const bytes = Buffer.from(await image.arrayBuffer());
    expect(bytes.subarray(8, 12).toString('latin1')).toBe('WEBP');
    expect(bytes.includes('parameters')).toBe(false);
  });
  it('signs a person up with no SMTP server: the mail lands in the outbox and the log shows its link', async () => {
    const email = `new-${randomBytes(3).toString('hex')}@example.com`;
    const SignUp = graphql(`mutation DevSignUp($email: String!, $password: String!) { signUp(email: $email, password: $password) { email } }`);
    const SignIn = graphql(`mutation DevSignIn($email: String!, $password: String!) { signIn(email: $email, password: $password) { token } }`);
    const Verify = graphql(`mutation DevVerify($token: String!) { verifyEmail(token: $token) { email } }`);
    expect((await gql(baseUrl, SignUp, { email, password: 'a dev password' })).errors).toBeUndefined();
    await dev.waitFor(/\/account\/verify-email\?token=/);
    const link = /(http\S+\/account\/verify-email\?token=[A-Za-z0-9_%-]+)/.exec(dev.output())![1]!;
    const outbox = path.join(dir, '.data/outbox');
    const mails = await Promise.all((await readdir(outbox)).filter((f) => f.endsWith('.eml')).map((f) => readFile(path.join(outbox, f), 'utf8')));
    expect(mails.filter((m) => m.includes(`To: ${email}`) && m.includes('Confirm your email address'))).toHaveLength(1);
    // Dev lets the account generate before it verifies, and says so.
    expect(output).toMatch(/EMAIL_VERIFICATION_REQUIRED=false/);
    const session = (await gql(baseUrl, SignIn, { email, password: 'a dev password' })).data!.signIn.token;
    const res = await gql(baseUrl, GenerateDoc, { input: { prompt: 'first try', steps: 2 } }, session);
    expect(res.errors).toBeUndefined();
    // The link's token verifies the address.
    const token = new URL(link).searchParams.get('token')!;
    expect((await gql(baseUrl, Verify, { token })).data?.verifyEmail.email).toBe(email);
  });

  it("the README's first section, in a browser exactly as written: Generate, paste the id into Watch, see it run", async () => {
    // 1. Open the GraphiQL link dev printed.
    const link = /GraphiQL:\s+(http\S+)/.exec(output)?.[1];
    expect(link).toBeDefined();
    const browser = await launchChromium();
    try {
      const origin = new URL(link!).origin;
      const session = await openGraphiQL(browser, origin, { recordEventStreams: true });
      const { page } = session;
      expect(await page.locator('.graphiql-tab').allInnerTexts()).toEqual(['Generate', 'Watch', 'Me', 'Stop']);
      await waitForEditorText(page, await editorTool(page, 'Headers'), (t) => t.includes(`Bearer ${token}`));
      // 2 and 3. Generate, copy the id, paste it into Watch's Variables, run.
      const id = await generateThenWatch(page);
      const final = await waitForEditorText(page, '.graphiql-response', (t) => /"status":\s*"(SUCCEEDED|FAILED|CANCELLED)"/.test(t));
      expect(final).toContain('"status": "SUCCEEDED"');
      const { body, states } = await recordedStates(page);
      expect(states.at(-1)?.status).toBe('SUCCEEDED');
      // The image URL opens (the README: "open an image URL in a new browser tab"). Read from what
      // the browser received: the result pane wraps long lines.
      const imageUrl = /"url":"(http[^"]+\.webp\?expires=\d+&signature=[\w-]+)"/.exec(body)?.[1];
      expect(imageUrl, body).toBeDefined();
      const image = await page.context().newPage();
      const res = await image.goto(imageUrl!, { timeout: UI_TIMEOUT });
      expect(res?.status(), `${imageUrl} answered ${await res?.text()}`).toBe(200);
      expect(res?.headers()['content-type']).toBe('image/webp');
      // 4. Me shows the credits left.
      await openTab(page, 'Me');
      await waitForEditorText(page, '.graphiql-query-editor', (t) => t.includes('query Me'));
      const me = await runActiveTab(page, (t) => t.includes('photoCredits'));
      expect(me).toContain('"email": "demo@example.com"');
      const row = await gql(baseUrl, GenerationDoc, { id }, token);
      expect(row.data?.generation?.status).toBe('SUCCEEDED');
      expect(await non2xx(session)).toEqual([]);
      expect(session.problems).toEqual([]);
    } finally {
      await browser.close();
    }
  });

  it('user:create while dev runs goes through dev: its token works at once, and nothing is lost, also after a restart', async () => {
    const created = await script(dir, env, 'scripts/user-create.ts', ['--email', 'Second@Example.com', '--credits', '7']);
    expect(created.code, created.out).toBe(0);
    expect(created.out).toMatch(/has 7 photo credits/);
    const second = created.out.match(/token: (sdk_\S+)/)![1]!;
    expect((await gql(baseUrl, MeDoc, {}, second)).data?.me).toMatchObject({ email: 'second@example.com', photoCredits: 7 });

    // Meanwhile the demo user generates.
    const res = await gql(baseUrl, GenerateDoc, { input: { prompt: 'made while user:create ran', steps: 4 } }, token);
    const id = res.data!.generateImage.id;
    expect(events(await watch(baseUrl, id, token).done).at(-1)?.status).toBe('SUCCEEDED');

    // Nothing else may open dev's database while it runs; each says who holds it.
    const otherDev = await script(dir, { ...env, PORT: String(await freePort()) }, 'src/main/dev.ts');
    expect(otherDev.code).toBe(1);
    expect(otherDev.out).toMatch(new RegExp(`\`npm run dev\` \\(pid ${dev.child.pid}\\) is using it`));
    const migrate = await script(dir, env, 'scripts/migrate.ts');
    expect(migrate.code).toBe(1);
    expect(migrate.out).toMatch(/npm run migrate needs the embedded database in \.data\/pglite/);

    expect(await dev.stop()).toBe(0);
    dev = await startDev(dir, env, port);
    expect((await gql(baseUrl, MeDoc, {}, second)).data?.me).toMatchObject({ email: 'second@example.com', photoCredits: 7 });
    const again = await gql(baseUrl, GenerationDoc, { id }, dev.token);
    expect(again.data?.generation).toMatchObject({ status: 'SUCCEEDED' });
    // With dev stopped, user:create opens the database itself.
    expect(await dev.stop()).toBe(0);
    const offline = await script(dir, env, 'scripts/user-create.ts', ['--email', 'third@example.com', '--credits', '1']);
    expect(offline.code, offline.out).toBe(0);
  });
});
