/**
 * Error kinds of the Stable Diffusion client. Every failure of a call to the SD server leaves
 * `SdClient` as an `SdError` with a stable `code`; whether a job should retry it is decided once,
 * in `RETRYABLE`, not at each throw site. `toSdError` is the one place that converts.
 */

export type SdErrorCode =
  | 'SD_UNREACHABLE'
  | 'SD_TIMEOUT'
  | 'SD_SERVER_ERROR'
  | 'SD_BAD_REQUEST'
  | 'SD_UNAUTHORIZED'
  | 'SD_BAD_RESPONSE'
  | 'SD_ABORTED';

/**
 * Which kinds a job may retry. The server being down, slow, crashing (CUDA OOM) or answering
 * garbage can pass; a request it rejects or credentials it refuses will fail the same way again,
 * and an abort is the caller's own decision.
 */
export const RETRYABLE: Readonly<Record<SdErrorCode, boolean>> = {
  SD_UNREACHABLE: true,
  SD_TIMEOUT: true,
  SD_SERVER_ERROR: true,
  SD_BAD_REQUEST: false,
  SD_UNAUTHORIZED: false,
  SD_BAD_RESPONSE: true,
  SD_ABORTED: false,
};

export class SdError extends Error {
  override name = 'SdError';
  readonly code: SdErrorCode;
  /** HTTP status when the server answered, else undefined. */
  readonly status?: number;
  readonly retryable: boolean;

  constructor(code: SdErrorCode, message: string, opts: { status?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    if (opts.status !== undefined) this.status = opts.status;
    this.retryable = RETRYABLE[code];
  }
}

export const isSdError = (err: unknown): err is SdError => err instanceof SdError;

/** Thrown by the transport for a non-2xx answer; `toSdError` turns it into the right kind. */
export class SdHttpStatusError extends Error {
  override name = 'SdHttpStatusError';
  constructor(
    readonly status: number,
    readonly bodyText: string,
  ) {
    super(`HTTP ${status}`);
  }
}

/** Thrown by the transport when a 2xx body is not JSON. */
export class SdInvalidJsonError extends Error {
  override name = 'SdInvalidJsonError';
  constructor(
    readonly bodyText: string,
    cause: unknown,
  ) {
    super('response body is not JSON', { cause });
  }
}

export interface ErrorContext {
  /** What was being done, for the message: "txt2img", "progress poll", ... */
  what: string;
  /** Server base URL without credentials. */
  baseUrl: string;
  /** The caller's signal: aborted means the caller gave up, never the server's fault. */
  signal?: AbortSignal | undefined;
  /** Our own timeout for the call: its length, and whether it fired. */
  timeout?: { ms: number; expired: boolean } | undefined;
}

const MAX_DETAIL = 300;

/** The one conversion from anything a call to the SD server can throw into an SdError. */
export function toSdError(err: unknown, ctx: ErrorContext): SdError {
  if (err instanceof SdError) return err;
  const where = `Stable Diffusion at ${ctx.baseUrl}`;

  // Signals first: after an abort, fetch may reject with a network-looking error.
  if (ctx.signal?.aborted) {
    return new SdError('SD_ABORTED', `${ctx.what} was aborted by the caller.`, { cause: err });
  }
  if (ctx.timeout?.expired) {
    return new SdError('SD_TIMEOUT', `${where} did not answer ${ctx.what} within ${ctx.timeout.ms} ms.`, {
      cause: err,
    });
  }

  if (err instanceof SdHttpStatusError) return fromStatus(err, ctx);
  if (err instanceof SdInvalidJsonError) {
    return new SdError(
      'SD_BAD_RESPONSE',
      `${where} answered ${ctx.what} with a body that is not JSON: ${summarizeText(err.bodyText)}`,
      { cause: err },
    );
  }

  const code = networkCode(err);
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    // The client's agent disables undici's header/body timeouts; this only happens if a
    // dispatcher with the defaults (300 s) is used.
    return new SdError(
      'SD_TIMEOUT',
      `${where} sent no response to ${ctx.what} in time (${code}).`,
      { cause: err },
    );
  }
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ETIMEDOUT') {
    return new SdError('SD_TIMEOUT', `Connecting to ${where} timed out (${code}).`, { cause: err });
  }
  const reason = err instanceof Error ? innermostMessage(err) : String(err);
  return new SdError(
    'SD_UNREACHABLE',
    `${where} is unreachable during ${ctx.what}${code ? ` (${code})` : ''}: ${summarizeText(reason)}`,
    { cause: err },
  );
}

function fromStatus(err: SdHttpStatusError, ctx: ErrorContext): SdError {
  const { status } = err;
  const detail = describeErrorBody(err.bodyText) || `HTTP ${status}`;
  const opts = { status, cause: err };
  if (status === 401 || status === 403) {
    return new SdError(
      'SD_UNAUTHORIZED',
      `Stable Diffusion at ${ctx.baseUrl} refused the credentials (HTTP ${status}); check APP_SD_API_AUTH against its --api-auth: ${detail}`,
      opts,
    );
  }
  if (status >= 500 || status === 408 || status === 429) {
    return new SdError('SD_SERVER_ERROR', `Stable Diffusion failed ${ctx.what} (HTTP ${status}): ${detail}`, opts);
  }
  if (status >= 400) {
    // A bare FastAPI "Not Found" means the route is missing, not that the request was wrong.
    const hint = status === 404 && detail === 'Not Found' ? ' (is the server started with --api?)' : '';
    return new SdError('SD_BAD_REQUEST', `Stable Diffusion rejected the request: ${detail}${hint}`, opts);
  }
  // 1xx/3xx reach here only if a redirect could not be followed.
  return new SdError('SD_BAD_RESPONSE', `Stable Diffusion answered ${ctx.what} with HTTP ${status}: ${detail}`, opts);
}

/**
 * A human line from an A1111 error body: `{error, detail, body, errors}` from its exception
 * handler, or FastAPI's 422 `{detail: [{loc, msg, type}]}`, or (a proxy's HTML page) the text.
 */
export function describeErrorBody(text: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return summarizeText(text);
  }
  if (!isRecord(parsed)) return summarizeText(text);
  const { error, detail, errors } = parsed;
  const parts: string[] = [];
  if (Array.isArray(detail)) {
    parts.push(detail.map(describeValidationIssue).join('; '));
  } else {
    const head = [error, detail].filter((v): v is string => typeof v === 'string' && v !== '');
    if (head.length > 0) parts.push(head.join(': '));
    if (typeof errors === 'string' && errors !== '') parts.push(errors);
  }
  return parts.length > 0 ? summarizeText(parts.join(' — ')) : summarizeText(text);
}

function describeValidationIssue(issue: unknown): string {
  if (!isRecord(issue)) return summarizeText(JSON.stringify(issue));
  const loc = Array.isArray(issue.loc) ? issue.loc.filter((p) => p !== 'body').join('.') : '';
  const msg = typeof issue.msg === 'string' ? issue.msg : JSON.stringify(issue);
  return loc ? `${loc}: ${msg}` : msg;
}

/**
 * One line, no image data, at most ~300 characters. Error bodies can echo the request or carry
 * base64 images; neither belongs in a message shown to a human or written to a log.
 */
export function summarizeText(text: string, max = MAX_DETAIL): string {
  const clean = text
    .replace(/data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+/g, '[image data]')
    .replace(/[A-Za-z0-9+/=]{120,}/g, '[base64 data]')
    .replace(/\s+/g, ' ')
    .trim();
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
}

/** The `code` of the innermost error carrying one: fetch wraps socket errors as `cause`. */
function networkCode(err: unknown): string | undefined {
  let found: string | undefined;
  for (let e: unknown = err, depth = 0; isRecord(e) && depth < 5; e = e.cause, depth++) {
    if (typeof e.code === 'string') found = e.code;
  }
  return found;
}

function innermostMessage(err: Error): string {
  let msg = err.message;
  for (let e: unknown = err.cause, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e.message) msg = e.message;
  }
  return msg;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
