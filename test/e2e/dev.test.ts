/**
 * `npm run dev` on a fresh checkout: no DATABASE_URL (embedded PGlite), no APP_SD_API_URL (the
 * simulator), Redis present. The demo token it prints must drive a whole generation.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, REDIS_URL } from '../helpers/stack';
import { events, expectWellFormedStream, HAPPY_ORDER, statusPath, watch } from '../integration/helpers';
import { gql } from '../helpers/graphql';
import { GenerateDoc } from '../integration/documents';

const ROOT = path.resolve(import.meta.dirname, '../..');

describe('npm run dev', () => {
  let child: ChildProcess;
  let dir: string;
  let output = '';
  let baseUrl: string;
  let token: string;
  const prefix = `t${randomBytes(5).toString('hex')}`;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-dev-'));
    const port = await freePort();
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), REDIS_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'warn', NODE_ENV: 'development' };
    for (const k of ['DATABASE_URL', 'APP_DATABASE_URL', 'APP_SD_API_URL', 'PUBLIC_URL', 'STORAGE_DIR']) delete env[k];
    // Started in an empty folder, like a fresh clone: .data/ does not exist yet.
    child = spawn(path.join(ROOT, 'node_modules/.bin/tsx'), [path.join(ROOT, 'src/main/dev.ts')], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const deadline = Date.now() + 50_000;
    while (!/Token:\s+sdk_/.test(output)) {
      if (child.exitCode !== null) throw new Error(`dev exited early:\n${output}`);
      if (Date.now() > deadline) throw new Error(`dev did not start:\n${output}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    token = output.match(/Token:\s+(sdk_\S+)/)![1]!;
    baseUrl = `http://127.0.0.1:${port}`;
  }, 60_000);

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
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
});
