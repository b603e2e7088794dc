import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assertNeededSettings, ConfigError, ENV_VARIABLES, envDefaults, loadConfig, neededSettings, type Env, type ProductionEntry } from '../../src/config';

/** The README's configuration table: variable → its default column, as written. */
function readmeTable(): Map<string, string> {
  const readme = readFileSync(path.resolve(import.meta.dirname, '../../README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('\n## ', readme.indexOf('## Configuration') + 5));
  const rows = new Map<string, string>();
  for (const line of section.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length < 4 || !cells[1]?.startsWith('`')) continue;
    const names = [...cells[1].matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!);
    const defaults = cells[2]!.split(' / ');
    names.forEach((n, i) => rows.set(n, (names.length === defaults.length ? defaults[i] : cells[2])!.trim()));
  }
  return rows;
}

describe('the README configuration table', () => {
  it('lists exactly the variables config.ts reads, with the same defaults', () => {
    const table = readmeTable();
    expect([...table.keys()].sort()).toEqual([...ENV_VARIABLES].sort());
    const defaults = envDefaults();
    for (const [name, written] of table) {
      // Only plain literals are compared; a computed default is described in words.
      const literal = /^`([^`]*)`$/.exec(written)?.[1];
      if (literal === undefined || defaults[name] === undefined) continue;
      expect(`${name}=${literal}`).toBe(`${name}=${String(defaults[name])}`);
    }
  });
});

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const c = loadConfig({});
    expect(c.http).toEqual({ host: '0.0.0.0', port: 4000, publicUrl: 'http://localhost:4000', trustProxy: 0, corsOrigins: [] });
    expect(c.redis.url).toBe('redis://localhost:6379/0');
    expect(c.worker).toMatchObject({
      concurrency: 2,
      queues: ['high_priority', 'normal_priority', 'low_priority', 'webhooks'],
      timeLimitMs: 600_000,
      softTimeLimitMs: 540_000,
      maxRetries: 3,
      retryDelayMs: 60_000,
      maxTasksPerChild: 50,
    });
    expect(c.worker.slots).toEqual({ high_priority: 2, normal_priority: 4, low_priority: 4, webhooks: 8 });
    // Twelve tries whose waits double from 40 s: the last about 23 hours after the first.
    expect(c.webhooks).toEqual({ maxAttempts: 12, retryDelayMs: 40_000, timeoutMs: 10_000, allowPrivate: false });
    expect(c.limits.pageSizeMax).toBe(100);
    expect(c.progress.expiresS).toBe(3600);
    expect(c.database.url).toBeUndefined();
    expect(c.sd.url).toBeUndefined();
  });

  it('keeps the Celery names: DATABASE_URL wins over APP_DATABASE_URL, CELERY_WORKER_CONCURRENCY is an alias', () => {
    const c = loadConfig({
      APP_DATABASE_URL: 'postgres://a/app',
      DATABASE_URL: 'postgres://b/main',
      CELERY_WORKER_CONCURRENCY: '5',
    });
    expect(c.database.url).toBe('postgres://b/main');
    expect(c.worker.concurrency).toBe(5);
    expect(loadConfig({ APP_DATABASE_URL: 'postgres://a/app' }).database.url).toBe('postgres://a/app');
    expect(loadConfig({ CELERY_WORKER_CONCURRENCY: '5', WORKER_CONCURRENCY: '3' }).worker.concurrency).toBe(3);
  });

  it('reads APP_SD_API_URL as one server or a comma-separated fleet; the generation slots default to one per server', () => {
    const one = loadConfig({ APP_SD_API_URL: 'http://gpu:7860/', APP_SD_API_AUTH: 'u:p' });
    expect(one.sd.servers).toEqual([{ url: 'http://gpu:7860', auth: { username: 'u', password: 'p' } }]);
    expect(one.sd.url).toBe('http://gpu:7860');
    expect(one.worker.concurrency).toBe(2);
    const fleet = loadConfig({ APP_SD_API_URL: 'http://a:7860, http://me:s3cret@b:7860/,http://c:7860', APP_SD_API_AUTH: 'u:p' });
    expect(fleet.sd.servers).toEqual([
      { url: 'http://a:7860', auth: { username: 'u', password: 'p' } },
      { url: 'http://b:7860', auth: { username: 'me', password: 's3cret' } },
      { url: 'http://c:7860', auth: { username: 'u', password: 'p' } },
    ]);
    expect(fleet.worker.concurrency).toBe(3);
    expect(fleet.worker.slots.high_priority).toBe(3);
    expect(loadConfig({ APP_SD_API_URL: 'http://a:1,http://b:1', WORKER_CONCURRENCY: '5' }).worker.concurrency).toBe(5);
    for (const bad of ['http://a:1,nope', 'http://a:1,ftp://b', 'http://a:1,http://a:1/', ',']) {
      expect(() => loadConfig({ APP_SD_API_URL: bad }), bad).toThrow(/APP_SD_API_URL/);
    }
    // The message names the variable but never a listed server's password.
    let message = '';
    try {
      loadConfig({ APP_SD_API_URL: 'http://u:pw-alpha@a:1,http://v:pw-beta@b:1,x' });
    } catch (err) {
      message = err instanceof Error ? err.message : String(err);
    }
    expect(message).toMatch(/APP_SD_API_URL/);
    expect(message).not.toMatch(/pw-/);
  });

  it('reads CORS_ORIGINS as a list of origins, and refuses paths, wildcards and other schemes', () => {
    expect(loadConfig({ CORS_ORIGINS: ' https://app.example.com, http://localhost:5173/ ,' }).http.corsOrigins).toEqual(['https://app.example.com', 'http://localhost:5173']);
    expect(loadConfig({ CORS_ORIGINS: '' }).http.corsOrigins).toEqual([]);
    for (const bad of ['*', 'https://app.example.com/path', 'app.example.com', 'ftp://files.example.com', 'https://a.example.com,null']) {
      expect(() => loadConfig({ CORS_ORIGINS: bad }), bad).toThrow(/CORS_ORIGINS/);
    }
  });

  it('reads REDIS_SENTINELS as host:port pairs, and refuses anything else naming the variable', () => {
    expect(loadConfig({}).redis.sentinels).toEqual([]);
    const c = loadConfig({ REDIS_SENTINELS: 'sentinel-1:26379, 10.0.0.2:26380,[::1]:26381', REDIS_SENTINEL_NAME: 'jobs' });
    expect(c.redis.sentinels).toEqual([
      { host: 'sentinel-1', port: 26379 },
      { host: '10.0.0.2', port: 26380 },
      { host: '::1', port: 26381 },
    ]);
    expect(c.redis.sentinelName).toBe('jobs');
    for (const bad of ['sentinel-1', 'sentinel-1:0', 'sentinel-1:70000', 'redis://sentinel-1:26379', 'a:1:2']) {
      expect(() => loadConfig({ REDIS_SENTINELS: bad }), bad).toThrow(/REDIS_SENTINELS/);
    }
  });

  it('gives each queue its own slots: --concurrency sizes the generation slots only', () => {
    const c = loadConfig({ WORKER_CONCURRENCY: '3', NORMAL_PRIORITY_CONCURRENCY: '6', LOW_PRIORITY_CONCURRENCY: '1', WEBHOOKS_CONCURRENCY: '20' });
    expect(c.worker.slots).toEqual({ high_priority: 3, normal_priority: 6, low_priority: 1, webhooks: 20 });
    expect(() => loadConfig({ LOW_PRIORITY_CONCURRENCY: '0' })).toThrow(/LOW_PRIORITY_CONCURRENCY="0"/);
  });

  it('parses SD basic auth, keeping colons in the password', () => {
    const c = loadConfig({ APP_SD_API_URL: 'http://gpu:7860/', APP_SD_API_AUTH: 'me:pa:ss' });
    expect(c.sd.url).toBe('http://gpu:7860');
    expect(c.sd.auth).toEqual({ username: 'me', password: 'pa:ss' });
  });

  it('fails fast naming each bad variable', () => {
    const attempt = () => loadConfig({ PORT: 'eighty', REDIS_URL: 'http://nope', WORKER_CONCURRENCY: '0' });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(/PORT="eighty"/);
    expect(attempt).toThrow(/REDIS_URL="http:\/\/nope": must be a URL starting with redis:\/\/ or rediss:\/\//);
    expect(attempt).toThrow(/WORKER_CONCURRENCY="0"/);
    expect(() => loadConfig({ WORKER_QUEUES: 'high_priority,urgent' })).toThrow(/WORKER_QUEUES: unknown queue "urgent"/);
    expect(() => loadConfig({ TASK_SOFT_TIME_LIMIT_S: '700' })).toThrow(/TASK_SOFT_TIME_LIMIT_S must not exceed/);
  });

  it('treats an empty variable as unset, not as 0', () => {
    const c = loadConfig({ PORT: '', TASK_MAX_RETRIES: ' ', NEGATIVE_PROMPT_MAX_LENGTH: '' });
    expect(c.http.port).toBe(4000);
    expect(c.worker.maxRetries).toBe(3);
    expect(c.limits.negativePromptMaxLength).toBe(2000);
  });

  it('never prints credentials in its error messages', () => {
    let message = '';
    try {
      loadConfig({ DATABASE_URL: 'postgresql+asyncpg://app:S3cret@db/app', APP_SD_API_AUTH: 'no-colon-secret' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/DATABASE_URL="postgresql\+asyncpg:\/\/\*\*\*@db\/app"/);
    expect(message).toMatch(/APP_SD_API_AUTH="\*\*\*": must look like user:password/);
    expect(message).not.toMatch(/S3cret|no-colon-secret/);
  });

  it('uses the local folder without S3_*, and S3 with all of them (path style, public base, multipart threshold)', () => {
    expect(loadConfig({}).storage).toEqual({ dir: '.data/files', filesUrlSecret: undefined, urlTtlS: 3600, s3: undefined });
    const c = loadConfig({
      S3_ENDPOINT: 'http://localhost:9000/',
      S3_REGION: 'us-east-1',
      S3_BUCKET: 'images',
      S3_ACCESS_KEY_ID: 'minioadmin',
      S3_SECRET_ACCESS_KEY: 'minioadmin',
      S3_FORCE_PATH_STYLE: 'true',
      S3_PUBLIC_BASE_URL: 'https://cdn.example.com/images/',
      IMAGE_URL_TTL_S: '60',
    });
    expect(c.storage.urlTtlS).toBe(60);
    expect(c.storage.s3).toEqual({
      endpoint: 'http://localhost:9000',
      region: 'us-east-1',
      bucket: 'images',
      accessKeyId: 'minioadmin',
      secretAccessKey: 'minioadmin',
      forcePathStyle: true,
      publicBaseUrl: 'https://cdn.example.com/images',
      multipartThresholdBytes: 8 * 1024 * 1024,
    });
    expect(loadConfig({ S3_ENDPOINT: 'https://storage.yandexcloud.net', S3_REGION: 'ru-central1', S3_BUCKET: 'b', S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 's' }).storage.s3?.forcePathStyle).toBe(false);
  });

  it('refuses S3 storage that is half configured, naming what is missing, and never falls back to the local folder', () => {
    expect(() => loadConfig({ S3_BUCKET: 'images' })).toThrow(
      /S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY are not set, but S3_BUCKET is/,
    );
    expect(() => loadConfig({ S3_ENDPOINT: 'http://s3.test', S3_REGION: 'r', S3_BUCKET: 'b', S3_ACCESS_KEY_ID: 'k' })).toThrow(/^S3_SECRET_ACCESS_KEY is not set/);
    expect(() => loadConfig({ S3_FORCE_PATH_STYLE: 'true' })).toThrow(ConfigError);
    // An empty variable is unset.
    expect(loadConfig({ S3_BUCKET: '', S3_FORCE_PATH_STYLE: ' ' }).storage.s3).toBeUndefined();
    expect(() => loadConfig({ S3_MULTIPART_THRESHOLD_BYTES: String(1024 * 1024) })).toThrow(/S3_MULTIPART_THRESHOLD_BYTES/);
    expect(() => loadConfig({ IMAGE_URL_TTL_S: String(8 * 86_400) })).toThrow(/IMAGE_URL_TTL_S/);
  });

  it('refuses a short FILES_URL_SECRET without printing it', () => {
    let message = '';
    try {
      loadConfig({ FILES_URL_SECRET: 'short-secret' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/FILES_URL_SECRET="\*\*\*": must be at least 32 characters/);
    expect(message).not.toMatch(/short-secret/);
    expect(loadConfig({ FILES_URL_SECRET: 'x'.repeat(32) }).storage.filesUrlSecret).toBe('x'.repeat(32));
  });

  it('returns a frozen object', () => {
    const c = loadConfig({});
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.worker)).toBe(true);
    expect(() => {
      (c.worker as { concurrency: number }).concurrency = 9;
    }).toThrow(TypeError);
  });
});

describe('neededSettings: what each production entry cannot run without', () => {
  const names = (entry: ProductionEntry, env: Env) => neededSettings(entry, loadConfig(env)).map((n) => `${n.variable}${n.missing ? ' (missing)' : ''}`);

  it('names the database, Redis and the storage for the API; the SD server and, in production, SMTP for a worker by its queues', () => {
    expect(names('api', {})).toEqual(['DATABASE_URL (missing)', 'REDIS_URL', 'FILES_URL_SECRET (missing)']);
    expect(names('api', { DATABASE_URL: 'postgres://db/x', FILES_URL_SECRET: 'x'.repeat(32) })).toEqual(['DATABASE_URL', 'REDIS_URL', 'FILES_URL_SECRET']);
    const s3 = { S3_ENDPOINT: 'http://s3.test', S3_REGION: 'r', S3_BUCKET: 'b', S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 's' };
    expect(names('api', { DATABASE_URL: 'postgres://db/x', ...s3 })).toEqual(['DATABASE_URL', 'REDIS_URL', 'S3_ENDPOINT', 'S3_REGION', 'S3_BUCKET', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY']);
    expect(names('worker', {})).toEqual(['DATABASE_URL (missing)', 'REDIS_URL', 'APP_SD_API_URL (missing)']);
    expect(names('worker', { NODE_ENV: 'production' })).toContain('SMTP_URL (missing)');
    expect(names('worker', { NODE_ENV: 'production', WORKER_QUEUES: 'normal_priority,webhooks' })).toEqual(['DATABASE_URL (missing)', 'REDIS_URL']);
  });

  it("asks a migration for DATABASE_URL in production only (elsewhere it is dev's PGlite)", () => {
    expect(names('migrate', {})).toEqual([]);
    expect(names('migrate', { NODE_ENV: 'production' })).toEqual(['DATABASE_URL (missing)']);
    expect(names('migrate', { NODE_ENV: 'production', APP_DATABASE_URL: 'postgres://db/x' })).toEqual(['DATABASE_URL']);
  });

  it('refuses to start naming every missing one, and hands back the checked database URL', () => {
    expect(() => assertNeededSettings('worker', loadConfig({ NODE_ENV: 'production' }))).toThrow(
      /^DATABASE_URL is not set: .*\nAPP_SD_API_URL is not set: .*\nSMTP_URL is not set: /,
    );
    expect(assertNeededSettings('api', loadConfig({ DATABASE_URL: 'postgres://db/x', FILES_URL_SECRET: 'x'.repeat(32) }))).toEqual({ databaseUrl: 'postgres://db/x' });
  });
});
