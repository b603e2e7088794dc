/**
 * A typed client for the Stable Diffusion jobs service, for Node 20+ and browsers (fetch and web
 * streams only; its one dependency holds types):
 *
 *   const client = createClient({ url: 'http://localhost:4000', token });
 *   const done = await client.generate({ prompt: 'a lighthouse at dusk' }, { onProgress: (p) => console.log(p.status, p.step) });
 *   for await (const p of client.watch(id)) { … }   // ends after SUCCEEDED, FAILED or CANCELLED
 *   await client.cancel(id);
 *
 * Live progress comes over GraphQL over SSE. A stream that drops (a proxy timing out, a restarted
 * API process, a proxy's 5xx meanwhile) is opened again: the service's first event on every stream is the current state, and
 * events already seen (by `seq`) are skipped, so a watcher sees every state change it can, in order,
 * never twice, and always the final state.
 */
import { CancelDocument, GenerateDocument, WatchDocument } from './documents.js';
import type { ClientWatchSubscription, GenerateImageInput, TypedDocumentString } from './gql/graphql.js';

export type { GenerateImageInput } from './gql/graphql.js';

/** One state of a generation, as the progress stream sends it. */
export type Progress = ClientWatchSubscription['generationProgress'];
export type GenerationStatus = Progress['status'];

/** A generation that ended SUCCEEDED: its final state, with the images. */
export type FinishedGeneration = Progress & { status: 'SUCCEEDED' };

export const TERMINAL_STATUSES: ReadonlySet<GenerationStatus> = new Set<GenerationStatus>(['SUCCEEDED', 'FAILED', 'CANCELLED']);

/**
 * An error the service answered with (its `extensions.code`, e.g. UNAUTHENTICATED, BAD_USER_INPUT,
 * INSUFFICIENT_CREDITS), a generation that ended FAILED or CANCELLED (the code of its error, or
 * CANCELLED), or the client's own: HTTP_ERROR, BAD_RESPONSE, STREAM_LOST.
 */
export class SdJobsError extends Error {
  override name = 'SdJobsError';
  constructor(
    readonly code: string,
    message: string,
    /** The generation's final state, when the error is a generation that did not succeed. */
    readonly generation?: Progress,
    /** Anything else the service said (GraphQL `extensions`). */
    readonly details: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
  }
}

export interface ReconnectOptions {
  /** Wait before the first reopening of a dropped stream; doubles each time. Default 250 ms. */
  initialDelayMs?: number;
  /** The longest wait between reopenings. Default 5000 ms. */
  maxDelayMs?: number;
  /** Reopenings in a row that get no event before watching gives up with STREAM_LOST. Default 10. */
  maxAttempts?: number;
}

export interface ClientOptions {
  /** The service's base URL (its GraphQL endpoint is `<url>/graphql`), or the endpoint itself. */
  url: string;
  /** An API token or session token, sent as `Authorization: Bearer <token>`. */
  token?: string;
  reconnect?: ReconnectOptions;
  /** Another fetch (a test's, a proxy agent's); default the global one. */
  fetch?: typeof fetch;
}

export interface WatchOptions {
  signal?: AbortSignal;
  /** Ask for the live preview (a small WebP data URI per event while sampling). Default false. */
  preview?: boolean;
}

export interface GenerateOptions extends WatchOptions {
  /** Every state of the generation, from QUEUED to its end. */
  onProgress?: (progress: Progress) => void;
}

export interface SdJobsClient {
  /** Queues a generation and resolves with its final state once it SUCCEEDED; rejects with SdJobsError if it failed or was cancelled. Aborting `signal` cancels it. */
  generate(input: GenerateImageInput, options?: GenerateOptions): Promise<FinishedGeneration>;
  /** Every state of a generation from now on (the current one first), ending after its final state. */
  watch(id: string, options?: WatchOptions): AsyncIterableIterator<Progress>;
  /** Stops a generation that has not finished (its credits go back); a finished one is left as it is. */
  cancel(id: string): Promise<{ id: string; status: GenerationStatus }>;
  /** Any other operation of the schema, typed by a document (e.g. from graphql-codegen). */
  request<R, V>(document: TypedDocumentString<R, V> | string, variables?: V, signal?: AbortSignal): Promise<R>;
}

interface GraphQLResponse<R> {
  data?: R | null;
  errors?: Array<{ message: string; extensions?: { code?: string; [key: string]: unknown } }>;
}

const DEFAULT_RECONNECT: Required<ReconnectOptions> = { initialDelayMs: 250, maxDelayMs: 5000, maxAttempts: 10 };

/** The first error of a GraphQL answer as an SdJobsError. */
function answerError(errors: NonNullable<GraphQLResponse<unknown>['errors']>): SdJobsError {
  const first = errors[0]!;
  const { code, ...details } = first.extensions ?? {};
  return new SdJobsError(typeof code === 'string' ? code : 'GRAPHQL_ERROR', first.message, undefined, details);
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted.', 'AbortError');
}

/** Resolves after `ms`, or rejects as soon as `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal!));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The `next` payloads of one GraphQL-over-SSE response (graphql-yoga's distinct-connections mode),
 * until `complete` (returns true) or the stream ends without it (returns false).
 */
async function* sseResults<R>(response: Response): AsyncGenerator<GraphQLResponse<R>, boolean> {
  if (!response.body) throw new SdJobsError('BAD_RESPONSE', `The service answered HTTP ${response.status} without a body.`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value.replace(/\r\n/g, '\n');
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = 'message';
        const data: string[] = [];
        for (const line of frame.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (event === 'complete') return true;
        if (event === 'next' && data.length > 0) {
          try {
            yield JSON.parse(data.join('\n')) as GraphQLResponse<R>;
          } catch {
            throw new SdJobsError('BAD_RESPONSE', 'The progress stream sent an event that is not JSON.');
          }
        }
      }
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
}

export function createClient(options: ClientOptions): SdJobsClient {
  const endpoint = /\/graphql\/?$/.test(options.url) ? options.url : `${options.url.replace(/\/+$/, '')}/graphql`;
  const doFetch = options.fetch ?? ((...args: Parameters<typeof fetch>) => fetch(...args));
  const reconnect = { ...DEFAULT_RECONNECT, ...options.reconnect };
  const headers = (accept: string): Record<string, string> => ({
    'content-type': 'application/json',
    accept,
    ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
  });

  async function request<R, V>(document: TypedDocumentString<R, V> | string, variables?: V, signal?: AbortSignal): Promise<R> {
    const response = await doFetch(endpoint, {
      method: 'POST',
      headers: headers('application/graphql-response+json, application/json'),
      body: JSON.stringify({ query: document.toString(), variables }),
      signal,
    });
    let body: GraphQLResponse<R>;
    try {
      body = (await response.json()) as GraphQLResponse<R>;
    } catch {
      throw new SdJobsError('HTTP_ERROR', `The service answered HTTP ${response.status} without a GraphQL answer.`);
    }
    if (body.errors?.length) throw answerError(body.errors);
    if (!body.data) throw new SdJobsError('BAD_RESPONSE', `The service answered HTTP ${response.status} with no data.`);
    return body.data;
  }

  async function* watch(id: string, watchOptions: WatchOptions = {}): AsyncGenerator<Progress, void, undefined> {
    const { signal } = watchOptions;
    let lastSeq = -1;
    let failures = 0;
    for (;;) {
      signal?.throwIfAborted();
      let progressed = false;
      try {
        const response = await doFetch(endpoint, {
          method: 'POST',
          headers: headers('text/event-stream'),
          body: JSON.stringify({ query: WatchDocument.toString(), variables: { id, withPreview: watchOptions.preview ?? false } }),
          signal,
        });
        if (!response.headers.get('content-type')?.includes('text/event-stream')) {
          // Refused before the stream started (no token, not found, bad id): a plain GraphQL answer.
          const body = (await response.json().catch(() => null)) as GraphQLResponse<unknown> | null;
          if (body?.errors?.length) throw answerError(body.errors);
          // A proxy's 502/503/504 while the service restarts: the stream is opened again, below.
          if (response.status >= 500) throw new TypeError(`HTTP ${response.status}`);
          throw new SdJobsError('HTTP_ERROR', `The service answered HTTP ${response.status} instead of a progress stream.`);
        }
        const results = sseResults<ClientWatchSubscription>(response);
        for await (const result of results) {
          if (result.errors?.length) throw answerError(result.errors);
          const progress = result.data?.generationProgress;
          if (!progress) throw new SdJobsError('BAD_RESPONSE', 'The progress stream sent an event without a state.');
          progressed = true;
          failures = 0;
          // After a reopening the current state comes first: what was seen already is skipped.
          if (progress.seq <= lastSeq) continue;
          lastSeq = progress.seq;
          yield progress;
          if (TERMINAL_STATUSES.has(progress.status)) return;
        }
        // The stream completed or ended without a final state: open it again.
      } catch (err) {
        if (err instanceof SdJobsError || signal?.aborted) throw err;
        // A network error: the stream dropped. Open it again, below.
      }
      if (!progressed) failures++;
      if (failures > reconnect.maxAttempts) {
        throw new SdJobsError('STREAM_LOST', `The progress stream of generation ${id} could not be opened again after ${reconnect.maxAttempts} tries.`);
      }
      await sleep(Math.min(reconnect.maxDelayMs, reconnect.initialDelayMs * 2 ** Math.max(0, failures - 1)), signal);
    }
  }

  async function cancel(id: string) {
    return (await request(CancelDocument, { id })).cancelGeneration;
  }

  async function generate(input: GenerateImageInput, generateOptions: GenerateOptions = {}): Promise<FinishedGeneration> {
    const { signal, onProgress } = generateOptions;
    signal?.throwIfAborted();
    // Not aborted mid-request: the service may have made the generation already, and only its id
    // lets it be cancelled. An abort meanwhile is seen right after.
    const { id } = (await request(GenerateDocument, { input })).generateImage;
    try {
      signal?.throwIfAborted();
      let last: Progress | undefined;
      for await (const progress of watch(id, generateOptions)) {
        last = progress;
        onProgress?.(progress);
      }
      if (last?.status === 'SUCCEEDED') return last as FinishedGeneration;
      const code = last?.status === 'CANCELLED' ? 'CANCELLED' : (last?.error?.code ?? 'FAILED');
      throw new SdJobsError(code, last?.error?.message ?? `Generation ${id} ended ${last?.status ?? 'without a final state'}.`, last);
    } catch (err) {
      // Aborted by the caller: the generation is cancelled too (its credits go back).
      if (signal?.aborted) await cancel(id).catch(() => undefined);
      throw err;
    }
  }

  return { generate, watch, cancel, request };
}
