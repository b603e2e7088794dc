/**
 * The old service's REST endpoints, for clients written against it (see README "REST: the old
 * endpoints"): `POST /api/v1/generate-image/` and `GET /api/v1/generation-status/{task_id}`, plus
 * their OpenAPI document. They call the same GenerationService as GraphQL and answer the way the
 * FastAPI service did: its JSON shapes, its status codes, `{"detail": …}` errors. Domain errors
 * become HTTP statuses in one table here.
 */
import type http from 'node:http';
import type { TokenAuthenticator } from '../auth/cache';
import { bearerToken, type AuthUser } from '../auth/tokens';
import type { Config } from '../config';
import { notFound, SERVICE_UNAVAILABLE_RETRY_AFTER_S, unauthenticated, type DomainError, type PublicErrorCode } from '../errors';
import type { generationInputSchema } from '../generation/input';
import { idempotencyKeySchema } from '../generation/idempotency';
import type { GenerationService } from '../generation/service';
import { BodyError, readBody } from '../http';
import type { Logger } from '../logger';
import type { ImageUrls } from '../storage/storage';
import type { CorsPolicy } from './cors';
import { taskStatus } from './celeryState';
import { domainErrorOf } from './graphqlErrors';
import { GENERATE_PATH, OPENAPI_PATH, openApiDocument, REST_BASE } from './openapi';
import { parseGenerateBody } from './restSchema';

/** A generation request is a few hundred bytes; a body past this is refused unread (413). */
export const REST_MAX_BODY_BYTES = 64 * 1024;

/** How long a client should wait before asking again after a 503 (SERVICE_UNAVAILABLE_RETRY_AFTER_S). */
const RETRY_AFTER_S = SERVICE_UNAVAILABLE_RETRY_AFTER_S;

/** Each public error code's HTTP status; a code added to PublicErrorCode must be given one here. */
export const HTTP_STATUS_OF = {
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  BAD_USER_INPUT: 422,
  INSUFFICIENT_CREDITS: 402,
  EMAIL_NOT_VERIFIED: 403,
  SERVICE_UNAVAILABLE: 503,
  RATE_LIMITED: 429,
  CONFLICT: 409,
  IDEMPOTENCY_CONFLICT: 409,
} as const satisfies Record<PublicErrorCode, number>;

export interface RestDeps {
  auth: TokenAuthenticator;
  generations: GenerationService;
  imageUrls: ImageUrls;
  /** GraphQL's input rules (generationInputSchema with the configured limits and the samplers catalog). */
  rules: ReturnType<typeof generationInputSchema>;
  limits: Config['limits'];
  log: Logger;
  /** The client's address (src/limits/clientIp.ts), for the log line of a refused request. */
  clientIp(req: http.IncomingMessage): string;
  /** Which other origins' pages may call these endpoints (CORS_ORIGINS), as for GraphQL. */
  cors: CorsPolicy;
}

/** A request ends with this thrown: its status and body are already decided. */
class HttpAnswer {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Record<string, string> = {},
  ) {}
}

const STATUS_ROUTE = new RegExp(`^${REST_BASE}/generation-status/([^/]*)/?$`);
const GENERATE_ROUTE = new RegExp(`^${GENERATE_PATH.replace(/\/$/, '')}/?$`);

/** Builds the handler: it answers every request under /api/v1/ (true), and leaves others alone (false). */
export function createRestHandler(deps: RestDeps): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  // The limits are fixed for the process: the document is built once.
  const openApi = JSON.stringify(openApiDocument(deps.limits));
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path !== REST_BASE && !path.startsWith(`${REST_BASE}/`)) return false;
    const cors = deps.cors.headers(req);
    void route(deps, openApi, path, req).then(
      (answer) => send(res, answer, cors),
      (err: unknown) => send(res, answerFor(err, deps, req), cors),
    );
    return true;
  };
}

async function route(deps: RestDeps, openApi: string, path: string, req: http.IncomingMessage): Promise<HttpAnswer> {
  const method = req.method ?? 'GET';
  if (GENERATE_ROUTE.test(path)) {
    if (method === 'OPTIONS') return preflight('POST');
    if (method !== 'POST') return methodNotAllowed('POST');
    return generate(deps, req);
  }
  const status = STATUS_ROUTE.exec(path);
  if (status) {
    if (method === 'OPTIONS') return preflight('GET');
    if (method !== 'GET') return methodNotAllowed('GET');
    return generationStatus(deps, req, decodePathSegment(status[1] ?? ''));
  }
  if (path === OPENAPI_PATH) {
    if (method === 'OPTIONS') return preflight('GET');
    if (method !== 'GET') return methodNotAllowed('GET');
    return new HttpAnswer(200, openApi);
  }
  return new HttpAnswer(404, { detail: 'Not Found' });
}

async function generate(deps: RestDeps, req: http.IncomingMessage): Promise<HttpAnswer> {
  const text = await readText(req);
  const user = await authenticate(deps, req);
  const parsed = parseGenerateBody(text, deps.rules);
  if (!parsed.ok) return new HttpAnswer(422, { detail: parsed.detail });
  const { row } = await deps.generations.create(user, parsed.input, null, { idempotencyKey: idempotencyKeyOf(req) });
  return new HttpAnswer(200, { task_id: row.id });
}

/** The Idempotency-Key header, checked by GraphQL's idempotencyKey rule; null when absent. */
function idempotencyKeyOf(req: http.IncomingMessage): string | null {
  const raw = req.headers['idempotency-key'];
  if (raw === undefined) return null;
  const checked = idempotencyKeySchema.safeParse(raw);
  if (checked.success) return checked.data;
  const msg = (checked.error.issues[0]?.message ?? 'invalid').replace('idempotencyKey', 'Idempotency-Key');
  throw new HttpAnswer(422, { detail: [{ loc: ['header', 'Idempotency-Key'], msg, type: 'value_error' }] });
}

async function generationStatus(deps: RestDeps, req: http.IncomingMessage, taskId: string): Promise<HttpAnswer> {
  const user = await authenticate(deps, req);
  const row = await deps.generations.findVisible(user, taskId);
  // Not echoed: a malformed id may be anything.
  if (!row) throw notFound('Task', 'with this id');
  const current = await deps.generations.currentProgress(row.id);
  if (!current) throw new Error(`generation ${row.id} has no state`);
  return new HttpAnswer(200, await taskStatus(current, deps.imageUrls));
}

async function authenticate(deps: RestDeps, req: http.IncomingMessage): Promise<AuthUser> {
  const token = bearerToken(req.headers.authorization);
  const user = token ? await deps.auth.authenticate(token) : null;
  if (!user) throw unauthenticated();
  return user;
}

/** The body as text, at most REST_MAX_BODY_BYTES (413 past it, told by Content-Length before reading when it can be). */
async function readText(req: http.IncomingMessage): Promise<string> {
  try {
    return (await readBody(req, REST_MAX_BODY_BYTES)).toString('utf8');
  } catch (err) {
    if (!(err instanceof BodyError)) throw err;
    throw err.reason === 'too-large'
      ? new HttpAnswer(413, { detail: err.message }, { connection: 'close' })
      : new HttpAnswer(400, { detail: err.message });
  }
}

function decodePathSegment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    // Malformed percent-encoding: no id it could name exists.
    return raw;
  }
}

const methodNotAllowed = (allow: string) => new HttpAnswer(405, { detail: 'Method Not Allowed' }, { allow });
/** A CORS preflight (or a plain OPTIONS): the methods; the CORS headers come from the policy, for allowed origins only. */
const preflight = (allow: string) => new HttpAnswer(204, null, { allow: `${allow}, OPTIONS` });

/**
 * The one place errors become HTTP answers: domain errors (a database or a Redis that cannot be
 * reached among them, as GraphQL reads them: domainErrorOf) by HTTP_STATUS_OF, anything else a logged 500.
 */
function answerFor(thrown: unknown, deps: Pick<RestDeps, 'log' | 'clientIp'>, req: http.IncomingMessage): HttpAnswer {
  if (thrown instanceof HttpAnswer) return thrown;
  const err = domainErrorOf(thrown);
  if (err) {
    if (err !== thrown && err.code === 'SERVICE_UNAVAILABLE') deps.log.warn({ err: thrown }, 'a dependency is unavailable; a REST request answered 503');
    const status = HTTP_STATUS_OF[err.code];
    if (err.code === 'BAD_USER_INPUT') return new HttpAnswer(status, { detail: [{ loc: ['body'], msg: err.message, type: 'value_error' }] });
    return new HttpAnswer(status, { detail: err.message }, headersFor(err, deps, req));
  }
  deps.log.error({ err: thrown }, 'unexpected error in a REST request');
  return new HttpAnswer(500, { detail: 'Internal Server Error' });
}

function headersFor(err: DomainError, deps: Pick<RestDeps, 'log' | 'clientIp'>, req: http.IncomingMessage): Record<string, string> {
  switch (err.code) {
    case 'UNAUTHENTICATED':
      return { 'www-authenticate': 'Bearer' };
    case 'SERVICE_UNAVAILABLE':
      return { 'retry-after': String(typeof err.details.retryAfterSeconds === 'number' ? err.details.retryAfterSeconds : RETRY_AFTER_S) };
    case 'RATE_LIMITED': {
      const wait = err.details.retryAfterSeconds;
      deps.log.info({ ip: deps.clientIp(req), retryAfterSeconds: wait }, 'REST request refused by a rate limit');
      return { 'retry-after': String(typeof wait === 'number' ? wait : RETRY_AFTER_S) };
    }
    default:
      return {};
  }
}

function send(res: http.ServerResponse, answer: HttpAnswer, cors: Record<string, string>): void {
  if (res.headersSent) return;
  if (answer.status === 204) return void res.writeHead(204, { 'cache-control': 'no-store', ...cors, ...answer.headers }).end();
  const body = typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body);
  res.writeHead(answer.status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...cors, ...answer.headers }).end(body);
}
