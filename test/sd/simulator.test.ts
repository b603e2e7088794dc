/**
 * The A1111 simulator over real HTTP, spoken to with plain fetch the way A1111 clients do.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import sharp from 'sharp';
import { createSdSimulator } from '../../src/sd/simulator/index';
import type { SdSimulator } from '../../src/sd/simulator/index';
import { WAIT_MS } from '../helpers/budgets';
import { pngSize, pngTexts, readPngChunks } from './png-chunks';

let sim: SdSimulator;
let base: string;

beforeAll(async () => {
  sim = createSdSimulator({ stepMs: 5 });
  base = await sim.listen(0);
});
afterAll(async () => {
  await sim.close();
});

interface JsonResponse {
  status: number;
  headers: Headers;
  body: unknown;
  text: string;
}

async function call(method: string, path: string, body?: unknown, init: { headers?: Record<string, string>; url?: string; signal?: AbortSignal } = {}): Promise<JsonResponse> {
  const res = await fetch(`${init.url ?? base}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...init.headers },
    body: body === undefined ? null : typeof body === 'string' ? body : JSON.stringify(body),
    signal: init.signal ?? AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

interface Txt2ImgBody {
  images: string[];
  parameters: Record<string, unknown>;
  info: string;
}
interface Info {
  seed: number;
  all_seeds: number[];
  subseed: number;
  width: number;
  height: number;
  sampler_name: string;
  steps: number;
  batch_size: number;
  sd_model_name: string;
  sd_model_hash: string;
  infotexts: string[];
  job_timestamp: string;
}

async function txt2img(body: Record<string, unknown>, url?: string): Promise<{ body: Txt2ImgBody; info: Info; images: Buffer[] }> {
  const res = await call('POST', '/sdapi/v1/txt2img', body, url ? { url } : {});
  expect(res.status, res.text.slice(0, 300)).toBe(200);
  const b = res.body as Txt2ImgBody;
  return { body: b, info: JSON.parse(b.info) as Info, images: b.images.map((s) => Buffer.from(s, 'base64')) };
}

const progressOf = async (id: string, idLivePreview = -1, url?: string) =>
  (await call('POST', '/internal/progress', { id_task: id, id_live_preview: idLivePreview, live_preview: true }, url ? { url } : {}))
    .body as Record<string, unknown>;

describe('txt2img images', () => {
  it('returns real PNGs of the requested size with a parameters text chunk', async () => {
    const { images, info } = await txt2img({
      prompt: 'a red fox in snow',
      negative_prompt: 'blurry',
      width: 320,
      height: 192,
      steps: 3,
      seed: 123,
      sampler_name: 'Euler a',
    });
    expect(images).toHaveLength(1);
    const png = images[0]!;
    const meta = await sharp(png).metadata();
    expect(meta).toMatchObject({ format: 'png', width: 320, height: 192 });
    expect(pngSize(png)).toEqual({ width: 320, height: 192 });
    const types = readPngChunks(png).map((c) => c.type);
    expect(types[0]).toBe('IHDR');
    expect(types.at(-1)).toBe('IEND');
    expect(types).toContain('IDAT');
    const params = pngTexts(png).parameters;
    expect(params).toBe(
      'a red fox in snow\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 320x192, Model hash: 0123456789, Model: simulated-v1-5',
    );
    expect(info.infotexts).toEqual([params]);
    // The pixels decode and are not a flat colour.
    const stats = await sharp(png).stats();
    expect(stats.channels.some((c) => c.stdev > 5)).toBe(true);
  });

  it('omits the parameters chunk when override_settings.enable_pnginfo is false', async () => {
    const { images } = await txt2img({ prompt: 'secret prompt', steps: 1, width: 64, height: 64, override_settings: { enable_pnginfo: false } });
    expect(pngTexts(images[0]!)).toEqual({});
    expect(images[0]!.includes('secret prompt')).toBe(false);
  });

  it('is deterministic in prompt and seed', async () => {
    const req = { prompt: 'a lighthouse', steps: 1, width: 128, height: 128 };
    const a = await txt2img({ ...req, seed: 42 });
    const b = await txt2img({ ...req, seed: 42 });
    const c = await txt2img({ ...req, seed: 43 });
    const d = await txt2img({ ...req, prompt: 'a windmill', seed: 42, override_settings: { enable_pnginfo: false } });
    const e = await txt2img({ ...req, seed: 42, override_settings: { enable_pnginfo: false } });
    expect(a.images[0]!.equals(b.images[0]!)).toBe(true);
    expect(a.images[0]!.equals(c.images[0]!)).toBe(false);
    // Without the text chunk, only pixels can differ.
    expect(d.images[0]!.equals(e.images[0]!)).toBe(false);
    const [pd, pe] = await Promise.all([sharp(d.images[0]!).raw().toBuffer(), sharp(e.images[0]!).raw().toBuffer()]);
    expect(pd.equals(pe)).toBe(false);
  });

  it('gives a batch consecutive seeds and echoes seed -1 in parameters', async () => {
    const { body, info, images } = await txt2img({ prompt: 'batch', steps: 2, width: 64, height: 64, batch_size: 3, seed: -1 });
    expect(images).toHaveLength(3);
    expect(body.parameters.seed).toBe(-1);
    expect(Number.isInteger(info.seed)).toBe(true);
    expect(info.seed).toBeGreaterThanOrEqual(0);
    expect(info.seed).toBeLessThan(4294967294);
    expect(info.all_seeds).toEqual([info.seed, info.seed + 1, info.seed + 2]);
    expect(info).toMatchObject({ width: 64, height: 64, steps: 2, batch_size: 3, sampler_name: 'Euler', sd_model_name: 'simulated-v1-5', sd_model_hash: '0123456789' });
    expect(info.job_timestamp).toMatch(/^\d{14}$/);
    expect(new Set(images.map((i) => i.toString('base64'))).size).toBe(3);
  });

  // How fast it renders is the benchmarks' business (npm run bench), not a test's.
  it('renders 1024×1024', async () => {
    const { images } = await txt2img({ prompt: 'big', steps: 1, width: 1024, height: 1024, seed: 1 });
    expect(pngSize(images[0]!)).toEqual({ width: 1024, height: 1024 });
  });
});

describe('queue and progress', () => {
  it('runs one job at a time and reports the waiting one as "In queue"', async () => {
    const before = sim.stats;
    const first = txt2img({ prompt: 'first', steps: 40, width: 64, height: 64, seed: 1, force_task_id: 'q-first' });
    await vi.waitFor(async () => expect((await progressOf('q-first')).active).toBe(true), { timeout: WAIT_MS, interval: 5 });

    const second = txt2img({ prompt: 'second', steps: 2, width: 64, height: 64, seed: 2, force_task_id: 'q-second' });
    await vi.waitFor(
      async () => {
        const p = await progressOf('q-second');
        expect(p).toEqual({ active: false, queued: true, completed: false, progress: null, eta: null, live_preview: null, id_live_preview: -1, textinfo: 'In queue: 1/1' });
      },
      { timeout: WAIT_MS, interval: 5 },
    );
    const active = await progressOf('q-first');
    expect(active).toMatchObject({ active: true, queued: false, completed: false });
    expect(active.progress).toBeGreaterThanOrEqual(0);
    expect(active.progress).toBeLessThan(1);

    const [a, b] = await Promise.all([first, second]);
    expect(a.info.seed).toBe(1);
    expect(b.info.seed).toBe(2);
    expect(pngTexts(a.images[0]!).parameters).toMatch(/^first\n/);
    expect(pngTexts(b.images[0]!).parameters).toMatch(/^second\n/);
    expect(sim.stats.maxConcurrentRunning).toBe(1);
    expect(sim.stats.txt2imgCalls).toBe(before.txt2imgCalls + 2);

    expect(await progressOf('q-first')).toMatchObject({ active: false, queued: false, completed: true, progress: 1, textinfo: 'Done' });
    expect(await progressOf('never-seen')).toMatchObject({ active: false, queued: false, completed: false, textinfo: 'Waiting...' });
  });

  it('sends a live preview only when its id differs from the one sent back', async () => {
    const job = txt2img({ prompt: 'previews', steps: 40, width: 256, height: 128, force_task_id: 'prev-1' });
    let first: Record<string, unknown> = {};
    await vi.waitFor(
      async () => {
        first = await progressOf('prev-1');
        expect(typeof first.live_preview).toBe('string');
      },
      { timeout: WAIT_MS, interval: 5 },
    );
    const uri = first.live_preview as string;
    expect(uri).toMatch(/^data:image\/png;base64,/);
    const preview = Buffer.from(uri.slice(uri.indexOf(',') + 1), 'base64');
    expect(pngSize(preview)).toEqual({ width: 64, height: 32 });
    const id = first.id_live_preview as number;
    expect(id).toBeGreaterThan(0);

    // Sending back the id we have: no image unless a newer one exists.
    const again = await progressOf('prev-1', id);
    if (again.id_live_preview === id) expect(again.live_preview).toBeNull();
    await vi.waitFor(
      async () => {
        const later = await progressOf('prev-1', id);
        expect(later.id_live_preview).toBeGreaterThan(id);
        expect(typeof later.live_preview).toBe('string');
      },
      { timeout: WAIT_MS, interval: 5 },
    );
    await job;
  });

  it('answers the global progress endpoint like A1111', async () => {
    const idle = (await call('GET', '/sdapi/v1/progress?skip_current_image=false')).body as Record<string, unknown>;
    expect(idle).toMatchObject({ progress: 0, eta_relative: 0, current_image: null, state: { job_count: 0 } });

    const job = txt2img({ prompt: 'global', steps: 40, width: 64, height: 64, force_task_id: 'global-1' });
    await vi.waitFor(
      async () => {
        const g = (await call('GET', '/sdapi/v1/progress?skip_current_image=false')).body as {
          progress: number;
          eta_relative: number;
          current_image: string | null;
          state: Record<string, unknown>;
        };
        expect(g.state).toMatchObject({ job: 'scripts_txt2img', job_count: 1, job_no: 0, sampling_steps: 40, interrupted: false });
        expect(g.state.sampling_step).toBeGreaterThan(0);
        expect(g.progress).toBeGreaterThan(0.01);
        expect(typeof g.current_image).toBe('string');
        // Raw base64, no data: prefix.
        expect(g.current_image!.startsWith('iVBOR')).toBe(true);
      },
      { timeout: WAIT_MS, interval: 5 },
    );
    const skipped = (await call('GET', '/sdapi/v1/progress?skip_current_image=true')).body as Record<string, unknown>;
    expect(skipped.current_image).toBeNull();
    await job;
  });

  it('interrupt stops the running job early and still answers with its images', async () => {
    const before = sim.stats.interrupts;
    // Paused, the job can only end by the interrupt.
    sim.pause();
    try {
      const job = txt2img({ prompt: 'long', steps: 1000, width: 64, height: 64, batch_size: 2, force_task_id: 'int-1' });
      await vi.waitFor(async () => expect((await progressOf('int-1')).active).toBe(true), { timeout: WAIT_MS, interval: 5 });
      const res = await call('POST', '/sdapi/v1/interrupt');
      expect(res).toMatchObject({ status: 200, body: {} });
      const { images } = await job;
      expect(images).toHaveLength(2);
      expect(sim.stats.interrupts).toBe(before + 1);
    } finally {
      sim.resume();
    }
  });

  it('pause holds the running job at its step until resume', async () => {
    sim.pause();
    try {
      const job = txt2img({ prompt: 'held', steps: 4, width: 64, height: 64, force_task_id: 'pause-1' });
      await vi.waitFor(async () => expect((await progressOf('pause-1')).active).toBe(true), { timeout: WAIT_MS, interval: 5 });
      const held = await progressOf('pause-1');
      // Twenty step times later it has not moved, and it has not answered.
      let answered = false;
      void job.then(() => (answered = true));
      await new Promise((r) => setTimeout(r, 100));
      expect((await progressOf('pause-1')).progress).toBe(held.progress);
      expect(answered).toBe(false);
      sim.resume();
      const { images, info } = await job;
      expect(images).toHaveLength(1);
      expect(info.steps).toBe(4);
    } finally {
      sim.resume();
    }
  });

  it('remembers only the last 16 finished task ids', async () => {
    for (let i = 0; i < 17; i++) await txt2img({ prompt: 'tiny', steps: 1, width: 8, height: 8, force_task_id: `fin-${i}` });
    expect((await progressOf('fin-0')).textinfo).toBe('Waiting...');
    expect(await progressOf('fin-1')).toMatchObject({ completed: true, textinfo: 'Done' });
    expect(await progressOf('fin-16')).toMatchObject({ completed: true });
  });
});

describe('discovery routes', () => {
  it('lists samplers and models', async () => {
    const samplers = (await call('GET', '/sdapi/v1/samplers')).body as { name: string; aliases: unknown[]; options: object }[];
    const names = samplers.map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining(['Euler a', 'Euler', 'DPM++ 2M', 'DDIM', 'UniPC']));
    expect(samplers[0]).toEqual({ name: names[0], aliases: [], options: {} });
    const models = (await call('GET', '/sdapi/v1/sd-models')).body;
    expect(models).toEqual([expect.objectContaining({ title: 'simulated-v1-5.safetensors [0123456789]', model_name: 'simulated-v1-5', hash: '0123456789', config: null })]);
  });
});

describe('bad input', () => {
  it('rejects an unknown sampler with 400 like A1111', async () => {
    const res = await call('POST', '/sdapi/v1/txt2img', { prompt: 'x', sampler_name: 'Nope' });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'HTTPException', detail: 'Sampler not found', body: '', errors: '' });
  });

  it('answers FastAPI-style 422s for wrong types and bad JSON', async () => {
    const res = await call('POST', '/sdapi/v1/txt2img', { prompt: 'x', width: 'wide', height: null });
    expect(res.status).toBe(422);
    const detail = (res.body as { detail: { loc: unknown[]; msg: string; type: string }[] }).detail;
    expect(detail.map((d) => d.loc)).toEqual([
      ['body', 'width'],
      ['body', 'height'],
    ]);
    expect(detail[0]).toMatchObject({ msg: 'value is not a valid integer', type: 'type_error.integer' });

    const broken = await call('POST', '/sdapi/v1/txt2img', '{"prompt": ');
    expect(broken.status).toBe(422);
    expect((broken.body as { detail: unknown[] }).detail).toHaveLength(1);

    const notObject = await call('POST', '/sdapi/v1/txt2img', '[1,2]');
    expect(notObject.status).toBe(422);
  });

  it('answers 404 for unknown routes and 405 for wrong methods', async () => {
    expect(await call('GET', '/nope')).toMatchObject({ status: 404, body: { detail: 'Not Found' } });
    expect(await call('GET', '/sdapi/v1/txt2img')).toMatchObject({ status: 405 });
  });

  it('survives garbage on the progress route', async () => {
    expect((await call('POST', '/internal/progress', 'null')).body).toMatchObject({ active: false, textinfo: 'Waiting...' });
    expect((await call('POST', '/internal/progress', '{"id_task": 5}')).status).toBe(200);
  });
});

describe('failure modes', () => {
  const ok = { prompt: 'x', steps: 1, width: 8, height: 8 };

  it('http500 answers A1111-style 500 once, then works again', async () => {
    sim.failNext('http500');
    const res = await call('POST', '/sdapi/v1/txt2img', ok);
    expect(res.status).toBe(500);
    expect(res.body).toEqual({ error: 'RuntimeError', detail: 'CUDA out of memory (simulated)', body: '', errors: '' });
    expect((await call('POST', '/sdapi/v1/txt2img', ok)).status).toBe(200);
  });

  it('malformed answers 200 with invalid JSON; times counts calls', async () => {
    sim.failNext('malformed', 2);
    for (let i = 0; i < 2; i++) {
      const res = await call('POST', '/sdapi/v1/txt2img', ok);
      expect(res.status).toBe(200);
      expect(res.text).toBe('{"images": "not-an-array"');
    }
    expect((await call('POST', '/sdapi/v1/txt2img', ok)).status).toBe(200);
  });

  it('bad-request answers 400; the HTTP control route queues failures too', async () => {
    const ctl = await call('POST', '/simulator/fail', { mode: 'bad-request', times: 1 });
    expect(ctl.status).toBe(200);
    expect((await call('POST', '/simulator/fail', { mode: 'explode' })).status).toBe(422);
    const res = await call('POST', '/sdapi/v1/txt2img', ok);
    expect(res).toMatchObject({ status: 400, body: { detail: 'Sampler not found' } });
  });

  it('hang never answers until the client gives up', async () => {
    sim.failNext('hang');
    // Only the client's own abort ends the call: the server never answers it.
    await expect(call('POST', '/sdapi/v1/txt2img', ok, { signal: AbortSignal.timeout(150) })).rejects.toThrow(/abort|timeout/i);
    expect((await call('POST', '/sdapi/v1/txt2img', ok)).status).toBe(200);
  });

  it('rejects unknown modes in failNext', () => {
    expect(() => sim.failNext('explode' as never)).toThrow(RangeError);
  });
});

describe('server variants', () => {
  it('--api-auth: basic auth on /sdapi/*, no /internal/progress', async () => {
    const authSim = createSdSimulator({ stepMs: 1, auth: { username: 'alice', password: 's3cret:x' } });
    const url = await authSim.listen();
    try {
      const none = await call('GET', '/sdapi/v1/samplers', undefined, { url });
      expect(none.status).toBe(401);
      expect(none.headers.get('www-authenticate')).toMatch(/^Basic/);
      const wrong = await call('GET', '/sdapi/v1/samplers', undefined, { url, headers: { authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` } });
      expect(wrong.status).toBe(401);
      const right = await call('GET', '/sdapi/v1/samplers', undefined, { url, headers: { authorization: `Basic ${Buffer.from('alice:s3cret:x').toString('base64')}` } });
      expect(right.status).toBe(200);
      expect((await call('POST', '/internal/progress', { id_task: 'x' }, { url })).status).toBe(404);
    } finally {
      await authSim.close();
    }
  });

  it('internalProgress:false answers 404 on /internal/progress like --nowebui', async () => {
    const plain = createSdSimulator({ stepMs: 1, internalProgress: false });
    const url = await plain.listen();
    try {
      expect(await call('POST', '/internal/progress', { id_task: 'x' }, { url })).toMatchObject({ status: 404, body: { detail: 'Not Found' } });
      expect((await call('GET', '/sdapi/v1/progress', undefined, { url })).status).toBe(200);
    } finally {
      await plain.close();
    }
  });

  it('close() ends hanging and running requests promptly and is safe to call twice', async () => {
    const doomed = createSdSimulator({ stepMs: 50 });
    const url = await doomed.listen();
    // Paused: nothing ends by itself, so only close() can settle these requests.
    doomed.pause();
    doomed.failNext('hang');
    const hanging = call('POST', '/sdapi/v1/txt2img', { steps: 1 }, { url });
    const running = call('POST', '/sdapi/v1/txt2img', { steps: 1000, width: 8, height: 8, force_task_id: 'doomed' }, { url });
    const queued = call('POST', '/sdapi/v1/txt2img', { steps: 1, width: 8, height: 8 }, { url });
    await vi.waitFor(async () => expect((await progressOf('doomed', -1, url)).active).toBe(true), { timeout: WAIT_MS, interval: 5 });
    await Promise.all([doomed.close(), doomed.close()]);
    const settled = await Promise.allSettled([hanging, running, queued]);
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(() => doomed.url).not.toThrow();
    await expect(doomed.listen()).rejects.toThrow(/closed/);
  });
});
