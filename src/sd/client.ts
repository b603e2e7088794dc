/**
 * Client of an AUTOMATIC1111-compatible Stable Diffusion server (see
 * shared/reference/a1111-api.md). One `txt2img` call is one blocking POST; while it runs, a
 * sequential loop polls progress and reports it. Every failure leaves as an `SdError`.
 */
import { Agent, fetch } from 'undici';
import type { Logger } from '../logger';
import { SdError, SdHttpStatusError, SdInvalidJsonError, isRecord, summarizeText, toSdError } from './errors';
import type { ErrorContext } from './errors';
import { readGlobalProgress, readInternalProgress } from './progress';
import type { SdProgress } from './progress';

export { SdError, RETRYABLE } from './errors';
export type { SdErrorCode } from './errors';
export type { SdProgress } from './progress';

export interface SdClientOptions {
  /** e.g. http://127.0.0.1:7860. A trailing slash is dropped; user:pass@ in it is used as `auth`. */
  baseUrl: string;
  /** HTTP basic on every request when set (A1111 --api-auth). */
  auth?: { username: string; password: string };
  /** How often to poll progress while txt2img runs. */
  progressIntervalMs: number;
  /** Timeout for the small calls (progress, samplers, models, interrupt). Default 10_000. */
  fetchTimeoutMs?: number;
  /** Where failed progress polls and best-effort interrupts are reported. Default: nowhere. */
  logger?: Logger;
  /** Told of every request and of the sampling pace, for metrics. Must not throw. Default: nobody. */
  observer?: SdClientObserver;
}

/** What the client reports for metrics: in-memory updates only, called on the calls' own path. */
export interface SdClientObserver {
  /** A request ended: which call (`txt2img`, `progress_poll`, `samplers`, …), how long it took, whether it was answered with success. */
  request(call: string, seconds: number, ok: boolean): void;
  /** The progress polls saw sampling move on by `steps` steps in `seconds`. */
  steps(steps: number, seconds: number): void;
}

export interface Txt2ImgRequest {
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  sampler: string;
  /** -1 lets the server pick. */
  seed: number;
  batchSize: number;
}

export interface Txt2ImgResult {
  /** Decoded PNG files, one per batch item. */
  images: Buffer[];
  /** The seed of each image. */
  seeds: number[];
  /** A1111's parsed `info`. */
  info: Record<string, unknown>;
}

export interface Txt2ImgCallOptions {
  /** Sent as force_task_id; progress and interrupts are keyed on it. Unique per attempt is best. */
  taskId: string;
  /** Cancels the HTTP request for real; the call then rejects with SD_ABORTED. */
  signal?: AbortSignal;
  /**
   * Called per poll and once more with progress 1 just before success. Never after the call
   * settled; progress never goes down and the phase never goes back from 'active' to 'queued'.
   */
  onProgress?: (p: SdProgress) => void;
}

interface RequestOptions {
  what: string;
  body?: unknown;
  signal?: AbortSignal | undefined;
  /** Omitted = no timeout of our own (txt2img: the caller's signal carries the job's limit). */
  timeoutMs?: number;
}

const DEFAULT_FETCH_TIMEOUT_MS = 10_000;
/**
 * Polls of /internal/progress that may not know our task id before the global route is asked
 * whether a job runs (see `ignoresTaskId`): our request may still be on its way for a poll or two.
 */
const UNKNOWN_POLLS_BEFORE_GLOBAL = 3;

export class SdClient {
  private readonly baseUrl: string;
  private readonly authHeader: string | undefined;
  private readonly progressIntervalMs: number;
  private readonly fetchTimeoutMs: number;
  private readonly logger: Logger | undefined;
  private readonly observer: SdClientObserver | undefined;
  /**
   * Its own connection pool without undici's default 300 s header/body timeouts: A1111 sends
   * nothing until the image is done, and a generation may take longer. Every call is bounded by
   * its own timer or by the caller's signal (the job's time limit) instead.
   */
  private readonly agent = new Agent({ headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 10_000 });
  /** txt2img calls under way, by task id. */
  private readonly inFlight = new Set<string>();
  /** Those of them this client interrupted (the soft time limit): their answer is the image so far. */
  private readonly interrupted = new Set<string>();
  /** Interrupts of abandoned calls still under way (see `settled`). */
  private readonly abandoning = new Set<Promise<unknown>>();
  /**
   * The server has /internal/progress but never registers our task id (SD.Next): its per-task
   * progress stays "Waiting..." forever, so progress is read from the global route instead.
   * Learnt on the first call that shows it, kept for the client's life.
   */
  private ignoresTaskId = false;

  constructor(opts: SdClientOptions) {
    const url = new URL(opts.baseUrl);
    // fetch refuses URLs with credentials, so credentials in the URL become the auth header.
    const auth =
      opts.auth ??
      (url.username
        ? { username: decodeURIComponent(url.username), password: decodeURIComponent(url.password) }
        : undefined);
    url.username = '';
    url.password = '';
    this.baseUrl = url.toString().replace(/\/+$/, '');
    this.authHeader = auth
      ? `Basic ${Buffer.from(`${auth.username}:${auth.password}`, 'utf8').toString('base64')}`
      : undefined;
    if (!(opts.progressIntervalMs > 0)) throw new RangeError('progressIntervalMs must be a positive number');
    this.progressIntervalMs = opts.progressIntervalMs;
    this.fetchTimeoutMs = opts.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
    this.logger = opts.logger;
    this.observer = opts.observer;
  }

  async txt2img(req: Txt2ImgRequest, opts: Txt2ImgCallOptions): Promise<Txt2ImgResult> {
    const { taskId, signal, onProgress } = opts;
    const payload = {
      prompt: req.prompt,
      negative_prompt: req.negativePrompt,
      width: req.width,
      height: req.height,
      steps: req.steps,
      cfg_scale: req.cfgScale,
      sampler_name: req.sampler,
      seed: req.seed,
      batch_size: req.batchSize,
      n_iter: 1,
      force_task_id: taskId,
      send_images: true,
      save_images: false,
      // Without this every PNG carries the prompt and seed in a `parameters` text chunk.
      override_settings: { enable_pnginfo: false },
      override_settings_restore_afterwards: true,
    };

    this.inFlight.add(taskId);
    const progress = onProgress ? new ProgressReporter(onProgress, this.logger, taskId, this.observer) : undefined;
    const stopPolling = new AbortController();
    const poller = progress ? this.pollProgress(taskId, req.steps, progress, stopPolling.signal) : undefined;
    try {
      const body = await this.request('POST', '/sdapi/v1/txt2img', { what: 'txt2img', body: payload, signal });
      const result = parseTxt2ImgResponse(body, req.seed, this.baseUrl);
      // An interrupted job answers with the image so far: its last step stays what it was.
      progress?.finish(this.interrupted.delete(taskId) ? null : req.steps);
      return result;
    } catch (err) {
      const error = toSdError(err, this.context('txt2img', signal));
      // The server keeps generating after we hang up (abort, fetch's 300 s limit, a proxy cutting
      // the connection or answering 502/504 for it), and a retry would then queue behind our own
      // orphan. interruptIfActive only acts if our task really is the one running, so it is safe
      // after any failure; a rejected request or refused credentials never started a job.
      if (error.code !== 'SD_BAD_REQUEST' && error.code !== 'SD_UNAUTHORIZED') {
        const interrupting: Promise<unknown> = this.interruptIfActive(taskId)
          .then(
            (interrupted) => this.logger?.debug({ taskId, interrupted }, 'sd: interrupt after abandoned txt2img'),
            (e: unknown) => this.logger?.warn({ taskId, err: e }, 'sd: interrupt after abandoned txt2img failed'),
          )
          .finally(() => this.abandoning.delete(interrupting));
        this.abandoning.add(interrupting);
      }
      throw error;
    } finally {
      this.inFlight.delete(taskId);
      this.interrupted.delete(taskId);
      // Stop before the caller resumes: no onProgress may run after this call settled.
      progress?.stop();
      stopPolling.abort();
      await poller;
    }
  }

  async samplers(signal?: AbortSignal): Promise<string[]> {
    const body = await this.request('GET', '/sdapi/v1/samplers', { what: 'samplers', signal, timeoutMs: this.fetchTimeoutMs });
    return namesFrom(body, 'name', 'samplers', this.baseUrl);
  }

  async models(signal?: AbortSignal): Promise<string[]> {
    const body = await this.request('GET', '/sdapi/v1/sd-models', { what: 'sd-models', signal, timeoutMs: this.fetchTimeoutMs });
    return namesFrom(body, 'title', 'sd-models', this.baseUrl);
  }

  /**
   * POST /sdapi/v1/interrupt, but only if /internal/progress says `taskId` is the active task:
   * interrupt is global and would stop another client's job. Returns whether it interrupted.
   * Where /internal/progress is missing (--nowebui, --api-auth) it never interrupts, since the
   * global progress cannot tell whose job runs. A small race remains: our task may end and
   * another start between the check and the interrupt.
   */
  async interruptIfActive(taskId: string): Promise<boolean> {
    let body: unknown;
    try {
      body = await this.request('POST', '/internal/progress', {
        what: 'progress check',
        body: { id_task: taskId, id_live_preview: -1, live_preview: false },
        timeoutMs: this.fetchTimeoutMs,
      });
    } catch (err) {
      if (err instanceof SdError && err.status === 404) return false;
      throw err;
    }
    if (!isRecord(body) || body.active !== true) return false;
    // Only a call still under way is marked (its `finally` clears the mark): nothing is kept after it.
    if (this.inFlight.has(taskId)) this.interrupted.add(taskId);
    await this.request('POST', '/sdapi/v1/interrupt', { what: 'interrupt', body: {}, timeoutMs: this.fetchTimeoutMs });
    return true;
  }

  /**
   * Polls until `stop` aborts. Sequential on purpose: the next poll is scheduled only after the
   * previous one finished, so a slow server never sees polls pile up. Never rejects.
   */
  private async pollProgress(taskId: string, steps: number, out: ProgressReporter, stop: AbortSignal): Promise<void> {
    let mode: 'internal' | 'global' = this.ignoresTaskId ? 'global' : 'internal';
    /** Polls in a row where the server did not know our task id, before it ever did. */
    let unknownPolls = 0;
    let taskSeen = false;
    let lastPreviewId = -1;
    let lastImage: string | null = null;
    let previewCount = 0;
    let waitFirst = true;
    while (!stop.aborted) {
      if (waitFirst) await sleep(this.progressIntervalMs, stop);
      waitFirst = true;
      if (stop.aborted) return;
      try {
        if (mode === 'internal') {
          const body = await this.request('POST', '/internal/progress', {
            what: 'progress poll',
            body: { id_task: taskId, id_live_preview: lastPreviewId, live_preview: true },
            signal: stop,
            timeoutMs: this.fetchTimeoutMs,
          });
          const reading = readInternalProgress(body, steps, lastPreviewId);
          if (reading?.kind === 'progress' || reading?.kind === 'completed') taskSeen = true;
          if (reading?.kind === 'unknown' && !taskSeen && ++unknownPolls >= UNKNOWN_POLLS_BEFORE_GLOBAL && (await this.globalShowsAJob(stop))) {
            // A1111 registers the id before our request even waits for its lock, so an id still
            // unknown while a job samples means the server ignores force_task_id (SD.Next).
            this.ignoresTaskId = true;
            mode = 'global';
            waitFirst = false;
            this.logger?.info({ taskId, sd: this.baseUrl }, 'sd: the server ignores the task id; polling the global /sdapi/v1/progress');
            continue;
          }
          if (reading?.kind === 'progress') {
            if (reading.previewId !== null) lastPreviewId = reading.previewId;
            out.report(reading.progress);
          } else if (reading?.kind === 'completed') {
            out.reportCompleted(this.interrupted.has(taskId) ? null : steps);
          } else if (reading?.kind === 'unknown') {
            // Not registered yet (our POST is still on its way) or already forgotten.
            out.report({ phase: 'queued', queuePosition: null, progress: 0, step: null, totalSteps: null, etaSeconds: null, preview: null });
          }
        } else {
          const body = await this.request('GET', '/sdapi/v1/progress?skip_current_image=false', {
            what: 'progress poll',
            signal: stop,
            timeoutMs: this.fetchTimeoutMs,
          });
          const reading = readGlobalProgress(body, steps, lastImage);
          if (reading) {
            if (reading.image !== null) lastImage = reading.image;
            const p = reading.progress;
            out.report(p.preview ? { ...p, preview: { ...p.preview, id: ++previewCount } } : p);
          }
        }
      } catch (err) {
        if (stop.aborted) return;
        if (mode === 'internal' && err instanceof SdError && err.status === 404) {
          // --nowebui or --api-auth: only the global endpoint exists. Ask it right away.
          mode = 'global';
          waitFirst = false;
          this.logger?.debug({ taskId }, 'sd: /internal/progress missing, polling the global /sdapi/v1/progress');
          continue;
        }
        // Best effort: the txt2img call itself decides the outcome.
        this.logger?.warn({ taskId, err }, 'sd: progress poll failed');
      }
    }
  }

  /**
   * Resolves once the interrupts this client sent after abandoned calls have ended: until then, a
   * late interrupt could stop whatever job the server runs next.
   */
  async settled(): Promise<void> {
    while (this.abandoning.size > 0) await Promise.allSettled([...this.abandoning]);
  }

  /**
   * Whether the server runs no job now, by the global progress route (`state.job_count` is 0 once a
   * job has ended; -1 or more while one runs). Throws when the server cannot be read.
   */
  async isIdle(signal?: AbortSignal): Promise<boolean> {
    const body = await this.request('GET', '/sdapi/v1/progress?skip_current_image=true', { what: 'progress poll', signal, timeoutMs: this.fetchTimeoutMs });
    return isRecord(body) && isRecord(body.state) && body.state.job_count === 0;
  }

  /** Whether the global progress route shows a job sampling now (false when it cannot be read). */
  private async globalShowsAJob(signal: AbortSignal): Promise<boolean> {
    try {
      const body = await this.request('GET', '/sdapi/v1/progress?skip_current_image=true', { what: 'progress poll', signal, timeoutMs: this.fetchTimeoutMs });
      return isRecord(body) && isRecord(body.state) && typeof body.state.job_count === 'number' && body.state.job_count > 0;
    } catch {
      return false;
    }
  }

  /** Closes the connection pool; calls in flight are aborted. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.agent.closed && !this.agent.destroyed) await this.agent.destroy();
  }

  /** Sends one request and returns the parsed JSON body; everything thrown is an SdError. */
  private async request(method: 'GET' | 'POST', path: string, opts: RequestOptions): Promise<unknown> {
    // One controller per request, fed by the caller's signal and our timer, both detached in
    // `finally`: polls run every few hundred ms for minutes, so nothing may pile up on `signal`.
    const controller = new AbortController();
    const timeout = opts.timeoutMs === undefined ? undefined : { ms: opts.timeoutMs, expired: false };
    const timer =
      timeout &&
      setTimeout(() => {
        timeout.expired = true;
        controller.abort(new DOMException(`timed out after ${timeout.ms} ms`, 'TimeoutError'));
      }, timeout.ms);
    const onAbort = () => controller.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const headers: Record<string, string> = { accept: 'application/json' };
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    if (this.authHeader) headers.authorization = this.authHeader;
    const started = performance.now();
    let ok = false;
    try {
      if (opts.signal?.aborted) throw opts.signal.reason;
      const res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: opts.body === undefined ? null : JSON.stringify(opts.body),
        signal: controller.signal,
        dispatcher: this.agent,
      });
      // Reading the body is inside the try too: an abort or reset can happen mid-body.
      const text = await res.text();
      if (!res.ok) throw new SdHttpStatusError(res.status, text);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text) as unknown;
      } catch (err) {
        throw new SdInvalidJsonError(text, err);
      }
      ok = true;
      return parsed;
    } catch (err) {
      throw toSdError(err, this.context(opts.what, opts.signal, timeout));
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      this.observer?.request(opts.what.replace(/ /g, '_'), (performance.now() - started) / 1000, ok);
    }
  }

  private context(what: string, signal?: AbortSignal, timeout?: ErrorContext['timeout']): ErrorContext {
    return { what, baseUrl: this.baseUrl, signal, timeout };
  }
}

/**
 * Turns polls into onProgress calls: never after `stop()`, never backwards (progress, step and
 * phase only move forward: a late "Waiting..." or, with the global endpoint, another job's
 * progress must not make a bar jump back), and a throwing callback is logged, not propagated.
 */
class ProgressReporter {
  private last: SdProgress | undefined;
  private stopped = false;
  private seenTask = false;
  /** The last step sampling was seen at, and when: the pace of the steps since then is reported. */
  private stepSeen: { step: number; at: number } | undefined;

  constructor(
    private readonly onProgress: (p: SdProgress) => void,
    private readonly logger: Logger | undefined,
    private readonly taskId: string,
    private readonly observer: SdClientObserver | undefined,
  ) {}

  report(p: SdProgress): void {
    if (this.stopped) return;
    const last = this.last;
    if (p.phase === 'queued' && p.queuePosition !== null) this.seenTask = true;
    if (p.phase === 'active') this.seenTask = true;
    if (last?.phase === 'active' && p.phase === 'queued') return;
    const next: SdProgress =
      last === undefined
        ? p
        : {
            ...p,
            progress: Math.max(p.progress, last.progress),
            step: p.step !== null && last.step !== null ? Math.max(p.step, last.step) : p.step,
          };
    this.last = next;
    if (this.observer && next.phase === 'active' && next.step !== null) this.timeSteps(next.step);
    try {
      this.onProgress(next);
    } catch (err) {
      this.logger?.warn({ taskId: this.taskId, err }, 'sd: onProgress callback threw');
    }
  }

  private timeSteps(step: number): void {
    const now = performance.now();
    const seen = this.stepSeen;
    if (seen && step > seen.step) this.observer!.steps(step - seen.step, (now - seen.at) / 1000);
    if (!seen || step > seen.step) this.stepSeen = { step, at: now };
  }

  /** "completed" is trusted only after we saw the task ourselves: a reused id can be stale. */
  reportCompleted(steps: number | null): void {
    if (this.seenTask) this.finish(steps);
  }

  /** The final tick: sampling is over, 100 %. `null`: it was interrupted, the step stays the last one seen. */
  finish(steps: number | null): void {
    const step = steps ?? this.last?.step ?? null;
    if (this.last?.progress === 1 && this.last.step === step) return;
    this.report({ phase: 'active', queuePosition: null, progress: 1, step, totalSteps: steps ?? this.last?.totalSteps ?? null, etaSeconds: 0, preview: null });
  }

  stop(): void {
    this.stopped = true;
  }
}

/** Checks the txt2img answer and decodes it. Any shape problem is SD_BAD_RESPONSE (retryable). */
function parseTxt2ImgResponse(body: unknown, requestSeed: number, baseUrl: string): Txt2ImgResult {
  const bad = (why: string) => new SdError('SD_BAD_RESPONSE', `Stable Diffusion at ${baseUrl} answered txt2img with ${why}.`);
  if (!isRecord(body)) throw bad('a body that is not a JSON object');
  const { images, info } = body;
  if (!Array.isArray(images)) throw bad('no "images" array');
  const buffers = images.map((img, i) => {
    if (typeof img !== 'string') throw bad(`a non-string image at index ${i}`);
    const buf = Buffer.from(img.replace(/^data:[^,]*;base64,/, ''), 'base64');
    if (buf.length === 0) throw bad(`an empty image at index ${i}`);
    return buf;
  });
  if (typeof info !== 'string') throw bad('"info" that is not a JSON string');
  let parsedInfo: unknown;
  try {
    parsedInfo = JSON.parse(info);
  } catch {
    throw bad(`"info" that is not valid JSON (${summarizeText(info, 80)})`);
  }
  if (!isRecord(parsedInfo)) throw bad('"info" that is not a JSON object');
  const allSeeds = parsedInfo.all_seeds;
  const baseSeed = typeof parsedInfo.seed === 'number' ? parsedInfo.seed : requestSeed;
  const seeds = buffers.map((_, i) => {
    const s = Array.isArray(allSeeds) ? allSeeds[i] : undefined;
    return typeof s === 'number' ? s : baseSeed + i;
  });
  return { images: buffers, seeds, info: parsedInfo };
}

function namesFrom(body: unknown, key: 'name' | 'title', what: string, baseUrl: string): string[] {
  if (Array.isArray(body)) {
    const names = body.map((item) => (isRecord(item) ? item[key] : undefined));
    if (names.every((n): n is string => typeof n === 'string')) return names;
  }
  throw new SdError('SD_BAD_RESPONSE', `Stable Diffusion at ${baseUrl} answered ${what} with an unexpected shape (expected [{${key}}]).`);
}

/** Resolves after `ms`, or at once when `signal` aborts. Never rejects, leaves no timer behind. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
