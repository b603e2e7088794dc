/**
 * The measured side: the real API (`createApiServer`) in its own process, against the scenario's
 * scratch database and Redis prefix. The settings arrive as one JSON object in BENCH_API_ENV and go
 * through `loadConfig`, so nothing else in the bench's environment leaks in.
 * Reports `{ type: 'ready', url }`; SIGTERM closes the server, then the database pool, and exits.
 * With BENCH_CPU_PROFILE=<file>, the whole life of the process is CPU-profiled into that file.
 */
import { createApiServer } from '../../../src/api/server';
import { loadConfig } from '../../../src/config';
import { createDb } from '../../../src/db/knex';
import { createLogger } from '../../../src/logger';
import { report } from '../../lib/processes';
import { startCpuProfile } from '../../lib/profile';

async function main() {
  const raw = process.env.BENCH_API_ENV;
  if (!raw) throw new Error('BENCH_API_ENV is not set: this module is started by bench/scenarios/mutation.ts');
  const config = loadConfig(JSON.parse(raw) as Record<string, string>);
  if (!config.database.url) throw new Error('BENCH_API_ENV has no DATABASE_URL');
  const stopProfile = await startCpuProfile(process.env.BENCH_CPU_PROFILE);
  const log = createLogger(config.logLevel, 'bench-api');
  const db = await createDb({ kind: 'postgres', url: config.database.url, poolMax: config.database.poolMax });
  const api = await createApiServer({ config, db, log });
  const base = await api.listen(0, '127.0.0.1');
  report({ type: 'ready', url: `${base}/graphql` });

  // The bench asks for the CPU time used so far, to compute CPU per request around a run.
  process.on('message', (m: unknown) => {
    if ((m as { type?: unknown } | null)?.type === 'cpu') report({ type: 'cpu', usage: process.cpuUsage() });
  });

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void (async () => {
      const steps = await Promise.allSettled([api.close().then(() => db.destroy()), stopProfile?.()]);
      for (const s of steps) if (s.status === 'rejected') process.stderr.write(`bench api child: ${String(s.reason)}\n`);
      process.exit(0);
    })();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench api child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
