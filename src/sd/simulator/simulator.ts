/**
 * An HTTP server that behaves like an AUTOMATIC1111 WebUI started with --api, for `npm run dev`
 * and tests (see shared/reference/a1111-api.md for the real server's facts). Building it does no
 * I/O; `listen()` opens the port and `close()` releases everything.
 *
 * Like the real server: a txt2img request is registered as pending before it waits for the one
 * global lock, so exactly one job samples at a time; progress is per task on /internal/progress
 * and global on /sdapi/v1/progress; interrupt is global and returns what was generated so far.
 */
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomInt } from 'node:crypto';
import { DEFAULT_STEP_MS } from './defaults';
import { encodePng } from './png';
import { A1111_SAMPLERS } from '../samplers';
import { previewSize, renderPicture } from './picture';
import { parseTxt2ImgBody, sdError, validationError } from './txt2img-request';
import type { Txt2ImgParams } from './txt2img-request';

export interface SimulatorOptions {
  /** Time per sampling step. Default DEFAULT_STEP_MS (500 ms). */
  stepMs?: number;
  /** When set, /sdapi/* needs HTTP basic and /internal/progress answers 404, like --api-auth. */
  auth?: { username: string; password: string };
  /** Default true; false makes /internal/progress answer 404, like --nowebui. */
  internalProgress?: boolean;
  /**
   * Default false; true behaves like SD.Next: /internal/progress exists but never registers a task
   * id (every id reads "Waiting..."), so only the global /sdapi/v1/progress tells anything.
   */
  ignoreTaskId?: boolean;
  /** Sampler names offered; default a realistic A1111 list. */
  samplers?: string[];
  /** Called after each answered txt2img (benchmarks use it to tell time in SD from time outside it). */
  onTaskDone?: (timing: TaskTiming) => void;
}

/** Epoch milliseconds (sub-millisecond precision) of one txt2img call's life in the server. */
export interface TaskTiming {
  taskId: string;
  /** The request body was read. */
  receivedAt: number;
  /** The response was sent. */
  answeredAt: number;
}

const nowMs = () => performance.timeOrigin + performance.now();

export const FAILURE_MODES = ['http500', 'hang', 'malformed', 'bad-request'] as const;
export type FailureMode = (typeof FAILURE_MODES)[number];

export interface SimulatorStats {
  txt2imgCalls: number;
  interrupts: number;
  maxConcurrentRunning: number;
  /** txt2img requests received and not yet answered (queued at the lock or sampling) now. */
  txt2imgInFlight: number;
  /** The most txt2img requests that were ever in flight at once (a fleet's client must keep it at 1). */
  maxConcurrentTxt2img: number;
}

export interface SdSimulator {
  /** http://127.0.0.1:<port>; throws before listen(). */
  readonly url: string;
  /** Resolves the url; port 0 (the default) picks a free port. Host defaults to 127.0.0.1. */
  listen(port?: number, host?: string): Promise<string>;
  /** Closes the server and every open connection, ends hanging requests, clears all timers. Safe to call twice. */
  close(): Promise<void>;
  /** The next `times` (default 1) txt2img calls fail this way. */
  failNext(mode: FailureMode, times?: number): void;
  setStepMs(ms: number): void;
  /**
   * Holds sampling: the running job stays at its current step (reported as active, so a worker sees
   * GENERATING) until `resume()`. Tests use it to act mid-generation however slow the machine is.
   */
  pause(): void;
  resume(): void;
  /** A snapshot of the counters. */
  readonly stats: SimulatorStats;
}

/** The simulator offers a stock A1111 install's samplers unless told otherwise. */
export const DEFAULT_SAMPLERS = A1111_SAMPLERS;

const MODEL = {
  title: 'simulated-v1-5.safetensors [0123456789]',
  model_name: 'simulated-v1-5',
  hash: '0123456789',
  sha256: '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef',
  filename: '/models/simulated-v1-5.safetensors',
  config: null,
} as const;

/** A1111 remembers only the last 16 finished task ids. */
const MAX_FINISHED = 16;
/** A new live preview every this many steps. */
const PREVIEW_EVERY_STEPS = 2;
const MAX_BODY_BYTES = 1 << 20;
/** Seeds are drawn below this, as A1111 does. */
const SEED_LIMIT = 4294967294;

/** The job that holds the lock: what A1111 keeps in `shared.state`. */
interface RunningJob {
  taskId: string;
  params: Txt2ImgParams;
  seeds: number[];
  subseeds: number[];
  jobCount: number;
  jobNo: number;
  step: number;
  startedAt: number;
  jobTimestamp: string;
  previewId: number;
  /** Raw base64 PNG of the latest live preview. */
  previewPng: string | null;
  interrupted: boolean;
  timer: NodeJS.Timeout | null;
  /** Ends sampling now (interrupt or close). */
  stop: () => void;
}

type Handler = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void> | void;

class Simulator implements SdSimulator {
  private readonly server: http.Server;
  private readonly samplers: readonly string[];
  private readonly onTaskDone: SimulatorOptions['onTaskDone'];
  private readonly auth: { username: string; password: string } | undefined;
  private readonly internalProgressEnabled: boolean;
  private readonly ignoreTaskId: boolean;
  private stepMs: number;
  private readonly counters: SimulatorStats = { txt2imgCalls: 0, interrupts: 0, maxConcurrentRunning: 0, txt2imgInFlight: 0, maxConcurrentTxt2img: 0 };
  private readonly failures: FailureMode[] = [];
  /** Task id → arrival number; Map order is queue order. */
  private readonly pending = new Map<string, number>();
  private pendingSeq = 0;
  private readonly finished: string[] = [];
  private current: RunningJob | null = null;
  private paused = false;
  /** Steps that came due while paused; `resume()` runs them. */
  private readonly parked: Array<() => void> = [];
  private running = 0;
  /** Tail of the promise chain that serialises jobs (A1111's queue_lock). Never rejects. */
  private lock: Promise<void> = Promise.resolve();
  private readonly hanging = new Set<ServerResponse>();
  private lastJobTimestamp = '0';
  private address: string | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly routes: Map<string, Partial<Record<string, Handler>>>;

  constructor(opts: SimulatorOptions) {
    this.stepMs = opts.stepMs ?? DEFAULT_STEP_MS;
    this.auth = opts.auth;
    this.internalProgressEnabled = (opts.internalProgress ?? true) && !opts.auth;
    this.ignoreTaskId = opts.ignoreTaskId ?? false;
    this.samplers = opts.samplers ?? DEFAULT_SAMPLERS;
    this.onTaskDone = opts.onTaskDone;
    this.routes = new Map<string, Partial<Record<string, Handler>>>([
      ['/sdapi/v1/txt2img', { POST: (req, res) => this.txt2img(req, res) }],
      ['/sdapi/v1/progress', { GET: (_req, res, url) => this.globalProgress(res, url) }],
      ['/sdapi/v1/interrupt', { POST: (_req, res) => this.interrupt(res) }],
      ['/sdapi/v1/samplers', { GET: (_req, res) => sendJson(res, 200, this.samplers.map((name) => ({ name, aliases: [], options: {} }))) }],
      ['/sdapi/v1/sd-models', { GET: (_req, res) => sendJson(res, 200, [MODEL]) }],
      ['/internal/progress', { POST: (req, res) => this.internalProgress(req, res) }],
      ['/simulator/fail', { POST: (req, res) => this.failRoute(req, res) }],
      ['/simulator/stats', { GET: (_req, res) => sendJson(res, 200, this.stats) }],
    ]);
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        // Last resort: a bug here must answer like A1111's exception handler, not crash the process.
        const e = err instanceof Error ? err : new Error(String(err));
        sendJson(res, 500, sdError(e.name, e.message));
      });
    });
    // Garbage on the socket: drop the connection rather than throwing.
    this.server.on('clientError', (_err, socket) => socket.destroy());
  }

  get url(): string {
    if (!this.address) throw new Error('The SD simulator is not listening; call listen() first.');
    return this.address;
  }

  get stats(): SimulatorStats {
    return { ...this.counters };
  }

  async listen(port = 0, host = '127.0.0.1'): Promise<string> {
    if (this.closed) throw new Error('The SD simulator was closed; create a new one.');
    if (this.server.listening) throw new Error(`The SD simulator already listens on ${this.address}.`);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const addr = this.server.address() as AddressInfo;
    const shown = addr.address === '0.0.0.0' || addr.address === '::' ? '127.0.0.1' : addr.address;
    this.address = `http://${shown.includes(':') ? `[${shown}]` : shown}:${addr.port}`;
    return this.address;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      this.failures.length = 0;
      this.pending.clear();
      // Ends the running job's step timer; jobs still waiting for the lock see `closed` and quit.
      this.current?.stop();
      for (const res of this.hanging) res.destroy();
      this.hanging.clear();
      if (!this.server.listening) return;
      await new Promise<void>((resolve) => {
        this.server.close(() => resolve());
        // Keep-alive and in-flight connections would otherwise hold close() open.
        this.server.closeAllConnections();
      });
    })();
    return this.closing;
  }

  failNext(mode: FailureMode, times = 1): void {
    if (!FAILURE_MODES.includes(mode)) throw new RangeError(`Unknown failure mode "${String(mode)}"; use one of ${FAILURE_MODES.join(', ')}.`);
    if (!Number.isInteger(times) || times < 1) throw new RangeError('times must be a positive integer.');
    for (let i = 0; i < times; i++) this.failures.push(mode);
  }

  setStepMs(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError('stepMs must be a non-negative number.');
    this.stepMs = ms;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    for (const step of this.parked.splice(0)) step();
  }

  // ---- routing --------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://simulator.invalid');
    const route = this.routes.get(url.pathname);
    const hidden = url.pathname === '/internal/progress' && !this.internalProgressEnabled;
    if (!route || hidden) return sendJson(res, 404, { detail: 'Not Found' });
    if (url.pathname.startsWith('/sdapi/') && this.auth && !this.authorized(req)) {
      return sendJson(res, 401, { detail: 'Incorrect username or password' }, { 'www-authenticate': 'Basic' });
    }
    const handler = route[req.method ?? 'GET'];
    if (!handler) return sendJson(res, 405, { detail: 'Method Not Allowed' });
    await handler(req, res, url);
  }

  private authorized(req: IncomingMessage): boolean {
    const header = req.headers.authorization ?? '';
    const m = /^Basic\s+(\S+)$/i.exec(header);
    if (!m || !this.auth) return false;
    const decoded = Buffer.from(m[1] ?? '', 'base64').toString('utf8');
    const sep = decoded.indexOf(':');
    return sep >= 0 && decoded.slice(0, sep) === this.auth.username && decoded.slice(sep + 1) === this.auth.password;
  }

  // ---- txt2img --------------------------------------------------------------------------------

  private async txt2img(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Counted from arrival until the answer is sent or the client hangs up: what clients have
    // sent to this one server at once.
    const c = this.counters;
    c.txt2imgInFlight++;
    c.maxConcurrentTxt2img = Math.max(c.maxConcurrentTxt2img, c.txt2imgInFlight);
    res.once('close', () => c.txt2imgInFlight--);
    await this.txt2imgCall(req, res);
  }

  private async txt2imgCall(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, res);
    if (body === NO_BODY) return;
    const receivedAt = nowMs();
    this.counters.txt2imgCalls++;

    // Failures are consumed before the job is queued: the simulated crash happens up front.
    const failure = this.failures.shift();
    if (failure) return this.fail(failure, res);

    const parsed = parseTxt2ImgBody(body, this.samplers);
    if (!parsed.ok) return sendJson(res, parsed.status, parsed.payload);
    const params = parsed.params;
    const taskId = params.forceTaskId ?? `task(txt2img-${randomId(7)})`;

    // Registered before waiting for the lock, so /internal/progress can say "In queue".
    this.pending.set(taskId, ++this.pendingSeq);
    // A client that hangs up while queued does not cancel the job, as with A1111.
    const response = await this.exclusive(() => this.runJob(taskId, params));
    if (response) {
      sendJson(res, 200, response);
      this.onTaskDone?.({ taskId, receivedAt, answeredAt: nowMs() });
    }
  }

  private fail(mode: FailureMode, res: ServerResponse): void {
    switch (mode) {
      case 'http500':
        return sendJson(res, 500, sdError('RuntimeError', 'CUDA out of memory (simulated)'));
      case 'bad-request':
        return sendJson(res, 400, sdError('HTTPException', 'Sampler not found'));
      case 'malformed':
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"images": "not-an-array"');
        return;
      case 'hang':
        // Never answered: ends when the client gives up or close() destroys the connection.
        this.hanging.add(res);
        res.on('close', () => this.hanging.delete(res));
        return;
    }
  }

  /** Runs `fn` when every earlier job has finished: one job at a time, in arrival order. */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.lock;
    let release!: () => void;
    this.lock = new Promise<void>((resolve) => {
      release = resolve;
    });
    try {
      await previous;
      return await fn();
    } finally {
      release();
    }
  }

  /** Samples, renders and answers; null when the simulator closed meanwhile. */
  private async runJob(taskId: string, params: Txt2ImgParams): Promise<Record<string, unknown> | null> {
    this.pending.delete(taskId);
    if (this.closed) return null;

    const seed = params.seed === -1 ? randomInt(0, SEED_LIMIT) : params.seed;
    const subseed = params.subseed === -1 ? randomInt(0, SEED_LIMIT) : params.subseed;
    const count = params.batchSize * params.nIter;
    const now = new Date();
    const job: RunningJob = {
      taskId,
      params,
      seeds: Array.from({ length: count }, (_, i) => seed + i),
      subseeds: Array.from({ length: count }, (_, i) => subseed + i),
      jobCount: params.nIter,
      jobNo: 0,
      step: 0,
      startedAt: now.getTime(),
      jobTimestamp: now.toISOString().replace(/\D/g, '').slice(0, 14),
      previewId: 0,
      previewPng: null,
      interrupted: false,
      timer: null,
      stop: () => {},
    };
    this.lastJobTimestamp = job.jobTimestamp;
    this.current = job;
    this.running++;
    this.counters.maxConcurrentRunning = Math.max(this.counters.maxConcurrentRunning, this.running);
    try {
      await this.sample(job);
      if (this.closed) return null;
      return this.buildResponse(job);
    } finally {
      this.running--;
      this.current = null;
      this.finished.push(taskId);
      if (this.finished.length > MAX_FINISHED) this.finished.shift();
    }
  }

  /** One timer per step; resolves when all iterations are done or `job.stop()` is called. */
  private sample(job: RunningJob): Promise<void> {
    return new Promise<void>((resolve) => {
      const steps = job.params.steps;
      let stopped = false;
      job.stop = () => {
        stopped = true;
        if (job.timer) clearTimeout(job.timer);
        job.timer = null;
        resolve();
      };
      const tick = () => {
        job.timer = null;
        if (stopped) return;
        if (this.paused) {
          this.parked.push(tick);
          return;
        }
        job.step++;
        if (job.step >= steps) {
          if (job.jobNo + 1 >= job.jobCount) return resolve();
          job.jobNo++;
          job.step = 0;
        }
        if (job.step > 0 && job.step % PREVIEW_EVERY_STEPS === 0) this.makePreview(job);
        job.timer = setTimeout(tick, this.stepMs);
      };
      job.timer = setTimeout(tick, this.stepMs);
    });
  }

  private makePreview(job: RunningJob): void {
    const { params } = job;
    const size = previewSize(params.width, params.height);
    const spec = { prompt: params.prompt, seed: job.seeds[job.jobNo * params.batchSize] ?? 0 };
    const rgb = renderPicture(spec, size.width, size.height, job.step / params.steps);
    job.previewPng = encodePng(size.width, size.height, rgb).toString('base64');
    job.previewId++;
  }

  private buildResponse(job: RunningJob): Record<string, unknown> {
    const { params } = job;
    // Interrupted: later iterations never ran, the current one stopped at job.step.
    const producedIterations = job.interrupted ? job.jobNo + 1 : job.jobCount;
    const produced = job.seeds.slice(0, producedIterations * params.batchSize);
    const infotexts = produced.map((s) => infotext(params, s));
    const images = params.sendImages
      ? produced.map((s, i) => {
          const iteration = Math.floor(i / params.batchSize);
          const done = job.interrupted && iteration === job.jobNo ? job.step / params.steps : 1;
          const rgb = renderPicture({ prompt: params.prompt, seed: s }, params.width, params.height, done);
          const texts = params.pngInfo ? [{ keyword: 'parameters', text: infotexts[i] ?? '' }] : [];
          return encodePng(params.width, params.height, rgb, texts).toString('base64');
        })
      : [];
    const info = {
      prompt: params.prompt,
      all_prompts: produced.map(() => params.prompt),
      negative_prompt: params.negativePrompt,
      all_negative_prompts: produced.map(() => params.negativePrompt),
      seed: job.seeds[0],
      all_seeds: produced,
      subseed: job.subseeds[0],
      all_subseeds: job.subseeds.slice(0, produced.length),
      subseed_strength: 0,
      width: params.width,
      height: params.height,
      sampler_name: params.sampler,
      cfg_scale: params.cfgScale,
      steps: params.steps,
      batch_size: params.batchSize,
      restore_faces: false,
      sd_model_name: MODEL.model_name,
      sd_model_hash: MODEL.hash,
      seed_resize_from_w: -1,
      seed_resize_from_h: -1,
      denoising_strength: null,
      extra_generation_params: {},
      index_of_first_image: 0,
      infotexts,
      styles: [],
      job_timestamp: job.jobTimestamp,
      clip_skip: 1,
      is_using_inpainting_conditioning: false,
    };
    // `parameters` echoes the request: the seed stays -1 if it was.
    return { images, parameters: params.echo, info: JSON.stringify(info) };
  }

  // ---- progress and control ---------------------------------------------------------------------

  /** A1111's formula for the active job; `bias` is the 0.01 the global endpoint adds. */
  private progressOf(job: RunningJob, bias: number): number {
    const steps = job.params.steps;
    return Math.min(1, bias + job.jobNo / job.jobCount + (1 / job.jobCount) * (job.step / steps));
  }

  private async internalProgress(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, res);
    if (body === NO_BODY) return;
    const input = isObject(body) ? body : {};
    const id = typeof input.id_task === 'string' ? input.id_task : null;
    const sentPreviewId = typeof input.id_live_preview === 'number' ? input.id_live_preview : -1;
    const wantPreview = input.live_preview !== false;
    const job = this.current;

    if (!job || id === null || job.taskId !== id || this.ignoreTaskId) {
      // SD.Next-like: no id is ever known, pending, running or finished.
      const known = id !== null && !this.ignoreTaskId;
      const queued = known && this.pending.has(id);
      const completed = known && this.finished.includes(id);
      let textinfo = completed ? 'Done' : 'Waiting...';
      if (queued) {
        const position = [...this.pending.keys()].indexOf(id) + 1;
        textinfo = `In queue: ${position}/${this.pending.size}`;
      }
      return sendJson(res, 200, {
        active: false,
        queued,
        completed,
        progress: completed && !queued ? 1 : null,
        eta: null,
        live_preview: null,
        id_live_preview: -1,
        textinfo,
      });
    }

    const progress = this.progressOf(job, 0);
    const elapsed = (Date.now() - job.startedAt) / 1000;
    const fresh = wantPreview && job.previewPng !== null && job.previewId !== sentPreviewId;
    sendJson(res, 200, {
      active: true,
      queued: false,
      completed: false,
      progress,
      eta: progress > 0 ? elapsed / progress - elapsed : null,
      live_preview: fresh ? `data:image/png;base64,${job.previewPng}` : null,
      id_live_preview: fresh ? job.previewId : sentPreviewId,
      textinfo: null,
    });
  }

  private globalProgress(res: ServerResponse, url: URL): void {
    const job = this.current;
    if (!job) {
      return sendJson(res, 200, {
        progress: 0,
        eta_relative: 0,
        state: {
          skipped: false,
          interrupted: false,
          stopping_generation: false,
          job: '',
          job_count: 0,
          job_timestamp: this.lastJobTimestamp,
          job_no: 0,
          sampling_step: 0,
          sampling_steps: 0,
        },
        current_image: null,
        textinfo: null,
      });
    }
    const progress = this.progressOf(job, 0.01);
    const elapsed = (Date.now() - job.startedAt) / 1000;
    const skipImage = url.searchParams.get('skip_current_image') === 'true';
    sendJson(res, 200, {
      progress,
      eta_relative: elapsed / progress - elapsed,
      state: {
        skipped: false,
        interrupted: job.interrupted,
        stopping_generation: false,
        job: 'scripts_txt2img',
        job_count: job.jobCount,
        job_timestamp: job.jobTimestamp,
        job_no: job.jobNo,
        sampling_step: job.step,
        sampling_steps: job.params.steps,
      },
      current_image: skipImage ? null : job.previewPng,
      textinfo: null,
    });
  }

  private interrupt(res: ServerResponse): void {
    this.counters.interrupts++;
    // Global, like A1111: stops whatever job runs, whoever sent it.
    const job = this.current;
    if (job) {
      job.interrupted = true;
      job.stop();
    }
    sendJson(res, 200, {});
  }

  private async failRoute(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, res);
    if (body === NO_BODY) return;
    const input = isObject(body) ? body : {};
    const mode = input.mode;
    const times = input.times ?? 1;
    if (typeof mode !== 'string' || !(FAILURE_MODES as readonly string[]).includes(mode)) {
      return sendJson(res, 422, validationError([{ loc: ['body', 'mode'], msg: `must be one of ${FAILURE_MODES.join(', ')}`, type: 'value_error' }]));
    }
    if (typeof times !== 'number' || !Number.isInteger(times) || times < 1 || times > 1000) {
      return sendJson(res, 422, validationError([{ loc: ['body', 'times'], msg: 'must be an integer from 1 to 1000', type: 'value_error' }]));
    }
    this.failNext(mode as FailureMode, times);
    sendJson(res, 200, { queued: this.failures.length });
  }
}

export function createSdSimulator(opts: SimulatorOptions = {}): SdSimulator {
  return new Simulator(opts);
}

// ---- HTTP helpers ---------------------------------------------------------------------------------

const NO_BODY: unique symbol = Symbol('no body');

/**
 * Reads a JSON body. An empty body reads as undefined. On bad JSON or an oversized body it answers
 * (422 / 413) itself and returns NO_BODY; likewise when the client went away mid-body.
 */
async function readJson(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<unknown>) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
      size += buf.length;
      if (size > MAX_BODY_BYTES) {
        sendJson(res, 413, { detail: 'Request body too large' }, { connection: 'close' });
        return NO_BODY;
      }
      chunks.push(buf);
    }
  } catch {
    return NO_BODY; // client aborted; nobody to answer
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    const msg = err instanceof Error ? err.message : 'invalid JSON';
    sendJson(res, 422, validationError([{ loc: ['body', 0], msg, type: 'value_error.jsondecode' }]));
    return NO_BODY;
  }
}

function sendJson(res: ServerResponse, status: number, payload: unknown, headers: Record<string, string> = {}): void {
  // The client may have hung up while its job ran; there is nobody left to answer.
  if (res.headersSent || res.destroyed || res.socket?.destroyed) return;
  const body = JSON.stringify(payload);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    ...headers,
  });
  res.end(body);
}

function infotext(p: Txt2ImgParams, seed: number): string {
  const lines = [p.prompt];
  // A1111 leaves the line out when there is no negative prompt.
  if (p.negativePrompt) lines.push(`Negative prompt: ${p.negativePrompt}`);
  lines.push(
    `Steps: ${p.steps}, Sampler: ${p.sampler}, CFG scale: ${p.cfgScale}, Seed: ${seed}, ` +
      `Size: ${p.width}x${p.height}, Model hash: ${MODEL.hash}, Model: ${MODEL.model_name}`,
  );
  return lines.join('\n');
}

function randomId(length: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
