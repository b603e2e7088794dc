import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import type { Config } from '../config';
import type { Logger } from '../logger';

// bigint columns (seeds up to 4294967295) come back as JS numbers: every value we store is below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export type Db = Knex;

export type DatabaseTarget =
  | {
      kind: 'postgres';
      url: string;
      poolMax: number;
      /**
       * DATABASE_ACQUIRE_TIMEOUT_MS: how long a query may wait for a pooled connection, a new
       * connection's connect included, before it fails (src/db/unavailable.ts reads that failure as
       * "database unavailable"). Without it (tests' own pools), 10 s.
       */
      acquireTimeoutMs?: number;
    }
  /** Embedded PGlite (real Postgres compiled to WASM, in-process) for `npm run dev` without a server. */
  | { kind: 'pglite'; dir: string };

/**
 * knex's own messages through the process's logger, as JSON lines like every other (knex prints
 * them to the console otherwise). A connection that failed or broke is said once per request by
 * whoever met it (src/db/unavailable.ts's callers), so knex's word for each try is debug detail.
 */
function knexLog(log: Logger): Knex.Config['log'] {
  const connectionTrouble = /^(Acquire connection error|Connection Error)\b/;
  return {
    warn: (message: unknown) => (typeof message === 'string' && connectionTrouble.test(message) ? log.debug({ knex: message }, 'knex: connection trouble') : log.warn({ knex: message }, 'knex warning')),
    error: (message: unknown) => log.error({ knex: message }, 'knex error'),
    deprecate: (message: unknown) => log.warn({ knex: message }, 'knex: deprecated call'),
    debug: (message: unknown) => log.debug({ knex: message }, 'knex debug'),
  };
}

/** Opens the database; with `log`, knex's own messages go there (else to the console, as knex does). */
export async function createDb(target: DatabaseTarget, log?: Logger): Promise<Db> {
  if (target.kind === 'postgres') {
    const acquireTimeoutMs = target.acquireTimeoutMs ?? 10_000;
    return knexFactory({
      client: 'pg',
      connection: {
        connectionString: target.url,
        // A server that accepts the TCP connection but never answers (a half-dead host, a hung
        // proxy) ends the connect within the same bound, so the pool does not keep a slot on it.
        connectionTimeoutMillis: acquireTimeoutMs,
        // A connection whose peer vanished without a word is noticed by the kernel, not never.
        keepAlive: true,
      },
      pool: { min: 0, max: target.poolMax },
      acquireConnectionTimeout: acquireTimeoutMs,
      ...(log ? { log: knexLog(log) } : {}),
    });
  }
  // Loaded lazily: production never needs the WASM build.
  const { default: ClientPgLite } = await import('knex-pglite');
  return knexFactory({
    client: ClientPgLite,
    dialect: 'postgres',
    connection: { filename: path.resolve(target.dir) },
  } as Knex.Config);
}

/** DATABASE_URL (or APP_DATABASE_URL) when set, else embedded PGlite in `pgliteDir` (dev only). */
export function databaseTarget(config: Config, pgliteDir: string): DatabaseTarget {
  return config.database.url
    ? { kind: 'postgres', url: config.database.url, poolMax: config.database.poolMax, acquireTimeoutMs: config.database.acquireTimeoutMs }
    : { kind: 'pglite', dir: pgliteDir };
}

/** Human-readable target for logs, without credentials. */
export function describeTarget(target: DatabaseTarget): string {
  if (target.kind === 'pglite') return `embedded PGlite in ${target.dir}`;
  const u = new URL(target.url);
  return `postgres://${u.host}${u.pathname}`;
}
