/**
 * The API's /admin/queues: the sign-in form, the admin check, retry and remove by the service's
 * rules (./actions.ts), and every page passed on to arena in its own process (./arenaProcess.ts).
 * Everything a request does here is caught at this boundary: an error answers 500 (or 502 from the
 * dashboard's process) and is logged, and the rest of the API never sees it.
 */
import type http from 'node:http';
import type { Redis } from 'ioredis';
import type { TokenAuthenticator } from '../auth/cache';
import type { AuthUser } from '../auth/tokens';
import { QUEUE_NAMES, type Config } from '../config';
import type { GenerationService } from '../generation/service';
import { BodyError, readBody, sendJson } from '../http';
import type { Logger } from '../logger';
import { DashboardActions, isQueueName, type ActionResult } from './actions';
import { ARENA_HOST } from './arenaApp';
import { ArenaProcess } from './arenaProcess';
import { clearedCookie, forbiddenPage, requestToken, signInPage, tokenCookie } from './signIn';
import { contentSecurityPolicy, inlineStyleHashes } from '../api/securityHeaders';

export const DASHBOARD_PATH = '/admin/queues';
/** The most a sign-in form or a bulk action may send. */
const BODY_LIMIT = 256 * 1024;

export interface DashboardDeps {
  config: Config;
  auth: TokenAuthenticator;
  redis: Redis;
  generations: GenerationService;
  log: Logger;
}

export interface DashboardHandler {
  /** True when the request is the dashboard's (then it is answered), false for other paths. */
  handle(req: http.IncomingMessage, res: http.ServerResponse): boolean;
  close(): Promise<void>;
}

/** The sign-in and "admins only" pages: their one <style> by its hash, and their forms posting here. */
const FORM_PAGE_CSP = contentSecurityPolicy({ 'style-src': inlineStyleHashes(signInPage(DASHBOARD_PATH)), 'form-action': ["'self'"] });

/**
 * Arena's pages: looser than the API's own. Arena (its own process, proxied as a stream) writes
 * inline scripts whose text changes with every page and job, so no hash can name them, inline
 * styles and a worker from a blob: URL; everything they load is served from here (`useCdn: false`). Framing stays refused, nothing
 * loads from another origin, and only admins reach these pages at all.
 */
const ARENA_CSP = contentSecurityPolicy({
  'script-src': ["'self'", "'unsafe-inline'"],
  'style-src': ["'self'", "'unsafe-inline'"],
  'img-src': ["'self'", 'data:'],
  'font-src': ["'self'", 'data:'],
  'connect-src': ["'self'"],
  // The JSON editor of a job's page runs its syntax checker in a worker made from a blob: URL.
  'worker-src': ['blob:'],
  'form-action': ["'self'"],
});

function html(res: http.ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': FORM_PAGE_CSP, ...headers }).end(body);
}
function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendJson(res, status, body, { 'cache-control': 'no-store', ...headers });
}

/** The host of an Origin header, or null for "null" and anything that is not a URL. */
function hostOf(origin: string): string | null {
  try {
    return new URL(origin).host || null;
  } catch {
    return null;
  }
}

async function readText(req: http.IncomingMessage): Promise<string> {
  return (await readBody(req, BODY_LIMIT)).toString('utf8');
}

/** Arena's retry and remove routes (single and bulk), with the queue and the job id. */
const ACTION_ROUTE = new RegExp(`^${DASHBOARD_PATH}/api/queue/([^/]+)/([^/]+)/job/([^/]+)$`);

export function createDashboardHandler(deps: DashboardDeps): DashboardHandler {
  const { config, auth, log } = deps;
  const actions = new DashboardActions({ redis: deps.redis, prefix: config.redis.prefix, generations: deps.generations, log });
  const arena = new ArenaProcess({ redisUrl: config.redis.url, prefix: config.redis.prefix, queues: QUEUE_NAMES, basePath: DASHBOARD_PATH, logLevel: config.logLevel }, log);

  async function signIn(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method !== 'POST') return html(res, 200, signInPage(DASHBOARD_PATH));
    const token = new URLSearchParams(await readText(req)).get('token')?.trim() ?? '';
    const user = token ? await auth.authenticate(token) : null;
    if (!user) return html(res, 401, signInPage(DASHBOARD_PATH, 'That is not a valid API token.'));
    if (!user.isAdmin) return html(res, 403, forbiddenPage(DASHBOARD_PATH), { 'set-cookie': clearedCookie(req) });
    log.info({ admin: user.id, adminEmail: user.email, action: 'signIn' }, 'admin signed in to the queue dashboard');
    res.writeHead(303, { location: `${DASHBOARD_PATH}/`, 'set-cookie': tokenCookie(req, token), 'cache-control': 'no-store' }).end();
  }


  async function act(req: http.IncomingMessage, res: http.ServerResponse, admin: AuthUser, match: RegExpExecArray): Promise<boolean> {
    const [, host, rawQueue, rawId] = match.map((p) => decodeURIComponent(p));
    const action = rawId === 'bulk' ? (req.method === 'PATCH' ? 'retry' : req.method === 'POST' ? 'remove' : null) : req.method === 'PATCH' ? 'retry' : req.method === 'DELETE' ? 'remove' : null;
    if (!action) return false;
    if (host !== ARENA_HOST || !rawQueue || !isQueueName(rawQueue)) {
      json(res, 404, { error: 'queue not found' });
      return true;
    }
    const queue = rawQueue;
    let ids: string[];
    if (rawId === 'bulk') {
      // Only JSON: a form on another page can post text/plain that parses as JSON, but not this.
      if (!/^application\/json\b/i.test(req.headers['content-type'] ?? '')) {
        json(res, 415, { error: 'send the job ids as application/json' });
        return true;
      }
      const body: unknown = JSON.parse((await readText(req)) || '{}');
      const jobs = (body as { jobs?: unknown } | null)?.jobs;
      if (!Array.isArray(jobs) || !jobs.every((j): j is string => typeof j === 'string')) {
        json(res, 400, { error: 'jobs: a list of job ids' });
        return true;
      }
      ids = jobs.map((j) => decodeURIComponent(j));
    } else {
      ids = [rawId!];
    }
    const results: ActionResult[] = [];
    // One at a time: a cancel writes to Postgres, and a bulk action is a person's click.
    for (const id of ids) results.push(action === 'retry' ? await actions.retry(admin, queue, id) : await actions.remove(admin, queue, id));
    const failed = results.filter((r) => !r.ok);
    const status = failed.length === 0 ? 200 : rawId === 'bulk' ? 409 : failed[0]!.status;
    json(res, status, { results });
    return true;
  }

  async function serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === `${DASHBOARD_PATH}/login`) return signIn(req, res);
    if (path === `${DASHBOARD_PATH}/logout`) {
      return void res.writeHead(303, { location: `${DASHBOARD_PATH}/login`, 'set-cookie': clearedCookie(req), 'cache-control': 'no-store' }).end();
    }
    const token = requestToken(req);
    const user = token ? await auth.authenticate(token) : null;
    const wantsHtml = req.method === 'GET' && !path.startsWith(`${DASHBOARD_PATH}/api/`);
    if (!user) {
      const headers: Record<string, string> = token ? { 'set-cookie': clearedCookie(req), 'www-authenticate': 'Bearer' } : { 'www-authenticate': 'Bearer' };
      if (!wantsHtml) return void res.writeHead(401, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ error: 'sign in with an admin token' }));
      return html(res, 401, signInPage(DASHBOARD_PATH, token ? 'That token is not valid (any more); sign in again.' : undefined), headers);
    }
    if (!user.isAdmin) return wantsHtml ? html(res, 403, forbiddenPage(DASHBOARD_PATH)) : json(res, 403, { error: 'admins only' });
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      // The cookie is SameSite=Strict already; a request that says where it comes from must come from here.
      // A program sends none (it signs in with a Bearer header); a browser always does, and sends
      // "null" after a cross-origin redirect: refused like any origin other than this one.
      const origin = req.headers.origin;
      if (origin !== undefined && hostOf(origin) !== req.headers.host) return json(res, 403, { error: 'cross-origin request refused' });
      const match = ACTION_ROUTE.exec(path);
      if (match && (await act(req, res, user, match))) return;
      return json(res, 405, { error: 'Only retry and remove change jobs from this dashboard.' });
    }
    res.setHeader('content-security-policy', ARENA_CSP);
    return arena.forward(req, res);
  }

  return {
    handle(req, res) {
      const url = req.url ?? '/';
      if (!config.dashboard.enabled || (url !== DASHBOARD_PATH && !url.startsWith(`${DASHBOARD_PATH}/`) && !url.startsWith(`${DASHBOARD_PATH}?`))) return false;
      serve(req, res).catch((err: unknown) => {
        // The rest of a body too large is not read: the connection closes after the answer.
        if (err instanceof BodyError) return json(res, err.reason === 'too-large' ? 413 : 400, { error: err.message }, { connection: 'close' });
        if (err instanceof SyntaxError || err instanceof URIError) return json(res, 400, { error: 'malformed request' });
        log.error({ err, url: url.split('?')[0] }, 'queue dashboard request failed');
        if (res.headersSent) res.destroy();
        else json(res, 500, { error: 'the dashboard failed to answer this request' });
      });
      return true;
    },
    close: () => arena.close(),
  };
}
