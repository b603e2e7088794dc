/**
 * Builds the HTTP server of the API: GraphQL and GraphiQL at /graphql (subscriptions over SSE),
 * the web page at / (web/dist), the local image files at /files/ (signed, expiring URLs only), the
 * pages account mails link to (/account/), the old service's REST endpoints (/api/v1/), /healthz, /readyz (/health),
 * /metrics (Prometheus) and, for admins, the queue dashboard at /admin/queues (src/dashboard).
 * Building opens the API's Redis connections and reads the samplers list (closing the connections
 * again if that fails); `listen()` starts serving, and `close()` (safe to call twice) stops intake,
 * ends open streams and closes what it opened.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import { pipeline } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { createYoga, maskError, type GraphiQLOptions, type Plugin } from 'graphql-yoga';
import type { Knex } from 'knex';
import { AccountService } from '../accounts/service';
import { WebhookService } from '../webhooks/service';
import { TokenAuthenticator } from '../auth/cache';
import { bearerToken } from '../auth/tokens';
import { UserService } from '../auth/users';
import { ChatService } from '../chat/service';
import { QUEUE_NAMES, type Config } from '../config';
import { QueueInfo } from '../generation/queueInfo';
import { generationInputSchema } from '../generation/input';
import { SamplerCatalog } from '../generation/samplers';
import { GenerationService } from '../generation/service';
import { startDeadlineSweeper } from '../generation/deadlines';
import { JobProducer, waitingKey } from '../jobs/queues';
import { withRequestId, type Logger } from '../logger';
import { ProgressHub } from '../progress/hub';
import { ProgressPublisher } from '../progress/publisher';
import { clientIp } from '../limits/clientIp';
import { RateLimits } from '../limits/rateLimits';
import { StreamSlots } from '../limits/streamSlots';
import { closeRedis, openRedis } from '../redis';
import { buildSchema, type SchemaContext } from '../schema/index';
import { createRequestLoaders } from '../schema/loaders';
import { createImageUrls, imageOrigins } from '../storage/fromConfig';
import { OperatorService } from '../operators/service';
import { FILES_PATH, LocalFileUrls } from '../storage/localFileUrls';
import { resolveKey } from '../storage/localFolder';
import { coreChecks, handleHealth, handleMetrics } from '../health';
import { sendJson } from '../http';
import { createDashboardHandler } from '../dashboard/handler';
import { CSRF_HEADER, hardeningPlugins } from './hardening';
import { handleAccountPage } from './accountPages';
import { apiMetrics } from './metrics';
import { createRestHandler } from './rest';
import { webPage } from './webPage';
import { privateCacheControl, type ImageUrls } from '../storage/storage';
import { GRAPHIQL_ASSETS_PATH, graphiqlCsp, readGraphiQLAsset, renderLocalGraphiQL } from './graphiql';
import { CorsPolicy } from './cors';
import { setSecurityHeaders } from './securityHeaders';
import { domainErrorOf, toGraphQLError } from './graphqlErrors';
import { isDatabaseUnavailable } from '../db/unavailable';

export interface ApiOptions {
  config: Config;
  db: Knex;
  log: Logger;
  /**
   * Makes the image URLs of each answer. With the local folder's signed URLs (the embedded default)
   * the API also serves those files at /files/, checking each signature. The caller owns it; when
   * not given, the server builds it from the config (createImageUrls) and closes it itself.
   */
  imageUrls?: ImageUrls;
  /** GraphiQL's options: dev mode opens it with the example tabs and the demo user's token (graphiqlExamples). */
  graphiql?: GraphiQLOptions;
  /** The web page at `/` (web/dist); dev writes the demo user's token into it. */
  web?: { dir?: string; demoToken?: string };
}

/** What yoga is given with each request: it is called as `yoga(req, res)`. */
interface NodeServerContext {
  req: http.IncomingMessage;
  res: http.ServerResponse;
}

export interface ApiServer {
  readonly server: http.Server;
  listen(port?: number, host?: string): Promise<string>;
  close(): Promise<void>;
}

/** Marks SSE responses so that nginx and similar proxies pass events through at once. */
const sseHeaders: Plugin = {
  onResponse({ response }) {
    if (response.headers.get('content-type')?.includes('text/event-stream')) {
      response.headers.set('x-accel-buffering', 'no');
      response.headers.set('cache-control', 'no-cache');
    }
  },
};

/** GraphiQL's page (the one HTML answer yoga makes) gets its own CSP; every other yoga answer keeps the strict one. */
function graphiqlPolicy(csp: string): Plugin {
  return {
    onResponse({ response }) {
      if (response.headers.get('content-type')?.includes('text/html')) response.headers.set('content-security-policy', csp);
    },
  };
}

export async function createApiServer(opts: ApiOptions): Promise<ApiServer> {
  const { config, db, log } = opts;
  // First: a missing FILES_URL_SECRET stops the API before it opens anything.
  const imageUrls = opts.imageUrls ?? createImageUrls(config);
  const closeOwnImageUrls = () => {
    if (!opts.imageUrls) imageUrls.close?.();
  };
  // Every connection of the API fails a command fast while Redis is away (src/redis.ts): a request
  // answers SERVICE_UNAVAILABLE in a second or two instead of waiting for Redis to return.
  const redis = openRedis(config.redis, 'api', log, 'request');
  const subscriber = openRedis(config.redis, 'api-subscriber', log, 'request');
  // The limits' own connection: a command that Redis does not answer in time fails (no queue while
  // disconnected, no retries), so a limit decides quickly whether Redis is there (src/limits/).
  const limitsRedis = openRedis(config.redis, 'api-limits', log, 'request', {
    commandTimeout: config.rateLimits.redisTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
  });
  const rateLimits = new RateLimits(limitsRedis, config.redis.prefix, config.rateLimits, log);
  const streamSlots = new StreamSlots(limitsRedis, config.redis.prefix, config.rateLimits, log);
  // On the process's own connection: the API's fails fast while Redis is away, the worker's waits.
  const producer = new JobProducer(config, log, redis);
  const publisher = new ProgressPublisher(redis, config.redis.prefix, config.progress.expiresS);
  const hub = new ProgressHub(subscriber, config.redis.prefix, log);
  const samplers = new SamplerCatalog(redis, config.redis.prefix, log);
  try {
    await samplers.start();
  } catch (err) {
    await Promise.allSettled([producer.close(), closeRedis(subscriber), closeRedis(redis), closeRedis(limitsRedis)]);
    closeOwnImageUrls();
    throw err;
  }
  const auth = new TokenAuthenticator(db, {
    ttlMs: config.auth.cacheTtlMs,
    negativeTtlMs: config.auth.cacheNegativeTtlMs,
    maxEntries: config.auth.cacheMaxEntries,
    onUseRecordError: (err) => log.warn({ err }, "could not record a token's last use"),
  });
  const accounts = new AccountService({
    db,
    producer,
    settings: config.accounts,
    log,
    forgetTokenHashes: (hashes) => auth.forgetHashes(hashes),
    limits: rateLimits,
  });
  const webhooks = new WebhookService({ db, allowPrivate: config.webhooks.allowPrivate });
  const metrics = apiMetrics(() => hub.listenerCount);
  const generations = new GenerationService({
    db,
    webhooks,
    producer,
    publisher,
    hub,
    queueInfo: new QueueInfo(redis, waitingKey(config, 'high_priority'), config.redis.prefix),
    resyncMs: config.progress.resyncMs,
    log,
    emailVerification: config.accounts.emailVerificationRequired ? { isEmailVerified: (id) => accounts.emailVerified(id) } : undefined,
    credits: metrics.credits,
    rateLimits,
    maxUnfinishedPerUser: config.rateLimits.unfinishedGenerationsPerUser,
    idempotencyTtlS: config.submit.idempotencyTtlS,
  });
  // Overdue queued generations end on time even when no worker runs (src/generation/deadlines.ts).
  const deadlines =
    config.submit.startDeadlineSweepMs > 0
      ? startDeadlineSweeper({ db, publisher, producer, log, credits: metrics.credits }, config.submit.startDeadlineSweepMs)
      : null;

  const cors = new CorsPolicy(config.http.corsOrigins);
  const rest = createRestHandler({
    cors,
    auth,
    generations,
    imageUrls,
    rules: generationInputSchema(config.limits, samplers),
    limits: config.limits,
    log,
    clientIp: (req) => clientIp(req, config.http.trustProxy),
  });
  const users = new UserService(db, log);
  const chat = new ChatService(db);
  const operators = new OperatorService({ redis, prefix: config.redis.prefix, queues: QUEUE_NAMES });
  const web = webPage({ ...opts.web, imageOrigins: imageOrigins(config) });
  const yoga = createYoga<NodeServerContext, SchemaContext>({
    schema: buildSchema({ limits: config.limits, samplers }),
    graphqlEndpoint: '/graphql',
    landingPage: false,
    graphiql: config.graphql.graphiql
      ? {
          title: 'Stable Diffusion jobs',
          subscriptionsProtocol: 'SSE',
          // GraphiQL sends subscriptions as GETs, which CSRF prevention lets through only with this header.
          additionalHeaders: { [CSRF_HEADER]: '1' },
          ...opts.graphiql,
        }
      : false,
    batching: config.graphql.batching > 0 ? { limit: config.graphql.batching } : false,
    // The cap is ours: refusedBeforeYoga by Content-Length, capRequestBodies (hardening.ts) inside yoga.
    maxRequestBodySize: false,
    renderGraphiQL: renderLocalGraphiQL,
    // Yoga's default answers every origin; here only CORS_ORIGINS' pages (none by default) may call from a browser.
    cors: cors.enabled ? cors.yoga : false,
    plugins: [...hardeningPlugins(config.graphql), sseHeaders, graphiqlPolicy(graphiqlCsp()), metrics.plugin],
    logging: {
      debug: (...a: unknown[]) => log.debug({ yoga: a }, 'yoga'),
      info: (...a: unknown[]) => log.info({ yoga: a }, 'yoga'),
      warn: (...a: unknown[]) => log.warn({ yoga: a }, 'yoga'),
      error: (...a: unknown[]) => log.error({ yoga: a }, 'yoga'),
    },
    maskedErrors: {
      // No stack, original message or file path in any answer, in development too: the log has them.
      isDev: false,
      // Errors with a public code pass through; everything else is logged whole and masked.
      maskError: (error, message, isDev) => {
        const domain = domainErrorOf(error);
        if (domain) {
          if (domain.code === 'SERVICE_UNAVAILABLE' && isDatabaseUnavailable(error)) log.warn({ err: error }, 'database unavailable; answered SERVICE_UNAVAILABLE');
          return toGraphQLError(domain, error);
        }
        const masked = maskError(error, message, isDev);
        if (masked !== error) log.error({ err: error }, 'unexpected error in a GraphQL operation');
        return masked;
      },
    },
    context: async ({ request, req }): Promise<SchemaContext> => {
      const header = request.headers.get('authorization');
      const token = bearerToken(header);
      const user = token ? await auth.authenticate(token) : null;
      return {
        user,
        // Credentials that were sent but are not a valid token (unknown, revoked, or not `Bearer <token>`).
        signal: request.signal,
        tokenRejected: Boolean(header?.trim()) && user === null,
        token: user ? token : null,
        clientIp: clientIp(req, config.http.trustProxy),
        streamSlots,
        generations,
        accounts,
        webhooks,
        users,
        imageUrls,
        chat,
        operators,
        log,
        progressMemo: new Map(),
        // Per request and per caller: a cache shared across requests would serve one user's reads to another.
        loaders: createRequestLoaders({ users, accounts, webhooks, generations }, user),
      };
    },
  });

  const dashboard = createDashboardHandler({ config, auth, redis, generations, log });
  const healthChecks = coreChecks(redis, db);
  const localFiles = imageUrls instanceof LocalFileUrls ? imageUrls : null;
  const server = http.createServer((req, res) => {
    // Every log line written for this request (the services' too) carries its id; so does the answer.
    const requestId = requestIdOf(req);
    res.setHeader('x-request-id', requestId);
    // Before any route: every answer carries them, errors and 404s too; a page replaces only its CSP.
    setSecurityHeaders(res);
    if (cors.enabled) res.setHeader('vary', 'Origin');
    withRequestId(requestId, () => route(req, res));
  });
  const route = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = req.url ?? '/';
    if (handleHealth(req, res, healthChecks, config.health.timeoutMs)) return;
    if (handleMetrics(req, res, metrics.endpoint)) return;
    if (req.method === 'GET' && url.startsWith(FILES_PATH) && localFiles) {
      void serveFile(localFiles, url.slice(FILES_PATH.length), res);
      return;
    }
    if (req.method === 'GET' && url.startsWith(GRAPHIQL_ASSETS_PATH)) {
      void readGraphiQLAsset(url.split('?')[0] ?? '').then((asset) => {
        if (!asset) return sendJson(res, 404, { error: 'not found' });
        res.writeHead(200, { 'content-type': asset.type, 'cache-control': 'public, max-age=86400' });
        res.end(asset.body);
      });
      return;
    }
    if (url.startsWith('/account/') && handleAccountPage(req, res, accounts, log)) return;
    if (url.startsWith('/admin/') && dashboard.handle(req, res)) return;
    if (rest(req, res)) return;
    if (web.handle(req, res)) return;
    toYoga(req, res);
  };
  /**
   * Hands a request to yoga, after refusing what yoga would not serve and a GET whose JSON
   * parameters are malformed. A body over MAX_BODY_BYTES is refused here by its Content-Length,
   * before it is read; a chunked one while yoga reads it (capRequestBodies, hardening.ts).
   */
  const toYoga = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const refusal = refusedBeforeYoga(req, config.graphql.maxBodyBytes);
    if (refusal) return sendJson(res, refusal.status, { errors: [{ message: refusal.message, extensions: { code: refusal.code } }] }, refusal.headers);
    if (req.method === 'GET' || req.method === 'HEAD') {
      const bad = malformedJsonParameter(req.url ?? '/');
      if (bad) return sendJson(res, 400, { errors: [{ message: `The "${bad}" parameter is not valid JSON.`, extensions: { code: 'BAD_REQUEST' } }] });
    }
    void yoga(req, res);
  };


  let closing: Promise<void> | undefined;
  return {
    server,
    listen(port = config.http.port, host = config.http.host) {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          const addr = server.address() as AddressInfo;
          resolve(`http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`);
        });
      });
    },
    close() {
      closing ??= (async () => {
        // Stop intake; open SSE streams are ended by closing their connections.
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        samplers.close();
        // Before the producer and Redis close: a sweep under way publishes what it ends.
        await deadlines?.close();
        // The streams have ended (their slots went back); then the heartbeat stops and its connection closes,
        // and the last-use writes under way end before whoever owns the database closes it.
        await streamSlots.close();
        await Promise.allSettled([dashboard.close(), producer.close(), closeRedis(subscriber), closeRedis(redis), closeRedis(limitsRedis), auth.settled()]);
        closeOwnImageUrls();
      })();
      return closing;
    },
  };
}


/**
 * Content types yoga reads a POST in (JSON, GraphQL), and those a browser sends without a preflight
 * (yoga's CSRF prevention answers those).
 */
const POST_CONTENT_TYPES = /^\s*(application\/(json|graphql|graphql\+json|graphql-response\+json)|text\/plain|application\/x-www-form-urlencoded|multipart\/form-data)\s*(;|$)/i;

/** A request refused before yoga sees it: any body it says is too large, and on /graphql a method yoga does not serve or a content type it cannot read. */
function refusedBeforeYoga(req: http.IncomingMessage, maxBodyBytes: number): { status: number; code: string; message: string; headers?: Record<string, string> } | null {
  // Whatever the path: yoga also serves any path ending in /graphql.
  if (Number(req.headers['content-length'] ?? 0) > maxBodyBytes) {
    // Refused unread; the connection closes after the answer, dropping the rest.
    return { status: 413, code: 'PAYLOAD_TOO_LARGE', message: `The request body is larger than ${maxBodyBytes} bytes.`, headers: { connection: 'close' } };
  }
  if (!(req.url ?? '/').startsWith('/graphql')) return null;
  if (!['GET', 'HEAD', 'POST', 'OPTIONS'].includes(req.method ?? '')) {
    return { status: 405, code: 'METHOD_NOT_ALLOWED', message: 'GraphQL is served over GET and POST.', headers: { allow: 'GET, POST' } };
  }
  if (req.method === 'POST' && !POST_CONTENT_TYPES.test(req.headers['content-type'] ?? '')) {
    return { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: 'Send the operation as JSON (content-type: application/json).' };
  }
  return null;
}

/** The name of a GET's `variables` or `extensions` parameter that is not JSON, if any. */
function malformedJsonParameter(url: string): string | null {
  const queryAt = url.indexOf('?');
  if (queryAt === -1) return null;
  const params = new URLSearchParams(url.slice(queryAt + 1));
  for (const name of ['variables', 'extensions']) {
    const value = params.get(name);
    if (value === null || value === '') continue;
    try {
      JSON.parse(value);
    } catch {
      return name;
    }
  }
  return null;
}

/** A request id a proxy sent (x-request-id, if it is a plain token), else a new one. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
function requestIdOf(req: http.IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}


async function serveFile(files: LocalFileUrls, pathAndQuery: string, res: http.ServerResponse) {
  const queryAt = pathAndQuery.indexOf('?');
  const rawKey = queryAt === -1 ? pathAndQuery : pathAndQuery.slice(0, queryAt);
  let decoded: string;
  try {
    decoded = decodeURIComponent(rawKey);
  } catch {
    return sendJson(res, 400, { error: 'malformed path' });
  }
  const file = resolveKey(files.root, decoded);
  if (!file) return sendJson(res, 404, { error: 'not found' });
  // The signature before the file system: an unsigned request learns nothing, not even whether a file exists.
  const check = files.check(decoded, new URLSearchParams(queryAt === -1 ? '' : pathAndQuery.slice(queryAt + 1)));
  if (!check.ok) return sendJson(res, 403, { error: check.reason === 'expired' ? 'this link has expired' : 'this link is not valid' });
  const info = await stat(file).catch(() => null);
  if (!info?.isFile()) return sendJson(res, 404, { error: 'not found' });
  res.writeHead(200, {
    'content-type': file.endsWith('.webp') ? 'image/webp' : 'application/octet-stream',
    'content-length': info.size,
    // Keys never change content, but the link dies: private (no shared cache serves it past its
    // expiry), and a browser keeps it no longer than the link lives.
    'cache-control': privateCacheControl(check.secondsLeft),
  });
  // pipeline, not pipe: a client that hangs up mid-file closes the file too, and a read error ends
  // the response instead of crashing the process.
  pipeline(createReadStream(file), res, (err) => {
    if (err) res.destroy();
  });
}
