/**
 * The real API in a bench child: `createApiServer` with a real `loadConfig`, on 127.0.0.1 and a free
 * port. Reports `{ ready: url }`, then answers control requests (`memory`, `connections`, `close`).
 *
 * Environment:
 * - BENCH_API_ENV: JSON of the service's environment variables (REDIS_URL, REDIS_PREFIX, DATABASE_URL, …);
 * - BENCH_API_SRC: optional folder of another copy of `src/` to run instead of this one, so that a
 *   bench run can put an earlier implementation side by side with the current one;
 * - BENCH_PROFILE_DIR: optional folder; the child records a CPU profile from start to close and
 *   writes it there as api-<pid>.cpuprofile (open it in Chrome DevTools or speedscope).
 */
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { report } from '../../lib/processes';
import { connectionCount, serveControl } from './control';
import { startCpuProfile } from '../../lib/profile';

type ServerModule = typeof import('../../../src/api/server');
type ConfigModule = typeof import('../../../src/config');
type KnexModule = typeof import('../../../src/db/knex');
type LoggerModule = typeof import('../../../src/logger');

const srcRoot = process.env.BENCH_API_SRC ?? fileURLToPath(new URL('../../../src/', import.meta.url));
const load = <T>(file: string) => import(pathToFileURL(path.join(srcRoot, file)).href) as Promise<T>;

async function main() {
  const profileDir = process.env.BENCH_PROFILE_DIR;
  const stopProfile = profileDir ? await startCpuProfile(path.join(profileDir, `api-${process.pid}.cpuprofile`)) : undefined;
  const [{ createApiServer }, { loadConfig }, { createDb }, { createLogger }] = await Promise.all([
    load<ServerModule>('api/server.ts'),
    load<ConfigModule>('config.ts'),
    load<KnexModule>('db/knex.ts'),
    load<LoggerModule>('logger.ts'),
  ]);
  const env = JSON.parse(process.env.BENCH_API_ENV ?? '{}') as Record<string, string>;
  const config = loadConfig({ NODE_ENV: 'production', LOG_LEVEL: 'silent', HOST: '127.0.0.1', PORT: '0', ...env });
  const url = config.database.url;
  if (!url) throw new Error('BENCH_API_ENV must name DATABASE_URL');
  const db = await createDb({ kind: 'postgres', url, poolMax: config.database.poolMax });
  const log = createLogger(config.logLevel, 'bench-api');
  const api = await createApiServer({ config, db, log });
  const address = await api.listen();
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= api
      .close()
      .then(() => db.destroy())
      .then(() => stopProfile?.());
    return closing;
  };
  serveControl({
    connections: () => connectionCount(api.server),
    close,
  });
  process.once('SIGTERM', () => void close().finally(() => process.exit(0)));
  report({ ready: address });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench api child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
