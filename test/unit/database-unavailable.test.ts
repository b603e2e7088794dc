/**
 * Which database errors mean "Postgres cannot be reached" (src/db/unavailable.ts), and what each
 * edge makes of them: the API's SERVICE_UNAVAILABLE (domainErrorOf, for GraphQL and REST) and the
 * job table's retry. Every error here is a real one, from node-postgres and knex against a real
 * Postgres, a closed port, a server that never answers, or a proxy that cuts the connection.
 */
import net from 'node:net';
import { GraphQLError } from 'graphql';
import type { Knex } from 'knex';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { domainErrorOf } from '../../src/api/graphqlErrors';
import { createDb } from '../../src/db/knex';
import { Generation } from '../../src/db/models';
import { isDatabaseUnavailable, untilDatabaseAnswers } from '../../src/db/unavailable';
import { DomainError, SERVICE_UNAVAILABLE_RETRY_AFTER_S } from '../../src/errors';
import { toJobFailure } from '../../src/jobs/errors';
import { createLogger } from '../../src/logger';
import { createTestDatabase, type TestDatabase } from '../helpers/database';
import { startTcpProxy } from '../helpers/tcpProxy';

const log = createLogger('silent');

/** What `work` rejects with (it must reject). */
async function errorOf(work: () => PromiseLike<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to fail');
}

/** A knex pool on `url`, destroyed after `use`. */
async function withDb<T>(url: string, opts: { poolMax?: number; acquireTimeoutMs?: number }, use: (db: Knex) => Promise<T>): Promise<T> {
  const db = await createDb({ kind: 'postgres', url, poolMax: opts.poolMax ?? 1, acquireTimeoutMs: opts.acquireTimeoutMs ?? 1000 });
  try {
    return await use(db);
  } finally {
    await db.destroy();
  }
}

/** A TCP port with a server that accepts and then says nothing: a half-dead host. */
async function silentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => void sockets.add(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

const urlAt = (base: string, port: number) => {
  const u = new URL(base);
  u.hostname = '127.0.0.1';
  u.port = String(port);
  return u.toString();
};

describe('database errors: unavailable or a bug', () => {
  let tdb: TestDatabase;
  const unavailable: Record<string, unknown> = {};
  const bugs: Record<string, unknown> = {};

  beforeAll(async () => {
    tdb = await createTestDatabase();
    const db = tdb.db;

    // Nothing listens (Postgres down, a wrong port): refused at once.
    unavailable.refused = await withDb(urlAt(tdb.url, await closedPort()), {}, (dead) => errorOf(() => dead.raw('select 1')));
    // The same through Objection, which wraps what the driver throws.
    unavailable['refused, through Objection'] = await withDb(urlAt(tdb.url, await closedPort()), {}, (dead) =>
      errorOf(() => Generation.query(dead).findById('00000000-0000-4000-8000-000000000000')),
    );
    // A server that accepts and never answers: the connect gives up within DATABASE_ACQUIRE_TIMEOUT_MS.
    const silent = await silentServer();
    try {
      unavailable['no answer to the connect'] = await withDb(urlAt(tdb.url, silent.port), { acquireTimeoutMs: 300 }, (dead) => errorOf(() => dead.raw('select 1')));
      // node-postgres' own connect timeout, which can reach a query first when it fires with the pool's.
      const client = new pg.Client({ connectionString: urlAt(tdb.url, silent.port), connectionTimeoutMillis: 100 });
      unavailable['no answer to the connect, node-postgres alone'] = await errorOf(() => client.connect());
    } finally {
      await silent.close();
    }
    // The connection is cut under a running query.
    const proxy = await startTcpProxy({ host: new URL(tdb.url).hostname, port: Number(new URL(tdb.url).port || 5432) });
    try {
      unavailable['connection cut mid-query'] = await withDb(proxy.urlThrough(tdb.url), {}, async (through) => {
        await through.raw('select 1');
        const running = errorOf(() => through.raw('select pg_sleep(30)'));
        // Cut once the query is running on the server.
        while (!(await db.raw<{ rows: unknown[] }>(`select 1 from pg_stat_activity where query = 'select pg_sleep(30)'`)).rows.length) await new Promise((r) => setTimeout(r, 10));
        await proxy.drop();
        return running;
      });
    } finally {
      await proxy.close();
    }
    // Every pooled connection is taken for longer than the acquire timeout.
    unavailable['no pooled connection in time'] = await withDb(tdb.url, { poolMax: 1, acquireTimeoutMs: 200 }, async (busy) => {
      const trx = await busy.transaction();
      try {
        return await errorOf(() => busy.raw('select 1'));
      } finally {
        await trx.rollback();
      }
    });
    // The server ends the session under a query (an administrator, a restart): SQLSTATE 57P01.
    unavailable['session terminated by the server'] = await withDb(tdb.url, {}, async (own) => {
      const trx = await own.transaction();
      const pid = (await trx.raw<{ rows: Array<{ pid: number }> }>('select pg_backend_pid() as pid')).rows[0]!.pid;
      const running = errorOf(() => trx.raw('select pg_sleep(30)'));
      while (!(await db.raw<{ rows: unknown[] }>(`select 1 from pg_stat_activity where pid = ? and query = 'select pg_sleep(30)'`, [pid])).rows.length) await new Promise((r) => setTimeout(r, 10));
      await db.raw('select pg_terminate_backend(?)', [pid]);
      const err = await running;
      await trx.rollback().catch(() => undefined);
      return err;
    });

    bugs['syntax error'] = await errorOf(() => db.raw('selec 1'));
    bugs['division by zero'] = await errorOf(() => db.raw('select 1 / 0'));
    bugs['unique violation'] = await errorOf(async () => {
      await db.raw('create temporary table once (id int primary key)');
      await db.raw('insert into once values (1), (1)');
    });
    bugs['raised by a function'] = await errorOf(() => db.raw(`do $$ begin raise exception 'injected bug'; end $$`));
    bugs['undefined table, through Objection'] = await errorOf(() => Generation.query(db).from('no_such_table'));
    bugs['a TypeError'] = await errorOf(async () => (null as unknown as { x: () => void }).x());
  });
  afterAll(async () => tdb?.drop());

  it('each unavailable shape was really produced', () => {
    expect(String((unavailable.refused as Error).message)).toMatch(/ECONNREFUSED/);
    expect((unavailable['no pooled connection in time'] as Error).name).toBe('KnexTimeoutError');
    expect(String((unavailable['connection cut mid-query'] as Error).message)).toMatch(/Connection terminated|ECONNRESET/);
    expect(unavailable['session terminated by the server']).toMatchObject({ code: '57P01' });
    expect(String((unavailable['no answer to the connect'] as Error).message)).toMatch(/timeout|Timeout/);
    expect(String((unavailable['no answer to the connect, node-postgres alone'] as Error).message)).toBe('timeout expired');
  });

  it('reads every way Postgres can be unreachable as unavailable, and no bug as one', () => {
    for (const [what, err] of Object.entries(unavailable)) expect(isDatabaseUnavailable(err), what).toBe(true);
    for (const [what, err] of Object.entries(bugs)) expect(isDatabaseUnavailable(err), what).toBe(false);
  });

  it('answers SERVICE_UNAVAILABLE at the edge for those, however wrapped, and masks the bugs', () => {
    for (const [what, err] of Object.entries(unavailable)) {
      for (const thrown of [err, new GraphQLError('resolver failed', { originalError: err as Error }), new Error('wrapped', { cause: err })]) {
        const domain = domainErrorOf(thrown);
        expect(domain, what).toBeInstanceOf(DomainError);
        expect(domain, what).toMatchObject({ code: 'SERVICE_UNAVAILABLE', details: { retryAfterSeconds: SERVICE_UNAVAILABLE_RETRY_AFTER_S } });
        // Nothing of the driver's text reaches the client.
        expect(domain!.message, what).not.toMatch(/ECONNREFUSED|terminat|select|knex/i);
      }
    }
    for (const [what, err] of Object.entries(bugs)) {
      expect(domainErrorOf(err), what).toBeNull();
      expect(domainErrorOf(new GraphQLError('resolver failed', { originalError: err as Error })), what).toBeNull();
    }
    // A domain error stays itself.
    const own = new DomainError('NOT_FOUND', 'Generation x was not found.');
    expect(domainErrorOf(own)).toBe(own);
  });

  it('retries those in a job, and fails the bugs for good', () => {
    for (const [what, err] of Object.entries(unavailable)) {
      expect(toJobFailure(err), what).toMatchObject({ code: expect.stringMatching(/^(DATABASE_)?UNAVAILABLE$/), retryable: true });
    }
    for (const [what, err] of Object.entries(bugs)) expect(toJobFailure(err), what).toMatchObject({ code: 'INTERNAL', retryable: false });
  });
});

describe('untilDatabaseAnswers', () => {
  let tdb: TestDatabase;
  beforeAll(async () => {
    tdb = await createTestDatabase({ migrate: false });
  });
  afterAll(async () => tdb?.drop());

  it('tries a write again until Postgres answers, and throws any other error at once', async () => {
    const proxy = await startTcpProxy({ host: new URL(tdb.url).hostname, port: Number(new URL(tdb.url).port || 5432) });
    try {
      await withDb(proxy.urlThrough(tdb.url), {}, async (through) => {
        await proxy.drop();
        let tries = 0;
        const answered = untilDatabaseAnswers(
          async () => {
            tries++;
            // Postgres comes back once the write has failed twice.
            if (tries === 3) await proxy.restore();
            return (await through.raw<{ rows: Array<{ n: number }> }>('select 42 as n')).rows[0]!.n;
          },
          { log, what: 'a test write', delayMs: () => 10 },
        );
        expect(await answered).toBe(42);
        expect(tries).toBeGreaterThanOrEqual(3);
        let bugTries = 0;
        await expect(
          untilDatabaseAnswers(
            () => {
              bugTries++;
              return through.raw('selec 1');
            },
            { log, what: 'a bad write', delayMs: () => 10 },
          ),
        ).rejects.toThrow(/syntax/);
        expect(bugTries).toBe(1);
      });
    } finally {
      await proxy.close();
    }
  });

  it('stops waiting when its signal aborts, with the last error', async () => {
    const port = await closedPort();
    await withDb(urlAt(tdb.url, port), {}, async (dead) => {
      const abort = new AbortController();
      let tries = 0;
      const waiting = untilDatabaseAnswers(
        () => {
          if (++tries === 3) abort.abort();
          return dead.raw('select 1');
        },
        { log, what: 'a write', signal: abort.signal, delayMs: () => 10 },
      );
      await expect(waiting).rejects.toThrow(/ECONNREFUSED/);
      expect(tries).toBe(3);
    });
  });
});
