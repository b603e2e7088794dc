/**
 * SdClient against the simulator (and, for transport failures, tiny raw servers) over real HTTP.
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import sharp from 'sharp';
import { SdClient, SdError } from '../../src/sd/client';
import type { SdProgress, Txt2ImgRequest } from '../../src/sd/client';
import { createSdSimulator } from '../../src/sd/simulator/index';
import type { SdSimulator, SimulatorOptions } from '../../src/sd/simulator/index';
import { WAIT_MS } from '../helpers/budgets';
import { pngSize, pngTexts } from './png-chunks';

let sim: SdSimulator;
let client: SdClient;
const opened: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  sim = createSdSimulator({ stepMs: 5 });
  client = new SdClient({ baseUrl: await sim.listen(0), progressIntervalMs: 5 });
});
afterAll(async () => {
  await Promise.all([sim.close(), ...opened.map((o) => o.close())]);
});

/** Another simulator for this file, closed in afterAll. */
async function extraSim(opts: SimulatorOptions): Promise<{ sim: SdSimulator; url: string }> {
  const s = createSdSimulator(opts);
  opened.push(s);
  return { sim: s, url: await s.listen(0) };
}

const req = (over: Partial<Txt2ImgRequest> = {}): Txt2ImgRequest => ({
  prompt: 'a cat in a hat',
  negativePrompt: 'blurry',
  width: 64,
  height: 64,
  steps: 20,
  cfgScale: 7,
  sampler: 'Euler a',
  seed: 1234,
  batchSize: 1,
  ...over,
});

/** Records progress and flags any call made after the txt2img promise settled. */
function recorder() {
  const events: SdProgress[] = [];
  let settled = false;
  let lateCalls = 0;
  return {
    events,
    onProgress: (p: SdProgress) => {
      if (settled) lateCalls++;
      events.push(p);
    },
    settle: () => {
      settled = true;
    },
    get lateCalls() {
      return lateCalls;
    },
  };
}

async function run<T>(p: Promise<T>, rec: ReturnType<typeof recorder>): Promise<T> {
  try {
    return await p;
  } finally {
    rec.settle();
  }
}

async function expectSdError(p: Promise<unknown>): Promise<SdError> {
  const err = await p.then(
    () => {
      throw new Error('expected an SdError, got success');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SdError);
  return err as SdError;
}

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

function expectMonotonic(events: SdProgress[]) {
  for (let i = 1; i < events.length; i++) {
    expect(events[i]!.progress).toBeGreaterThanOrEqual(events[i - 1]!.progress);
    if (events[i - 1]!.phase === 'active') expect(events[i]!.phase).toBe('active');
  }
}

describe('txt2img', () => {
  it('returns decoded images and seeds, and reports progress up to the end', async () => {
    const rec = recorder();
    const result = await run(client.txt2img(req({ batchSize: 2, seed: 777 }), { taskId: 'c-basic', onProgress: rec.onProgress }), rec);

    expect(result.images).toHaveLength(2);
    for (const img of result.images) {
      expect(await sharp(img).metadata()).toMatchObject({ format: 'png', width: 64, height: 64 });
      // The client asks for enable_pnginfo: false, so no prompt leaks in the files.
      expect(pngTexts(img)).toEqual({});
    }
    expect(result.seeds).toEqual([777, 778]);
    expect(result.info).toMatchObject({ seed: 777, steps: 20, sampler_name: 'Euler a', width: 64, height: 64 });

    const { events } = rec;
    expect(events.length).toBeGreaterThan(2);
    expectMonotonic(events);
    const last = events.at(-1)!;
    expect(last).toMatchObject({ phase: 'active', progress: 1, step: 20, totalSteps: 20 });
    const active = events.filter((e) => e.phase === 'active' && e.progress > 0 && e.progress < 1);
    expect(active.length).toBeGreaterThan(0);
    for (const e of active) {
      expect(e.totalSteps).toBe(20);
      expect(e.step).toBe(Math.round(e.progress * 20));
      expect(e.etaSeconds).not.toBeNull();
    }
    for (const e of events.filter((x) => x.progress === 0)) expect(e.etaSeconds).toBeNull();

    const previews = events.flatMap((e) => (e.preview ? [e.preview] : []));
    expect(previews.length).toBeGreaterThan(0);
    const ids = previews.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length); // each preview reported once
    expect(previews[0]!.dataUri).toMatch(/^data:image\/png;base64,/);
    const png = Buffer.from(previews[0]!.dataUri.split(',')[1]!, 'base64');
    expect(pngSize(png)).toEqual({ width: 64, height: 64 });

    await wait(30);
    expect(rec.lateCalls).toBe(0);
  });

  it('same seed gives the same image, different seeds differ', async () => {
    const [a, b, c] = await Promise.all([
      client.txt2img(req({ steps: 1, seed: 5 }), { taskId: 'c-det-a' }),
      client.txt2img(req({ steps: 1, seed: 5 }), { taskId: 'c-det-b' }),
      client.txt2img(req({ steps: 1, seed: 6 }), { taskId: 'c-det-c' }),
    ]);
    expect(a.images[0]!.equals(b.images[0]!)).toBe(true);
    expect(a.images[0]!.equals(c.images[0]!)).toBe(false);
  });

  it('reports the queue position while another job holds the server', async () => {
    const recA = recorder();
    const recB = recorder();
    const before = sim.stats.maxConcurrentRunning;
    const a = run(client.txt2img(req({ steps: 40, seed: 1 }), { taskId: 'c-q-a', onProgress: recA.onProgress }), recA);
    await vi.waitFor(() => expect(recA.events.some((e) => e.phase === 'active')).toBe(true), { timeout: WAIT_MS, interval: 5 });
    const b = run(client.txt2img(req({ steps: 5, seed: 2 }), { taskId: 'c-q-b', onProgress: recB.onProgress }), recB);
    const [ra, rb] = await Promise.all([a, b]);

    const queued = recB.events.filter((e) => e.phase === 'queued' && e.queuePosition !== null);
    expect(queued.length).toBeGreaterThan(0);
    expect(queued[0]).toMatchObject({ queuePosition: 1, progress: 0, step: null, etaSeconds: null });
    expectMonotonic(recA.events);
    expectMonotonic(recB.events);
    expect(recB.events.at(-1)).toMatchObject({ phase: 'active', progress: 1 });
    expect(ra.seeds).toEqual([1]);
    expect(rb.seeds).toEqual([2]);
    expect(Math.max(before, sim.stats.maxConcurrentRunning)).toBe(1);
  });

  it('falls back to the global progress endpoint when /internal/progress is missing', async () => {
    const { url } = await extraSim({ stepMs: 5, internalProgress: false });
    const c = new SdClient({ baseUrl: url, progressIntervalMs: 5 });
    const rec = recorder();
    const result = await run(c.txt2img(req({ steps: 30 }), { taskId: 'c-global', onProgress: rec.onProgress }), rec);
    expect(result.images).toHaveLength(1);

    const active = rec.events.filter((e) => e.phase === 'active' && e.progress < 1);
    expect(active.length).toBeGreaterThan(0);
    for (const e of active) {
      expect(e.totalSteps).toBe(30);
      expect(e.step).not.toBeNull();
    }
    // step comes from state.sampling_step, so it is an integer the server reported.
    expect(active.some((e) => (e.step ?? 0) > 0)).toBe(true);
    const previews = rec.events.flatMap((e) => (e.preview ? [e.preview] : []));
    expect(previews.length).toBeGreaterThan(0);
    expect(previews[0]!.dataUri).toMatch(/^data:image\/png;base64,iVBOR/);
    expect(new Set(previews.map((p) => p.dataUri)).size).toBe(previews.length);
    expectMonotonic(rec.events);
    expect(rec.events.at(-1)).toMatchObject({ progress: 1, step: 30 });
  });

  it('keeps going when onProgress throws', async () => {
    const result = await client.txt2img(req({ steps: 10 }), {
      taskId: 'c-throw',
      onProgress: () => {
        throw new Error('listener bug');
      },
    });
    expect(result.images).toHaveLength(1);
  });
});

describe('errors', () => {
  it('unknown sampler → SD_BAD_REQUEST with A1111 detail', async () => {
    const err = await expectSdError(client.txt2img(req({ sampler: 'Nope' }), { taskId: 'c-sampler' }));
    expect(err).toMatchObject({ code: 'SD_BAD_REQUEST', retryable: false, status: 400 });
    expect(err.message).toBe('Stable Diffusion rejected the request: HTTPException: Sampler not found');
  });

  it('FastAPI 422 → SD_BAD_REQUEST naming the field', async () => {
    const err = await expectSdError(client.txt2img(req({ width: Number.NaN }), { taskId: 'c-422' }));
    expect(err).toMatchObject({ code: 'SD_BAD_REQUEST', status: 422, retryable: false });
    expect(err.message).toContain('width: value is not a valid integer');
  });

  it.each([
    ['http500', 'SD_SERVER_ERROR', true, 500, 'CUDA out of memory (simulated)'],
    ['malformed', 'SD_BAD_RESPONSE', true, undefined, 'not JSON'],
    ['bad-request', 'SD_BAD_REQUEST', false, 400, 'Sampler not found'],
  ] as const)('failure mode %s → %s (retryable %s)', async (mode, code, retryable, status, text) => {
    sim.failNext(mode);
    const rec = recorder();
    const err = await expectSdError(run(client.txt2img(req(), { taskId: `c-fail-${mode}`, onProgress: rec.onProgress }), rec));
    expect(err.code).toBe(code);
    expect(err.retryable).toBe(retryable);
    expect(err.status).toBe(status);
    expect(err.message).toContain(text);
    expect(err.message).not.toMatch(/[A-Za-z0-9+/]{120,}/);
    await wait(20);
    expect(rec.lateCalls).toBe(0);
  });

  it('abort on a hanging server rejects promptly with SD_ABORTED', async () => {
    sim.failNext('hang');
    const ac = new AbortController();
    const rec = recorder();
    const p = run(client.txt2img(req(), { taskId: 'c-hang', signal: ac.signal, onProgress: rec.onProgress }), rec);
    await wait(50);
    // The server never answers: only the abort can settle the call.
    ac.abort();
    const err = await expectSdError(p);
    expect(err).toMatchObject({ code: 'SD_ABORTED', retryable: false });
    await wait(30);
    expect(rec.lateCalls).toBe(0);
  });

  it('an already aborted signal rejects without calling the server', async () => {
    const before = sim.stats.txt2imgCalls;
    const err = await expectSdError(client.txt2img(req(), { taskId: 'c-pre', signal: AbortSignal.abort() }));
    expect(err.code).toBe('SD_ABORTED');
    expect(sim.stats.txt2imgCalls).toBe(before);
  });

  it('aborting a running job interrupts it on the server', async () => {
    const before = sim.stats.interrupts;
    const ac = new AbortController();
    const rec = recorder();
    // Paused, the job can only end by the interrupt.
    sim.pause();
    const p = client.txt2img(req({ steps: 1000 }), { taskId: 'c-abort-run', signal: ac.signal, onProgress: rec.onProgress });
    await vi.waitFor(() => expect(rec.events.some((e) => e.phase === 'active')).toBe(true), { timeout: WAIT_MS, interval: 5 });
    ac.abort();
    expect((await expectSdError(p)).code).toBe('SD_ABORTED');
    await vi.waitFor(() => expect(sim.stats.interrupts).toBe(before + 1), { timeout: WAIT_MS, interval: 5 });
    try {
      // Still paused, and the server is idle again: the job was stopped there, not only let go here.
      await vi.waitFor(
        async () => expect((await (await fetch(`${sim.url}/sdapi/v1/progress`)).json()).state.job_count).toBe(0),
        { timeout: WAIT_MS, interval: 20 },
      );
    } finally {
      sim.resume();
    }
    await client.txt2img(req({ steps: 1 }), { taskId: 'c-after-abort' });
  });

  it('connection refused → SD_UNREACHABLE (retryable)', async () => {
    const port = await closedPort();
    const c = new SdClient({ baseUrl: `http://127.0.0.1:${port}`, progressIntervalMs: 5 });
    const rec = recorder();
    const err = await expectSdError(run(c.txt2img(req(), { taskId: 'c-refused', onProgress: rec.onProgress }), rec));
    expect(err).toMatchObject({ code: 'SD_UNREACHABLE', retryable: true });
    expect(err.message).toContain('ECONNREFUSED');
    expect((await expectSdError(c.samplers())).code).toBe('SD_UNREACHABLE');
  });

  it('a silent server → SD_TIMEOUT on the small calls', async () => {
    const silent = net.createServer(() => {});
    const sockets = new Set<net.Socket>();
    silent.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    opened.push({
      close: () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          silent.close(() => r());
        }),
    });
    const c = new SdClient({ baseUrl: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, progressIntervalMs: 5, fetchTimeoutMs: 100 });
    const err = await expectSdError(c.models());
    expect(err).toMatchObject({ code: 'SD_TIMEOUT', retryable: true });
    expect(err.message).toContain('100 ms');
  });

  it('keeps messages short and free of base64 from odd error bodies', async () => {
    const blob = Buffer.alloc(3000, 7).toString('base64');
    const raw = http.createServer((rq, rs) => {
      if (rq.url === '/sdapi/v1/samplers') {
        rs.writeHead(500, { 'content-type': 'application/json' });
        rs.end(JSON.stringify({ error: 'ValueError', detail: `bad image ${blob}`, body: '', errors: '' }));
      } else if (rq.url === '/sdapi/v1/sd-models') {
        rs.writeHead(502, { 'content-type': 'text/html' });
        rs.end(`<html><body><h1>502 Bad Gateway</h1>${'x'.repeat(2000)}</body></html>`);
      } else {
        rs.writeHead(200, { 'content-type': 'application/json' });
        rs.end('{"images": []}');
      }
    });
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    opened.push({ close: () => new Promise<void>((r) => { raw.closeAllConnections(); raw.close(() => r()); }) });
    const c = new SdClient({ baseUrl: `http://127.0.0.1:${(raw.address() as AddressInfo).port}/`, progressIntervalMs: 5 });

    const e1 = await expectSdError(c.samplers());
    expect(e1).toMatchObject({ code: 'SD_SERVER_ERROR', status: 500, retryable: true });
    expect(e1.message).toContain('ValueError: bad image [base64 data]');
    expect(e1.message).not.toContain(blob.slice(0, 50));

    const e2 = await expectSdError(c.models());
    expect(e2).toMatchObject({ code: 'SD_SERVER_ERROR', status: 502 });
    expect(e2.message).toContain('502 Bad Gateway');
    expect(e2.message.length).toBeLessThan(400);

    // 200 without a JSON-string info.
    const e3 = await expectSdError(c.txt2img(req(), { taskId: 'c-noinfo' }));
    expect(e3).toMatchObject({ code: 'SD_BAD_RESPONSE', retryable: true });
    expect(e3.message).toContain('"info"');
  });
});

describe('auth', () => {
  const creds = { username: 'bob', password: 'p@ss:word' };

  it('sends basic auth on every request and falls back to global progress (--api-auth hides /internal/progress)', async () => {
    const { url } = await extraSim({ stepMs: 5, auth: creds });
    const c = new SdClient({ baseUrl: url, auth: creds, progressIntervalMs: 5 });
    expect(await c.samplers()).toContain('Euler a');
    expect(await c.models()).toEqual(['simulated-v1-5.safetensors [0123456789]']);
    const rec = recorder();
    const result = await run(c.txt2img(req({ steps: 20 }), { taskId: 'c-auth', onProgress: rec.onProgress }), rec);
    expect(result.images).toHaveLength(1);
    expect(rec.events.some((e) => e.phase === 'active' && e.progress > 0 && e.progress < 1)).toBe(true);

    // Credentials in the URL work too.
    const u = new URL(url);
    u.username = creds.username;
    u.password = encodeURIComponent(creds.password);
    expect(await new SdClient({ baseUrl: u.toString(), progressIntervalMs: 5 }).samplers()).toContain('Euler');
  });

  it('wrong or missing credentials → SD_UNAUTHORIZED (not retryable)', async () => {
    const { url } = await extraSim({ stepMs: 5, auth: creds });
    const wrong = new SdClient({ baseUrl: url, auth: { username: 'bob', password: 'nope' }, progressIntervalMs: 5 });
    const err = await expectSdError(wrong.txt2img(req(), { taskId: 'c-unauth' }));
    expect(err).toMatchObject({ code: 'SD_UNAUTHORIZED', status: 401, retryable: false });
    const missing = new SdClient({ baseUrl: url, progressIntervalMs: 5 });
    expect((await expectSdError(missing.samplers())).code).toBe('SD_UNAUTHORIZED');
  });
});

describe('interruptIfActive', () => {
  it('interrupts only when the task is the active one', async () => {
    const before = sim.stats.interrupts;
    const rec = recorder();
    const p = client.txt2img(req({ steps: 1000, batchSize: 2 }), { taskId: 'c-int', onProgress: rec.onProgress });
    await vi.waitFor(() => expect(rec.events.some((e) => e.phase === 'active')).toBe(true), { timeout: WAIT_MS, interval: 5 });

    expect(await client.interruptIfActive('someone-else')).toBe(false);
    expect(sim.stats.interrupts).toBe(before);
    expect(await client.interruptIfActive('c-int')).toBe(true);
    const result = await p; // A1111 still answers with what it has
    expect(result.images).toHaveLength(2);
    expect(sim.stats.interrupts).toBe(before + 1);
    expect(await client.interruptIfActive('c-int')).toBe(false);
  });

  it('never interrupts where /internal/progress is missing (cannot tell whose job runs)', async () => {
    const { sim: s, url } = await extraSim({ stepMs: 5, internalProgress: false });
    const c = new SdClient({ baseUrl: url, progressIntervalMs: 5 });
    const p = c.txt2img(req({ steps: 20 }), { taskId: 'c-int-global' });
    expect(await c.interruptIfActive('c-int-global')).toBe(false);
    await p;
    expect(s.stats.interrupts).toBe(0);
  });
});

describe('discovery', () => {
  it('lists sampler names and model titles', async () => {
    expect(await client.samplers()).toEqual(expect.arrayContaining(['Euler a', 'Euler', 'DPM++ 2M', 'DDIM', 'UniPC']));
    expect(await client.models()).toEqual(['simulated-v1-5.safetensors [0123456789]']);
  });
});

/** A port nothing listens on: bind one, then release it. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}
