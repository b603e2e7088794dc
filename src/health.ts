/**
 * Health of a process, for load balancers and orchestrators:
 * - `/healthz`: the process is alive and serving (no dependency is asked);
 * - `/readyz`: every dependency it needs answers (Redis, Postgres with the schema current; a
 *   worker that generates also its SD server), each check bounded by HEALTH_TIMEOUT_MS, so a
 *   dependency that hangs is reported as down within that time instead of holding the answer;
 *   `down` names the dependencies that are not there (`["postgres"]`), beside each check's result.
 * The API serves both on its own port (and `/health`, the older name of `/readyz`); a worker serves
 * them, with its /metrics, on WORKER_METRICS_PORT when that is set.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import type { Knex } from 'knex';
import { assertSchemaCurrent } from './db/migrate';
import { sendJson } from './http';

export interface HealthCheck {
  name: string;
  /** The dependency the check asks (`postgres` for the database and its schema); its name when not given. */
  dependency?: string;
  run(signal: AbortSignal): Promise<unknown>;
}

export interface Readiness {
  ok: boolean;
  /** The dependencies that are down (`["postgres"]`), each named once: what an operator looks at first. */
  down: string[];
  checks: Record<string, { ok: boolean; ms: number; error?: string }>;
}

/** Runs the checks at once, each within `timeoutMs`; a check that throws or takes longer is down. */
export async function readiness(checks: readonly HealthCheck[], timeoutMs: number): Promise<Readiness> {
  const results = await Promise.all(
    checks.map(async (check) => {
      const started = performance.now();
      const abort = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          abort.abort();
          reject(new Error(`no answer within ${timeoutMs} ms`));
        }, timeoutMs);
      });
      try {
        await Promise.race([check.run(abort.signal), timedOut]);
        return [check.name, { ok: true, ms: Math.round(performance.now() - started) }] as const;
      } catch (err) {
        return [check.name, { ok: false, ms: Math.round(performance.now() - started), error: err instanceof Error ? err.message : String(err) }] as const;
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  const down = [...new Set(checks.filter((_c, i) => !results[i]![1].ok).map((c) => c.dependency ?? c.name))];
  return { ok: down.length === 0, down, checks: Object.fromEntries(results) };
}

/** ioredis states of a connection that was lost and is not back. */
const LOST: ReadonlySet<string> = new Set(['reconnecting', 'close', 'end']);

/**
 * Redis answers a PING. A connection that was lost (Redis stopped, or a failover under way) is
 * reported down at once with its state, instead of waiting out the timeout (a worker's connection
 * would hold the PING until Redis returns).
 */
export function redisCheck(redis: Redis): HealthCheck {
  return {
    name: 'redis',
    run: async () => {
      // Lost and not back (still connecting at start, or lazily unconnected, is left to the PING).
      if (LOST.has(redis.status)) throw new Error(`not connected (${redis.status})`);
      return redis.ping();
    },
  };
}

/** The checks both process kinds make: Redis answers, Postgres answers with the schema current. */
export function coreChecks(redis: Redis, db: Knex): HealthCheck[] {
  return [
    redisCheck(redis),
    { name: 'database', dependency: 'postgres', run: () => db.raw('select 1') },
    { name: 'migrations', dependency: 'postgres', run: () => assertSchemaCurrent(db) },
  ];
}

/** Health and metrics answers are about now: never cached. */
const NO_STORE = { 'cache-control': 'no-store' };

/** Answers `/healthz`, `/readyz` (and `/health`) if the request is one of them; false otherwise. */
export function handleHealth(req: http.IncomingMessage, res: http.ServerResponse, checks: readonly HealthCheck[], timeoutMs: number): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const pathname = (req.url ?? '/').split('?')[0];
  if (pathname === '/healthz') {
    sendJson(res, 200, { ok: true }, NO_STORE);
    return true;
  }
  if (pathname !== '/readyz' && pathname !== '/health') return false;
  void readiness(checks, timeoutMs).then(
    (ready) => sendJson(res, ready.ok ? 200 : 503, ready, ready.ok ? NO_STORE : { ...NO_STORE, 'retry-after': '5' }),
    () => sendJson(res, 503, { ok: false }, { ...NO_STORE, 'retry-after': '5' }),
  );
  return true;
}

export interface MetricsEndpoint {
  contentType: string;
  render(): Promise<string>;
}

/** Answers `/metrics` from `endpoint` if the request is for it; false otherwise. */
export function handleMetrics(req: http.IncomingMessage, res: http.ServerResponse, endpoint: MetricsEndpoint): boolean {
  if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') return false;
  void endpoint.render().then(
    (text) => res.writeHead(200, { 'content-type': endpoint.contentType, ...NO_STORE }).end(text),
    () => sendJson(res, 500, { error: 'metrics failed' }, NO_STORE),
  );
  return true;
}

/** A worker's small HTTP server: its health, and its Prometheus metrics at /metrics when given. */
export async function startHealthServer(checks: readonly HealthCheck[], timeoutMs: number, port: number, host: string, metrics?: MetricsEndpoint) {
  const server = http.createServer((req, res) => {
    if (handleHealth(req, res, checks, timeoutMs)) return;
    if (metrics && handleMetrics(req, res, metrics)) return;
    sendJson(res, 404, { error: 'not found' }, NO_STORE);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
