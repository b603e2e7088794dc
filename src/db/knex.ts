import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import type { Config } from '../config';

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

export async function createDb(target: DatabaseTarget): Promise<Db> {
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
