/**
 * docker-compose.yml and the Dockerfile, read as files (no Docker here): every setting an entry
 * needs reaches the service that runs it, the start-up order holds, every long-running service has a
 * health check that works, the worker scales, and every command names a script and a file that exist.
 *
 * The settings come from `neededSettings` (src/config.ts), the list the entries themselves check at
 * start, applied to each service's environment as compose would hand it over with no .env file.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfig, neededSettings, PRODUCTION_ENTRIES, type Env, type ProductionEntry } from '../../src/config';

const ROOT = path.resolve(import.meta.dirname, '../..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

interface Service {
  image?: string;
  build?: unknown;
  command?: unknown;
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test?: unknown; disable?: boolean };
  container_name?: string;
  ports?: string[];
  volumes?: string[];
}
interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

/**
 * Compose's interpolation, as far as this file uses it: `$$` is a `$`; `${NAME}`, `${NAME:-default}`
 * (unset or empty) and `${NAME-default}` (unset only), defaults nested. Anything else throws, so a new
 * form gets a thought rather than a silent misreading.
 */
function interpolate(text: string, env: Env): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    if (text.startsWith('$$', i)) {
      out += '$';
      i += 2;
    } else if (text.startsWith('${', i)) {
      let depth = 1;
      let j = i + 2;
      while (j < text.length && depth > 0) {
        if (text.startsWith('${', j)) {
          depth++;
          j += 2;
          continue;
        }
        if (text[j] === '}') depth--;
        j++;
      }
      if (depth > 0) throw new Error(`unclosed \${ in ${text}`);
      const inner = text.slice(i + 2, j - 1);
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([\s\S]*))?$/.exec(inner);
      if (!m) throw new Error(`an interpolation this test does not know: \${${inner}}`);
      const [, name, op, fallback = ''] = m;
      const value = env[name!];
      if (op === undefined) out += value ?? '';
      else if (op === ':-') out += value ? value : interpolate(fallback, env);
      else out += value !== undefined ? value : interpolate(fallback, env);
      i = j;
    } else if (text[i] === '$' && /[A-Za-z_{]/.test(text[i + 1] ?? '')) {
      throw new Error(`an unbraced variable in ${text}: write \${NAME} (or $$ for a literal $)`);
    } else {
      out += text[i];
      i++;
    }
  }
  return out;
}

function interpolateAll<T>(value: T, env: Env): T {
  if (typeof value === 'string') return interpolate(value, env) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => interpolateAll(v, env)) as T;
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolateAll(v, env)])) as T;
  return value;
}

/** The compose file as `docker compose up` sees it with this environment (none: no .env, nothing exported). */
const compose = (env: Env = {}): Compose => interpolateAll(parseYaml(read('docker-compose.yml')) as Compose, env);

/** The runtime (last) stage of the Dockerfile: its lines, continuation lines joined. */
function runtimeStage(): string[] {
  const lines = read('Dockerfile').replace(/\\\n/g, ' ').split('\n').map((l) => l.trim());
  const from = lines.map((l, i) => (/^FROM\s/i.test(l) ? i : -1)).filter((i) => i >= 0);
  return lines.slice(from.at(-1));
}

/** `ENV NAME=value` of the runtime stage: what every app container starts with, under its compose environment. */
function imageEnv(): Env {
  const env: Env = {};
  for (const line of runtimeStage()) {
    const m = /^ENV\s+(.+)$/.exec(line);
    for (const [, k, v] of m ? m[1]!.matchAll(/([A-Z_][A-Z0-9_]*)=(\S+)/g) : []) env[k!] = v;
  }
  return env;
}

const scripts = (): Record<string, string> => (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;

/** `node --import tsx <file> args…` → the file and its arguments (undefined for another command). */
function tsxEntry(command: unknown): { file: string; args: string[] } | undefined {
  const argv = Array.isArray(command) ? (command as string[]) : typeof command === 'string' ? command.split(/\s+/) : [];
  const at = argv.findIndex((a, i) => a === 'node' && argv[i + 1] === '--import' && argv[i + 2] === 'tsx');
  if (at < 0) return undefined;
  return { file: argv[at + 3]!, args: argv.slice(at + 4) };
}

/** The npm script that runs `file` (`exec node --import tsx <file>`), which names the production entry. */
function scriptFor(file: string): string | undefined {
  return Object.entries(scripts()).find(([, cmd]) => tsxEntry(cmd.replace(/^exec\s+/, ''))?.file === file)?.[0];
}

/** The services that run a production entry, with the environment its process gets. */
function appServices(env: Env = {}) {
  return Object.entries(compose(env).services).flatMap(([name, service]) => {
    const entry = tsxEntry(service.command);
    if (!entry) return [];
    const script = scriptFor(entry.file) as ProductionEntry | undefined;
    const processEnv: Env = { ...imageEnv(), ...service.environment };
    // The worker's flags override WORKER_QUEUES and WORKER_CONCURRENCY (workers/main.ts).
    for (const arg of entry.args) {
      const m = /^--(queues|concurrency)=(.*)$/.exec(arg);
      if (m) processEnv[m[1] === 'queues' ? 'WORKER_QUEUES' : 'WORKER_CONCURRENCY'] = m[2];
    }
    return [{ name, service, entry: script, file: entry.file, env: processEnv }];
  });
}

/** One-shot services: what others wait for with service_completed_successfully. */
function oneShots(c: Compose): Set<string> {
  return new Set(
    Object.values(c.services).flatMap((s) => Object.entries(s.depends_on ?? {}).filter(([, d]) => d.condition === 'service_completed_successfully').map(([n]) => n)),
  );
}

describe('docker-compose.yml: settings', () => {
  it('runs every production entry, each through its npm script file', () => {
    const entries = appServices().map((s) => s.entry);
    for (const e of PRODUCTION_ENTRIES) expect(entries, `a service runs npm run ${e}`).toContain(e);
  });

  it.each([
    ['without a .env', {}],
    ['with another S3 store and presigned URLs', { S3_ENDPOINT: 'https://storage.example.net', S3_REGION: 'r1', S3_BUCKET: 'pics', S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 's', S3_FORCE_PATH_STYLE: '', S3_PUBLIC_BASE_URL: '' }],
    [
      'with the local folder (every S3_* empty) and FILES_URL_SECRET',
      { S3_ENDPOINT: '', S3_REGION: '', S3_BUCKET: '', S3_ACCESS_KEY_ID: '', S3_SECRET_ACCESS_KEY: '', S3_FORCE_PATH_STYLE: '', S3_PUBLIC_BASE_URL: '', FILES_URL_SECRET: 'f'.repeat(64) },
    ],
  ] as const)('hands every service the settings its entry needs, %s', (_name, dotEnv: Env) => {
    for (const { name, entry, env } of appServices(dotEnv)) {
      expect(entry, `${name}: its command runs a production entry`).toBeDefined();
      const config = loadConfig(env); // every value valid, as the process will read it
      for (const need of neededSettings(entry!, config)) {
        const given = [need.variable, need.or].some((v) => v !== undefined && (env[v] ?? '').trim() !== '');
        expect(given, `${name} (npm run ${entry}) is not given ${need.variable}: ${need.why}`).toBe(true);
        expect(need.missing).toBe(false);
      }
    }
  });

  it('stores the images in the MinIO it starts, the bucket minio-init makes, under URLs a browser on the host reaches', () => {
    const c = compose();
    const api = appServices().find((s) => s.entry === 'api')!;
    const s3 = loadConfig(api.env).storage.s3!;
    expect(s3).toBeDefined();
    expect(new URL(s3.endpoint).hostname).toBe('minio');
    expect(s3.forcePathStyle).toBe(true);
    expect(s3.accessKeyId).toBe(c.services.minio!.environment!.MINIO_ROOT_USER);
    expect(s3.secretAccessKey).toBe(c.services.minio!.environment!.MINIO_ROOT_PASSWORD);
    expect(c.services['minio-init']!.environment!.BUCKET).toBe(s3.bucket);
    const script = (c.services['minio-init']!.command as string[]).join('\n');
    expect(script).toMatch(/mc mb --ignore-existing "local\/\$BUCKET"/);
    expect(script, 'anonymous GetObject only: nobody may list the bucket').toMatch(/"Action":\["s3:GetObject"\]/);
    const base = new URL(s3.publicBaseUrl!);
    expect(base.hostname).toBe('localhost');
    expect(base.pathname).toBe(`/${s3.bucket}`);
    expect(c.services.minio!.ports!.map((p) => p.split(':').slice(-2).join(':'))).toContain(`${base.port}:9000`);
  });
});

describe('docker-compose.yml: order, health, scaling', () => {
  it('starts the api and the worker after the migration and minio-init exit 0, with Redis healthy', () => {
    const c = compose();
    for (const name of ['api', 'worker']) {
      expect(c.services[name]!.depends_on).toMatchObject({
        migrate: { condition: 'service_completed_successfully' },
        'minio-init': { condition: 'service_completed_successfully' },
        redis: { condition: 'service_healthy' },
      });
    }
    expect(c.services.migrate!.depends_on).toMatchObject({ postgres: { condition: 'service_healthy' } });
    expect(c.services['minio-init']!.depends_on).toMatchObject({ minio: { condition: 'service_healthy' } });
  });

  it('gives every long-running service a health check; a one-shot service none', () => {
    const c = compose();
    const once = oneShots(c);
    expect([...once].sort()).toEqual(['migrate', 'minio-init']);
    for (const [name, service] of Object.entries(c.services)) {
      if (once.has(name)) continue;
      expect(service.healthcheck?.disable, name).not.toBe(true);
      expect(Array.isArray(service.healthcheck?.test) && (service.healthcheck.test as string[]).length > 1, `${name} has a health check`).toBe(true);
    }
    expect(c.services.redis!.healthcheck!.test).toEqual(['CMD-SHELL', 'redis-cli ping | grep -q PONG']);
    expect(String(c.services.postgres!.healthcheck!.test)).toMatch(/pg_isready/);
    expect(c.services.minio!.healthcheck!.test).toEqual(['CMD', 'mc', 'ready', 'local']);
    expect(c.services.mailpit!.healthcheck!.test).toEqual(['CMD', '/mailpit', 'readyz']);
  });

  it('keeps Redis in an append-only file on a volume, and Postgres and MinIO on volumes', () => {
    const c = compose();
    const redis = c.services.redis!;
    expect((redis.command as string[]).join(' ')).toMatch(/--appendonly yes/);
    const volumeOf = (s: Service, dir: string) => s.volumes?.find((v) => v.split(':')[1] === dir)?.split(':')[0];
    for (const [service, dir] of [['redis', '/data'], ['postgres', '/var/lib/postgresql/data'], ['minio', '/data']] as const) {
      const volume = volumeOf(c.services[service]!, dir);
      expect(volume, `${service} keeps ${dir} on a volume`).toBeDefined();
      expect(Object.keys(c.volumes ?? {}), `volume ${volume} is declared`).toContain(volume);
    }
  });

  it('lets the worker scale: no container_name, no host port, its health port inside its container', () => {
    const worker = compose().services.worker!;
    expect(worker.container_name).toBeUndefined();
    expect(worker.ports ?? []).toEqual([]);
    const port = Number(appServices().find((s) => s.name === 'worker')!.env.WORKER_METRICS_PORT);
    expect(port, 'WORKER_METRICS_PORT is set, so /readyz answers').toBeGreaterThan(0);
    expect(JSON.stringify(worker.healthcheck!.test)).toMatch(/WORKER_METRICS_PORT/);
  });

  it('reaches the SD server on the host through host.docker.internal, or APP_SD_API_URL', () => {
    const worker = appServices().find((s) => s.name === 'worker')!;
    expect(worker.env.APP_SD_API_URL).toBe('http://host.docker.internal:7860');
    expect(worker.service as { extra_hosts?: string[] }).toMatchObject({ extra_hosts: ['host.docker.internal:host-gateway'] });
    expect(appServices({ APP_SD_API_URL: 'http://gpu:7860' }).find((s) => s.name === 'worker')!.env.APP_SD_API_URL).toBe('http://gpu:7860');
  });
});

describe("the app containers' health checks, run as the container runs them", () => {
  let server: http.Server;
  let port: number;
  let ready = true;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      res.statusCode = req.url === '/readyz' && ready ? 200 : 503;
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** Runs a `["CMD", "node", "-e", …]` check with the service's environment; its exit code. */
  async function runCheck(service: string, env: Env): Promise<number | null> {
    const test = compose().services[service]!.healthcheck!.test as string[];
    expect(test.slice(0, 3), 'node itself: the image has no curl or wget').toEqual(['CMD', 'node', '-e']);
    const serviceEnv = appServices().find((s) => s.name === service)!.env;
    // Not spawnSync: the server answering the check runs in this process.
    const child = spawn(process.execPath, test.slice(2), { env: { PATH: process.env.PATH, ...serviceEnv, ...env }, stdio: 'ignore' });
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => resolve(code));
    });
  }

  it.each([
    ['api', 'PORT'],
    ['worker', 'WORKER_METRICS_PORT'],
  ])('%s: healthy while /readyz answers 200 on %s, unhealthy on 503 or no answer', async (service, portVariable) => {
    ready = true;
    expect(await runCheck(service, { [portVariable]: String(port) })).toBe(0);
    ready = false;
    expect(await runCheck(service, { [portVariable]: String(port) })).toBe(1);
    expect(await runCheck(service, { [portVariable]: '1' })).toBe(1);
  });
});

describe('the Dockerfile and the commands match the scripts and files that exist', () => {
  it('every `npm run X` in the Dockerfile names a script of package.json', () => {
    const runs = [...read('Dockerfile').matchAll(/npm run(?:\s+-[a-z-]+)*\s+([\w:-]+)/g)].map((m) => m[1]!);
    expect(runs.length).toBeGreaterThan(0);
    for (const name of runs) expect(Object.keys(scripts()), `npm run ${name}`).toContain(name);
  });

  it("every command (compose's and the image's CMD) runs a file that exists, the one an npm script runs, and that the image copies", () => {
    const copied = runtimeStage()
      .flatMap((l) => /^COPY\s+(?!--from)(.+)\s+\S+$/.exec(l)?.[1]?.split(/\s+/) ?? [])
      .map((p) => p.replace(/\/$/, ''));
    const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(read('Dockerfile'))?.[1];
    const commands = [...Object.values(compose().services).map((s) => s.command), JSON.parse(cmd!) as string[]];
    const npmRuns = Object.values(compose().services).flatMap((s) => [...JSON.stringify(s.command ?? '').matchAll(/npm run(?:\s+-[a-z-]+)*\s+([\w:-]+)/g)].map((m) => m[1]!));
    for (const name of npmRuns) expect(Object.keys(scripts()), `npm run ${name}`).toContain(name);
    let entries = 0;
    for (const command of commands) {
      const entry = tsxEntry(command);
      if (!entry) continue;
      entries++;
      expect(existsSync(path.join(ROOT, entry.file)), `${entry.file} exists`).toBe(true);
      expect(scriptFor(entry.file), `an npm script runs ${entry.file}`).toBeDefined();
      expect(copied.some((c) => entry.file === c || entry.file.startsWith(`${c}/`)), `the image copies ${entry.file}`).toBe(true);
    }
    expect(entries).toBe(4); // migrate, api, worker, and the image's default
  });

  it('builds the page in a stage of its own, and runs as a non-root user with production dependencies only', () => {
    const stage = runtimeStage();
    expect(read('Dockerfile').match(/^FROM\s/gim)?.length).toBeGreaterThanOrEqual(2);
    expect(stage.some((l) => /^RUN npm ci\b.*--omit=dev/.test(l))).toBe(true);
    expect(stage.some((l) => /^USER\s+(?!root\b|0\b)\S+/.test(l))).toBe(true);
    expect(imageEnv().NODE_ENV).toBe('production');
  });
});
