/**
 * The one place that reads the environment. `loadConfig()` applies defaults, validates every value,
 * and returns a frozen, typed object; a bad or missing value fails fast with the variable's name.
 * Nothing here runs at import: entry points call `loadConfig()` once and pass the result down.
 *
 * Names kept from the old Celery service: REDIS_URL, APP_SD_API_URL, DATABASE_URL (over
 * APP_DATABASE_URL), CELERY_WORKER_CONCURRENCY (an alias of WORKER_CONCURRENCY).
 */
import os from 'node:os';
import { z } from 'zod';
import { JOB_QUEUES } from './jobs/registry';
import { LOG_FORMATS } from './logger';
import { DEFAULT_STEP_MS } from './sd/simulator/defaults';

export const QUEUE_NAMES = ['high_priority', 'normal_priority', 'low_priority', 'webhooks'] as const;
export type QueueName = (typeof QUEUE_NAMES)[number];

/** HMAC keys shorter than this are refused: a guessable key forges every file URL. */
const FILES_URL_SECRET_MIN_LENGTH = 32;
/** S3 refuses multipart parts below 5 MiB (all but the last). */
const S3_MIN_PART_BYTES = 5 * 1024 * 1024;
/** What S3 storage needs; setting some of them but not all is an error, none means the local folder. */
const S3_REQUIRED = ['S3_ENDPOINT', 'S3_REGION', 'S3_BUCKET', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY'] as const;

export interface SentinelAddress {
  host: string;
  port: number;
}

/** `host:port` (or `[v6]:port`) of a sentinel; null for anything else (a blank entry too). */
function sentinelAddress(raw: string): SentinelAddress | null {
  const m = /^\s*(?:\[([0-9a-fA-F:.]+)\]|([^:\s\[\]]+)):(\d{1,5})\s*$/.exec(raw);
  if (!m) return null;
  const port = Number(m[3]);
  return port >= 1 && port <= 65535 ? { host: (m[1] ?? m[2])!, port } : null;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** An empty variable (`PORT=`) means unset, not 0: coercion would turn '' into 0 silently. */
const blankToUndefined = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);
const int = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.preprocess(blankToUndefined, z.coerce.number().int().min(min).max(max).default(def));
const num = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.preprocess(blankToUndefined, z.coerce.number().min(min).max(max).default(def));
const optionalInt = (min: number, max: number) =>
  z.preprocess(blankToUndefined, z.coerce.number().int().min(min).max(max).optional());
const bool = (def: boolean) =>
  z.preprocess(
    blankToUndefined,
    z
      .enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'must be true or false' })
      .default(def ? 'true' : 'false')
      .transform((v) => v === 'true' || v === '1' || v === 'yes'),
  );
const optionalString = z
  .string()
  .trim()
  .transform((v) => (v === '' ? undefined : v))
  .optional();
const url = (protocols: string[]) =>
  z
    .string()
    .trim()
    .refine((v) => {
      try {
        return protocols.includes(new URL(v).protocol);
      } catch {
        return false;
      }
    }, `must be a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`);

/** An origin as a browser sends it (`https://app.example.com`, `http://localhost:5173`), or null. */
function corsOrigin(raw: string): string | null {
  const value = raw.trim().replace(/\/+$/, '');
  try {
    const u = new URL(value);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === value ? u.origin : null;
  } catch {
    return null;
  }
}

/** Every environment variable the service reads, with its default. The README's table mirrors this. */
const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** `json`: one JSON object a line, for log collectors; `pretty`: coloured lines for a person (`npm run dev` sets it unless given). */
  LOG_FORMAT: z.preprocess(blankToUndefined, z.enum(LOG_FORMATS).default('json')),

  HOST: z.string().trim().min(1).default('0.0.0.0'),
  /** The largest request body the API reads for GraphQL; a larger one is refused unread (413). */
  MAX_BODY_BYTES: int(256 * 1024, 1024, 64 * 1024 * 1024),
  /** GraphiQL and introspection at /graphql; unset: on, except with NODE_ENV=production. */
  GRAPHIQL: z.preprocess(blankToUndefined, z.enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'must be true or false' }).optional()),
  /** Operations in one request as a JSON array; 0 refuses batches. */
  GRAPHQL_BATCHING: int(0, 0, 100),
  /** Selection-set nesting an operation may have (introspection's own nesting is not counted). */
  GRAPHQL_MAX_DEPTH: int(10, 1, 1000),
  /** graphql-armor's cost of an operation: 2 per object and 1 per scalar field, times 1.5 per level of depth. */
  GRAPHQL_MAX_COST: int(5000, 1, 100_000_000),
  /** Aliased fields in one operation. */
  GRAPHQL_MAX_ALIASES: int(15, 0, 100_000),
  /** Directives in one operation. */
  GRAPHQL_MAX_DIRECTIVES: int(50, 0, 100_000),
  /** Lexical tokens in one document: the parser stops at this many, so no document can nest deep enough to overflow the stack. */
  GRAPHQL_MAX_TOKENS: int(2000, 10, 1_000_000),
  /** Errors listed in one answer; past this, one more error says how many were left out. */
  GRAPHQL_MAX_ERRORS: int(20, 1, 10_000),
  PORT: int(4000, 0, 65535),
  /** Base of the URLs handed to clients (image files); defaults to http://localhost:PORT. */
  PUBLIC_URL: url(['http:', 'https:']).optional(),
  /**
   * Origins (scheme://host[:port], comma-separated) whose pages may call /graphql and the REST
   * endpoints from a browser (CORS); unset: none, same-origin pages only.
   */
  CORS_ORIGINS: optionalString.pipe(
    z
      .string()
      .refine((v) => v.split(',').every((o) => o.trim() === '' || corsOrigin(o) !== null), 'must be origins like https://app.example.com, comma-separated (no path, no *)')
      .optional(),
  ),

  REDIS_URL: url(['redis:', 'rediss:']).default('redis://localhost:6379/0'),
  /** Prefix of every Redis key and channel this service owns (queues, progress, caches). */
  REDIS_PREFIX: z.string().trim().min(1).max(64).default('sdjobs'),
  /** How long adding a job may wait for Redis before the request fails (and its credits go back). */
  ENQUEUE_TIMEOUT_MS: int(5000, 100, 600_000),
  /**
   * Redis Sentinel: the sentinels as host:port, comma-separated; set, every connection asks them for
   * the primary named REDIS_SENTINEL_NAME (REDIS_URL then gives only the password, database and TLS).
   */
  REDIS_SENTINELS: optionalString.pipe(
    z
      .string()
      .refine((v) => v.split(',').every((s) => s.trim() === '' || sentinelAddress(s) !== null), 'must be host:port pairs, comma-separated (e.g. sentinel-1:26379,sentinel-2:26379)')
      .optional(),
  ),
  /** The primary's name in the sentinels' configuration (`sentinel monitor <name> ...`). */
  REDIS_SENTINEL_NAME: z.string().trim().min(1).max(200).default('mymaster'),
  /**
   * How long an API request waits for Redis: a command sent while Redis is unreachable fails after
   * this long (or after one reconnect attempt) and the request answers SERVICE_UNAVAILABLE. Workers
   * wait for Redis to come back instead.
   */
  REDIS_COMMAND_TIMEOUT_MS: int(1500, 50, 60_000),

  DATABASE_URL: optionalString.pipe(url(['postgres:', 'postgresql:']).optional()),
  APP_DATABASE_URL: optionalString.pipe(url(['postgres:', 'postgresql:']).optional()),
  DATABASE_POOL_MAX: int(10, 1, 1000),
  /**
   * How long a query may wait for a pooled connection (connecting a new one included) before it
   * fails: with Postgres unreachable, requests answer SERVICE_UNAVAILABLE within this instead of hanging.
   */
  DATABASE_ACQUIRE_TIMEOUT_MS: int(2000, 100, 600_000),

  /**
   * The SD server, or a fleet of them comma-separated, each with optional user:pass@ (HTTP basic,
   * over APP_SD_API_AUTH for that server). A worker gives each listed server one job at a time.
   */
  APP_SD_API_URL: optionalString.pipe(
    z
      .string()
      .refine((v) => {
        try {
          return sdServerList(v, undefined).length > 0;
        } catch {
          return false;
        }
      }, 'must be one http:// or https:// URL, or several comma-separated, each listed once')
      .optional(),
  ),
  /** HTTP basic auth for a server started with --api-auth, as user:pass (a URL's own user:pass@ wins). */
  APP_SD_API_AUTH: optionalString.pipe(
    z.string().regex(/^[^:]+:.+$/, 'must look like user:password').optional(),
  ),
  SD_PROGRESS_INTERVAL_MS: int(500, 10, 60_000),
  SD_PREVIEW_INTERVAL_MS: int(1500, 0, 600_000),
  SD_PREVIEW_SIZE: int(128, 16, 1024),
  /** `npm run dev` without APP_SD_API_URL: the built-in simulator's time per sampling step. */
  SD_SIMULATOR_STEP_MS: int(DEFAULT_STEP_MS, 0, 60_000),
  /** The simulator (dev's, or `npm run sd:simulator`) behaves like SD.Next: /internal/progress never knows a task id. */
  SD_SIMULATOR_IGNORE_TASK_ID: bool(false),
  /**
   * A worker holds a lease in Redis on the SD server it sends a job to (SET NX PX), renewed every
   * third of this while the job runs: workers sharing one list never send two jobs to one server.
   * A worker that cannot renew for this long stops its job there (its lease is gone).
   */
  SD_LEASE_TTL_MS: int(15_000, 300, 600_000),
  /** How often a worker checks its SD servers (a server that stopped answering is back in use once a check passes). */
  SD_SERVER_CHECK_INTERVAL_MS: int(5000, 20, 600_000),
  /**
   * How many times one attempt of a generation may move to another SD server after its server
   * stopped answering; those moves do not use up the job's retries. Past it the error counts.
   */
  SD_SERVER_SWITCHES_MAX: int(3, 0, 100),
  /** How often a job waiting for a free SD server (all are leased or down) looks again. */
  SD_SERVER_WAIT_POLL_MS: int(200, 10, 60_000),

  /**
   * No defaults here: WORKER_CONCURRENCY ?? CELERY_WORKER_CONCURRENCY ?? the number of SD servers
   * listed (2 with one server, so its post-processing overlaps the next sampling) is decided below.
   */
  WORKER_CONCURRENCY: optionalInt(1, 256),
  CELERY_WORKER_CONCURRENCY: optionalInt(1, 256),
  /**
   * Slots of the other queues: each queue has its own, so a backlog on one never delays another
   * (WORKER_CONCURRENCY stays the generation slots, bound to the SD servers).
   */
  NORMAL_PRIORITY_CONCURRENCY: int(4, 1, 256),
  LOW_PRIORITY_CONCURRENCY: int(4, 1, 256),
  /** Webhook deliveries at once: a delivery mostly waits on its receiver, so more slots than the others. */
  WEBHOOKS_CONCURRENCY: int(8, 1, 256),
  WORKER_QUEUES: z.string().default(QUEUE_NAMES.join(',')),
  TASK_TIME_LIMIT_S: int(600, 1, 86_400),
  TASK_SOFT_TIME_LIMIT_S: int(540, 1, 86_400),
  /**
   * How long past the hard limit a processor that ignores its abort is waited for before the job is
   * given up (ended FAILED with TIME_LIMIT_EXCEEDED, credits back; its slot stays taken until the
   * processor returns). Below 30: the queue's safety net fails the job 30 s past the hard limit
   * without recording anything.
   */
  TASK_ABORT_GRACE_S: num(10, 0, 25),
  TASK_MAX_RETRIES: int(3, 0, 100),
  TASK_RETRY_DELAY_S: num(60, 0, 86_400),
  RESULT_EXPIRES_S: int(3600, 1, 30 * 86_400),
  /**
   * Celery's worker_max_tasks_per_child for the post-processing threads: each thread is replaced
   * after this many tasks of its own (the one it runs last finishes first).
   */
  WORKER_MAX_TASKS_PER_CHILD: int(50, 1, 1_000_000),
  STALL_INTERVAL_MS: int(5000, 500, 600_000),
  /**
   * How often a worker that generates looks for live generations whose job is gone (an API died
   * before queuing it, or Redis lost it in a restart or a failover) and queues them again.
   */
  STRANDED_SWEEP_INTERVAL_MS: int(60_000, 100, 86_400_000),
  /** Live generations untouched for less than this are left to the sweep's next round: an API or worker may be at work on them. */
  STRANDED_MIN_AGE_S: int(60, 1, 86_400),
  /** A job whose worker died this many times is given up (Bee-Queue re-queues stalled jobs without limit, #106). */
  TASK_MAX_STALLS: int(2, 0, 100),
  /** On SIGTERM, how long running jobs may take to finish before they are left to be re-delivered. */
  WORKER_SHUTDOWN_TIMEOUT_MS: int(30_000, 0, 3_600_000),
  POSTPROCESS_THREADS: int(Math.max(1, Math.min(4, os.availableParallelism())), 1, 64),
  /**
   * The JavaScript heap of one post-processing thread (Node's resourceLimits.maxOldGenerationSizeMb):
   * a thread past it is stopped and replaced, its task retried once on a fresh thread, instead of
   * running the whole worker out of memory. (libvips' pixel buffers are native memory, outside it.)
   */
  POSTPROCESS_THREAD_HEAP_MB: int(256, 32, 16_384),
  /**
   * Linux: the post-processing threads and libvips' threads run at this nice value, below the worker's
   * event loop, so that progress, leases and stall guarding get a core at once (0: unchanged).
   */
  POSTPROCESS_NICE: int(10, 0, 19),
  WEBP_QUALITY: int(90, 1, 100),
  THUMBNAIL_SIZE: int(256, 16, 2048),
  /** Job outcomes are counted in Redis (the operators' figures) in batches, at most this long after a job ends. */
  JOB_STATE_FLUSH_MS: int(20, 1, 60_000),
  /** How often a worker renews its announcement in Redis (and asks its SD server). */
  WORKER_HEARTBEAT_INTERVAL_MS: int(5000, 100, 600_000),
  /** A worker's announcement expires this long after its last beat (it died); more than the interval. */
  WORKER_HEARTBEAT_TTL_MS: int(15_000, 200, 3_600_000),
  /**
   * Jobs that ended for good kept in Redis per queue (the newest; Bee-Queue's `succeeded` and
   * `failed` sets), for the queue dashboard. 0: removed at once; Postgres keeps the history either way.
   */
  QUEUE_KEEP_SUCCEEDED: int(100, 0, 1_000_000),
  QUEUE_KEEP_FAILED: int(1000, 0, 1_000_000),

  /** How often an open progress stream re-reads the snapshot, so a lost pub/sub message never strands it. */
  PROGRESS_RESYNC_MS: int(5000, 100, 600_000),

  PROMPT_MAX_LENGTH: int(2000, 1, 100_000),
  NEGATIVE_PROMPT_MAX_LENGTH: int(2000, 0, 100_000),
  CHARACTER_NAME_MAX_LENGTH: int(100, 1, 10_000),
  IMAGE_MIN_SIZE: int(64, 8, 16_384),
  IMAGE_MAX_SIZE: int(2048, 8, 16_384),
  /** Pixel budget of one request: width × height × batchSize. */
  IMAGE_MAX_PIXELS: int(4 * 1024 * 1024, 64, 1 << 30),
  STEPS_MAX: int(150, 1, 1000),
  CFG_SCALE_MAX: num(30, 1, 100),
  BATCH_SIZE_MAX: int(4, 1, 64),
  /** The most items one page of a list (chatHistory, generations) may ask for with `first`. */
  PAGE_SIZE_MAX: int(100, 1, 10_000),
  /** The largest startDeadlineSeconds a generateImage may ask for (24 h). */
  START_DEADLINE_MAX_S: int(86_400, 1, 30 * 86_400),
  /** How long an idempotencyKey (Idempotency-Key on REST) keeps answering with its generation (24 h). */
  IDEMPOTENCY_TTL_S: int(86_400, 1, 365 * 86_400),
  /** How often each API process ends QUEUED generations past their start deadline; 0: this process does not. */
  START_DEADLINE_SWEEP_MS: int(1000, 0, 3_600_000),

  STORAGE_DIR: z.string().trim().min(1).default('.data/files'),
  /**
   * Signs the local folder's file URLs (HMAC-SHA256 over key and expiry). Required by `npm run api`
   * when no S3 storage is configured, the same on every API process; dev keeps its own in .data/.
   */
  FILES_URL_SECRET: optionalString.pipe(z.string().min(FILES_URL_SECRET_MIN_LENGTH, `must be at least ${FILES_URL_SECRET_MIN_LENGTH} characters (e.g. openssl rand -hex 32)`).optional()),
  /** How long an image URL handed to a client works, from the answer that carries it (S3 presigning allows up to 7 days). */
  IMAGE_URL_TTL_S: int(3600, 1, 604_800),

  /** S3-compatible object storage: all of endpoint, region, bucket and keys, or none (the local folder). */
  S3_ENDPOINT: optionalString.pipe(url(['http:', 'https:']).optional()),
  S3_REGION: optionalString,
  S3_BUCKET: optionalString,
  S3_ACCESS_KEY_ID: optionalString,
  S3_SECRET_ACCESS_KEY: optionalString,
  /** `http://endpoint/bucket/key` instead of `http://bucket.endpoint/key` (MinIO and most self-hosted stores). */
  S3_FORCE_PATH_STYLE: z.preprocess(blankToUndefined, z.enum(['true', 'false', '1', '0']).default('false')).transform((v) => v === 'true' || v === '1'),
  /** Permanent image URLs under this base (a CDN or a public bucket) instead of presigned, expiring ones. */
  S3_PUBLIC_BASE_URL: optionalString.pipe(url(['http:', 'https:']).optional()),
  /** Objects larger than this go up in parts of this size (S3's smallest part is 5 MiB). */
  S3_MULTIPART_THRESHOLD_BYTES: int(8 * 1024 * 1024, S3_MIN_PART_BYTES, 5 * 1024 * 1024 * 1024),

  /**
   * How long an API process trusts a token it has checked, without asking Postgres again; 0 checks
   * every request. A revoked token keeps working for up to this long.
   */
  AUTH_CACHE_TTL_MS: int(30_000, 0, 86_400_000),
  /** How long an unknown or revoked token is remembered as such (at most AUTH_CACHE_TTL_MS). */
  AUTH_CACHE_NEGATIVE_TTL_MS: int(1_000, 0, 86_400_000),
  /** Tokens cached per API process; the least recently used is dropped first. */
  AUTH_CACHE_MAX_ENTRIES: int(10_000, 1, 10_000_000),

  /** How long each readiness check (/readyz) may take before its dependency counts as down. */
  HEALTH_TIMEOUT_MS: int(2000, 50, 60_000),
  /** A worker's HTTP port for /healthz and /readyz; 0: none (several workers on one host need their own). */
  WORKER_METRICS_PORT: int(0, 0, 65535),
  /** The queue dashboard (bull-arena) at /admin/queues of the API, for admins' tokens only. */
  ADMIN_DASHBOARD: bool(true),

  /** Photo credits a new account starts with (a ledger grant). */
  SIGNUP_PHOTO_CREDITS: int(10, 0, 1_000_000),
  /** Generating needs a verified address; `npm run dev` turns this off. */
  EMAIL_VERIFICATION_REQUIRED: bool(true),
  /** How long a link sent by mail (verify the address, reset the password) works. */
  EMAIL_TOKEN_TTL_S: int(86_400, 60, 30 * 86_400),
  /** How long a session from signIn lasts. */
  SESSION_TTL_S: int(30 * 86_400, 60, 366 * 86_400),
  PASSWORD_MIN_LENGTH: int(8, 1, 256),
  /** smtp:// or smtps:// with credentials; unset: mails are written to MAIL_OUTBOX_DIR as .eml files. */
  SMTP_URL: url(['smtp:', 'smtps:']).optional(),
  /** Each SMTP try gives up after this long without progress (connect, greeting, any reply). */
  SMTP_TIMEOUT_MS: int(30_000, 100, 600_000),
  MAIL_FROM: z.string().trim().min(3).default('Stable Diffusion jobs <no-reply@localhost>'),
  MAIL_OUTBOX_DIR: z.string().trim().min(1).default('.data/outbox'),

  /**
   * Tries of one webhook delivery. With WEBHOOK_RETRY_DELAY_MS they span about a day: the waits
   * double from 40 s, so the 12th try comes about 23 hours after the first.
   */
  WEBHOOK_MAX_ATTEMPTS: int(12, 1, 100),
  /** The wait before a webhook's second try; each later wait is twice the one before. */
  WEBHOOK_RETRY_DELAY_MS: int(40_000, 1, 86_400_000),
  /** One try gives up after this long without the whole answer (connection included). */
  WEBHOOK_TIMEOUT_MS: int(10_000, 10, 600_000),
  /** Lets webhooks go to loopback, private and link-local addresses: tests and local development only. */
  WEBHOOK_ALLOW_PRIVATE: bool(false),

  /**
   * Proxies in front of the API that append to X-Forwarded-For. 0: the client is the socket's peer
   * and X-Forwarded-For is ignored; N: the address N hops from the right of the chain (the header's
   * entries, then the peer) is the client's. Only set it when every request passes those proxies.
   */
  TRUST_PROXY: int(0, 0, 10),
  /**
   * Abuse limits, held in Redis so they hold across API processes; 0 turns a limit off. Windows are
   * fixed in code: generations per minute, sign-in per address per 15 min, the rest per hour.
   */
  RATE_LIMIT_GENERATIONS_PER_MINUTE: int(30, 0, 1_000_000_000),
  /** Generations of one user not finished yet (any status before SUCCEEDED, FAILED, CANCELLED). */
  MAX_UNFINISHED_GENERATIONS_PER_USER: int(10, 0, 1_000_000),
  RATE_LIMIT_SIGNIN_PER_ADDRESS: int(10, 0, 1_000_000_000),
  RATE_LIMIT_SIGNIN_PER_IP: int(100, 0, 1_000_000_000),
  /** Each sign-up sends a mail to the address: this bounds the mails one address gets from them. */
  RATE_LIMIT_SIGNUP_PER_ADDRESS: int(3, 0, 1_000_000_000),
  RATE_LIMIT_SIGNUP_PER_IP: int(20, 0, 1_000_000_000),
  /** Each reset request sends a mail (when the address has an account). */
  RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS: int(3, 0, 1_000_000_000),
  RATE_LIMIT_PASSWORD_RESET_PER_IP: int(20, 0, 1_000_000_000),
  /** Open generationProgress streams of one user, counted over every API process. */
  MAX_SUBSCRIPTIONS_PER_USER: int(20, 0, 1_000_000),
  /** Open generationProgress streams of one API process. */
  MAX_SUBSCRIPTIONS_PER_PROCESS: int(10_000, 0, 10_000_000),
  /** An open stream renews its slot in Redis this often; a slot not renewed for 3 times this long (its process died) is freed. */
  SUBSCRIPTION_HEARTBEAT_MS: int(10_000, 50, 600_000),
  /** How long a limit's Redis call may take; past it sign-in, sign-up and reset are refused, generations and streams allowed. */
  RATE_LIMIT_REDIS_TIMEOUT_MS: int(500, 10, 60_000),
});

export type Env = Record<string, string | undefined>;

/** Every variable `loadConfig` reads (the README's configuration table lists each one). */
export const ENV_VARIABLES = Object.keys(envSchema.shape) as ReadonlyArray<keyof typeof envSchema.shape>;

/** Each variable's default as the schema applies it to an empty environment (undefined: none). */
export function envDefaults(): Record<string, unknown> {
  return envSchema.parse({});
}

/**
 * S3 settings when any S3_* variable is set (then every required one must be), else undefined: the
 * local folder. A half-configured store fails here rather than falling back to the local folder.
 */
function s3Settings(e: z.infer<typeof envSchema>, env: Env) {
  const set = ENV_VARIABLES.filter((n) => n.startsWith('S3_') && blankToUndefined(env[n]) !== undefined);
  if (set.length === 0) return undefined;
  const missing = S3_REQUIRED.filter((n) => e[n] === undefined);
  if (missing.length > 0) {
    throw new ConfigError(
      `${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not set, but ${set.join(', ')} ${set.length === 1 ? 'is' : 'are'}: ` +
        `S3 storage needs all of ${S3_REQUIRED.join(', ')} (or none of the S3_* settings, for the local folder).`,
    );
  }
  return {
    endpoint: e.S3_ENDPOINT!.replace(/\/+$/, ''),
    region: e.S3_REGION!,
    bucket: e.S3_BUCKET!,
    accessKeyId: e.S3_ACCESS_KEY_ID!,
    secretAccessKey: e.S3_SECRET_ACCESS_KEY!,
    forcePathStyle: e.S3_FORCE_PATH_STYLE,
    publicBaseUrl: e.S3_PUBLIC_BASE_URL?.replace(/\/+$/, ''),
    multipartThresholdBytes: e.S3_MULTIPART_THRESHOLD_BYTES,
  };
}

export interface SdServerSetting {
  /** Without credentials, no trailing slash: the server's name in leases and in the operators' view. */
  url: string;
  auth: { username: string; password: string } | undefined;
}

/**
 * Parses APP_SD_API_URL's list: `http://a:7860,http://user:pass@b:7860`. Credentials in a URL
 * are that server's; the others get `defaultAuth` (APP_SD_API_AUTH). Throws a RangeError naming the
 * bad entry for an entry that is not an http(s) URL or a server listed twice.
 */
export function sdServerList(list: string, defaultAuth: SdServerSetting['auth']): SdServerSetting[] {
  const out: SdServerSetting[] = [];
  for (const raw of list.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    let u: URL;
    try {
      u = new URL(entry);
    } catch {
      throw new RangeError(`"${entry.replace(/\/\/[^@/]*@/, '//…@')}" is not a URL`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new RangeError(`${u.protocol}// is not http:// or https://`);
    const auth = u.username ? { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) } : defaultAuth;
    u.username = '';
    u.password = '';
    const url = u.toString().replace(/\/+$/, '');
    if (out.some((s) => s.url === url)) throw new RangeError(`${url} is listed twice`);
    out.push({ url, auth });
  }
  return out;
}

function buildConfig(e: z.infer<typeof envSchema>, env: Env) {
  const [sdUser, ...sdPass] = e.APP_SD_API_AUTH?.split(':') ?? [];
  const sdAuth = sdUser ? { username: sdUser, password: sdPass.join(':') } : undefined;
  const sdServers = e.APP_SD_API_URL ? sdServerList(e.APP_SD_API_URL, sdAuth) : [];
  const concurrency = e.WORKER_CONCURRENCY ?? e.CELERY_WORKER_CONCURRENCY ?? (sdServers.length > 1 ? sdServers.length : 2);
  const queues = e.WORKER_QUEUES.split(',').map((q) => q.trim()).filter(Boolean);
  for (const q of queues) {
    if (!(QUEUE_NAMES as readonly string[]).includes(q)) {
      throw new ConfigError(`WORKER_QUEUES: unknown queue "${q}"; known queues: ${QUEUE_NAMES.join(', ')}`);
    }
  }
  if (e.TASK_SOFT_TIME_LIMIT_S > e.TASK_TIME_LIMIT_S) {
    throw new ConfigError('TASK_SOFT_TIME_LIMIT_S must not exceed TASK_TIME_LIMIT_S');
  }
  if (e.WORKER_HEARTBEAT_TTL_MS <= e.WORKER_HEARTBEAT_INTERVAL_MS) {
    throw new ConfigError('WORKER_HEARTBEAT_TTL_MS must be longer than WORKER_HEARTBEAT_INTERVAL_MS, or a live worker would drop out between two beats');
  }
  if (e.IMAGE_MIN_SIZE > e.IMAGE_MAX_SIZE) {
    throw new ConfigError('IMAGE_MIN_SIZE must not exceed IMAGE_MAX_SIZE');
  }
  return {
    env: e.NODE_ENV,
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    http: {
      host: e.HOST,
      port: e.PORT,
      trustProxy: e.TRUST_PROXY,
      publicUrl: (e.PUBLIC_URL ?? `http://localhost:${e.PORT}`).replace(/\/+$/, ''),
      /** Origins allowed to call the API from a browser (CORS); empty: same-origin only. */
      corsOrigins: (e.CORS_ORIGINS ?? '').split(',').map(corsOrigin).filter((o): o is string => o !== null),
    },
    graphql: {
      graphiql: e.GRAPHIQL === undefined ? e.NODE_ENV !== 'production' : ['true', '1', 'yes'].includes(e.GRAPHIQL),
      batching: e.GRAPHQL_BATCHING,
      maxBodyBytes: e.MAX_BODY_BYTES,
      maxDepth: e.GRAPHQL_MAX_DEPTH,
      maxCost: e.GRAPHQL_MAX_COST,
      maxAliases: e.GRAPHQL_MAX_ALIASES,
      maxDirectives: e.GRAPHQL_MAX_DIRECTIVES,
      maxTokens: e.GRAPHQL_MAX_TOKENS,
      maxErrors: e.GRAPHQL_MAX_ERRORS,
    },
    redis: {
      url: e.REDIS_URL,
      prefix: e.REDIS_PREFIX,
      enqueueTimeoutMs: e.ENQUEUE_TIMEOUT_MS,
      commandTimeoutMs: e.REDIS_COMMAND_TIMEOUT_MS,
      sentinels: (e.REDIS_SENTINELS ?? '').split(',').map(sentinelAddress).filter((a): a is SentinelAddress => a !== null),
      sentinelName: e.REDIS_SENTINEL_NAME,
    },
    database: { url: e.DATABASE_URL ?? e.APP_DATABASE_URL, poolMax: e.DATABASE_POOL_MAX, acquireTimeoutMs: e.DATABASE_ACQUIRE_TIMEOUT_MS },
    sd: {
      /** The list as given, each entry without its trailing slash (what the worker's `sdUrl` takes). */
      url: e.APP_SD_API_URL ? e.APP_SD_API_URL.split(',').map((u) => u.trim().replace(/\/+$/, '')).join(',') : undefined,
      auth: sdAuth,
      /** Each listed server, its auth from its URL or else APP_SD_API_AUTH. */
      servers: sdServers,
      leaseTtlMs: e.SD_LEASE_TTL_MS,
      checkIntervalMs: e.SD_SERVER_CHECK_INTERVAL_MS,
      switchesMax: e.SD_SERVER_SWITCHES_MAX,
      waitPollMs: e.SD_SERVER_WAIT_POLL_MS,
      progressIntervalMs: e.SD_PROGRESS_INTERVAL_MS,
      previewIntervalMs: e.SD_PREVIEW_INTERVAL_MS,
      previewSize: e.SD_PREVIEW_SIZE,
      simulatorStepMs: e.SD_SIMULATOR_STEP_MS,
      simulatorIgnoresTaskId: e.SD_SIMULATOR_IGNORE_TASK_ID,
    },
    worker: {
      /** The generation (high_priority) slots: --concurrency. */
      concurrency,
      /** WORKER_CONCURRENCY (or its old name) was given: the number of SD servers does not decide the slots. */
      concurrencySet: (e.WORKER_CONCURRENCY ?? e.CELERY_WORKER_CONCURRENCY) !== undefined,
      /** Jobs at once per queue a worker consumes. */
      slots: {
        high_priority: concurrency,
        normal_priority: e.NORMAL_PRIORITY_CONCURRENCY,
        low_priority: e.LOW_PRIORITY_CONCURRENCY,
        webhooks: e.WEBHOOKS_CONCURRENCY,
      } satisfies Record<QueueName, number>,
      queues: queues as QueueName[],
      timeLimitMs: e.TASK_TIME_LIMIT_S * 1000,
      softTimeLimitMs: e.TASK_SOFT_TIME_LIMIT_S * 1000,
      abortGraceMs: Math.round(e.TASK_ABORT_GRACE_S * 1000),
      maxRetries: e.TASK_MAX_RETRIES,
      retryDelayMs: Math.round(e.TASK_RETRY_DELAY_S * 1000),
      maxTasksPerChild: e.WORKER_MAX_TASKS_PER_CHILD,
      stallIntervalMs: e.STALL_INTERVAL_MS,
      maxStalls: e.TASK_MAX_STALLS,
      strandedSweep: { intervalMs: e.STRANDED_SWEEP_INTERVAL_MS, minAgeS: e.STRANDED_MIN_AGE_S },
      shutdownTimeoutMs: e.WORKER_SHUTDOWN_TIMEOUT_MS,
      postprocessThreads: e.POSTPROCESS_THREADS,
      postprocessThreadHeapMb: e.POSTPROCESS_THREAD_HEAP_MB,
      postprocessNice: e.POSTPROCESS_NICE,
      webpQuality: e.WEBP_QUALITY,
      thumbnailSize: e.THUMBNAIL_SIZE,
      jobStateFlushMs: e.JOB_STATE_FLUSH_MS,
      heartbeat: { intervalMs: e.WORKER_HEARTBEAT_INTERVAL_MS, ttlMs: e.WORKER_HEARTBEAT_TTL_MS },
      keep: { succeeded: e.QUEUE_KEEP_SUCCEEDED, failed: e.QUEUE_KEEP_FAILED },
    },
    progress: { expiresS: e.RESULT_EXPIRES_S, resyncMs: e.PROGRESS_RESYNC_MS },
    limits: {
      promptMaxLength: e.PROMPT_MAX_LENGTH,
      negativePromptMaxLength: e.NEGATIVE_PROMPT_MAX_LENGTH,
      characterNameMaxLength: e.CHARACTER_NAME_MAX_LENGTH,
      imageMinSize: e.IMAGE_MIN_SIZE,
      imageMaxSize: e.IMAGE_MAX_SIZE,
      imageMaxPixels: e.IMAGE_MAX_PIXELS,
      stepsMax: e.STEPS_MAX,
      cfgScaleMax: e.CFG_SCALE_MAX,
      batchSizeMax: e.BATCH_SIZE_MAX,
      pageSizeMax: e.PAGE_SIZE_MAX,
      startDeadlineMaxS: e.START_DEADLINE_MAX_S,
    },
    submit: { idempotencyTtlS: e.IDEMPOTENCY_TTL_S, startDeadlineSweepMs: e.START_DEADLINE_SWEEP_MS },
    storage: {
      dir: e.STORAGE_DIR,
      filesUrlSecret: e.FILES_URL_SECRET,
      urlTtlS: e.IMAGE_URL_TTL_S,
      s3: s3Settings(e, env),
    },
    health: { timeoutMs: e.HEALTH_TIMEOUT_MS, workerPort: e.WORKER_METRICS_PORT },
    dashboard: { enabled: e.ADMIN_DASHBOARD },
    accounts: {
      signupCredits: e.SIGNUP_PHOTO_CREDITS,
      emailVerificationRequired: e.EMAIL_VERIFICATION_REQUIRED,
      emailTokenTtlS: e.EMAIL_TOKEN_TTL_S,
      sessionTtlS: e.SESSION_TTL_S,
      passwordMinLength: e.PASSWORD_MIN_LENGTH,
    },
    webhooks: {
      maxAttempts: e.WEBHOOK_MAX_ATTEMPTS,
      retryDelayMs: e.WEBHOOK_RETRY_DELAY_MS,
      timeoutMs: e.WEBHOOK_TIMEOUT_MS,
      allowPrivate: e.WEBHOOK_ALLOW_PRIVATE,
    },
    mail: { smtpUrl: e.SMTP_URL, timeoutMs: e.SMTP_TIMEOUT_MS, from: e.MAIL_FROM, outboxDir: e.MAIL_OUTBOX_DIR },
    rateLimits: {
      generationsPerMinute: e.RATE_LIMIT_GENERATIONS_PER_MINUTE,
      unfinishedGenerationsPerUser: e.MAX_UNFINISHED_GENERATIONS_PER_USER,
      signInPerAddress: e.RATE_LIMIT_SIGNIN_PER_ADDRESS,
      signInPerIp: e.RATE_LIMIT_SIGNIN_PER_IP,
      signUpPerAddress: e.RATE_LIMIT_SIGNUP_PER_ADDRESS,
      signUpPerIp: e.RATE_LIMIT_SIGNUP_PER_IP,
      passwordResetPerAddress: e.RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS,
      passwordResetPerIp: e.RATE_LIMIT_PASSWORD_RESET_PER_IP,
      subscriptionsPerUser: e.MAX_SUBSCRIPTIONS_PER_USER,
      subscriptionsPerProcess: e.MAX_SUBSCRIPTIONS_PER_PROCESS,
      subscriptionHeartbeatMs: e.SUBSCRIPTION_HEARTBEAT_MS,
      redisTimeoutMs: e.RATE_LIMIT_REDIS_TIMEOUT_MS,
    },
    auth: {
      cacheTtlMs: e.AUTH_CACHE_TTL_MS,
      cacheNegativeTtlMs: e.AUTH_CACHE_NEGATIVE_TTL_MS,
      cacheMaxEntries: e.AUTH_CACHE_MAX_ENTRIES,
    },
  };
}

export type Config = ReturnType<typeof buildConfig>;

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** Error messages must not print credentials: URLs lose their user:password, *_AUTH values are hidden. */
function redact(name: string, value: string): string {
  if (/_AUTH$|PASSWORD|SECRET|TOKEN|_KEY$/.test(name)) return value ? '***' : '';
  // Every URL of a list (APP_SD_API_URL) loses its credentials, not only the first.
  return value.replace(/\/\/[^/@\s]*@/g, '//***@');
}

/** Reads and validates the environment. Throws ConfigError naming each bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const name = i.path.join('.');
      return `  ${name}=${JSON.stringify(redact(name, env[name] ?? ''))}: ${i.message}`;
    });
    throw new ConfigError(`Invalid configuration; set these environment variables:\n${lines.join('\n')}`);
  }
  return deepFreeze(buildConfig(parsed.data, env));
}

/** For `npm run api` / `npm run worker`: production entries need their real services named. */
export function requireSetting<T>(value: T | undefined, variable: string, why: string): T {
  if (value === undefined) throw new ConfigError(`${variable} is not set: ${why}`);
  return value;
}

/** The production entries: `npm run api`, `npm run worker`, `npm run migrate`. */
export const PRODUCTION_ENTRIES = ['api', 'worker', 'migrate'] as const;
export type ProductionEntry = (typeof PRODUCTION_ENTRIES)[number];

export interface NeededSetting {
  /** The variable to set. */
  variable: string;
  /** Another variable that serves as well (APP_DATABASE_URL for DATABASE_URL). */
  or?: string;
  why: string;
  /**
   * Unset, with no default to fall back on: the entry refuses to start. A setting whose default
   * names this machine (REDIS_URL's localhost) is never missing, but is listed all the same: an
   * entry in a container or on another host needs it set.
   */
  missing: boolean;
}

/**
 * What a production entry needs set, given the rest of its configuration (a worker needs the SD
 * server only when it consumes the generations' queue, SMTP only in production when it sends mail;
 * the API's file URLs need S3_* or FILES_URL_SECRET). The entries refuse to start while one is
 * missing (`assertNeededSettings`); the test of docker-compose.yml checks that every one reaches the
 * service that runs the entry.
 */
export function neededSettings(entry: ProductionEntry, config: Config): NeededSetting[] {
  const needs: NeededSetting[] = [];
  const generates = config.worker.queues.includes(JOB_QUEUES.generateImage);
  const mails = config.worker.queues.includes(JOB_QUEUES.sendEmail);
  // `npm run migrate` outside production migrates dev's embedded PGlite without one; in production
  // that would report success on a database nobody reads.
  if (entry !== 'migrate' || config.env === 'production') {
    const why =
      entry === 'migrate'
        ? "a production migration needs Postgres (or APP_DATABASE_URL); without NODE_ENV=production it migrates `npm run dev`'s embedded PGlite"
        : `the ${entry === 'api' ? 'API' : 'worker'} needs Postgres (or APP_DATABASE_URL); \`npm run dev\` runs without one`;
    needs.push({ variable: 'DATABASE_URL', or: 'APP_DATABASE_URL', why, missing: config.database.url === undefined });
  }
  if (entry === 'migrate') return needs;
  needs.push({ variable: 'REDIS_URL', why: `the ${entry === 'api' ? 'API' : 'worker'} needs Redis (its default is this machine's)`, missing: false });
  const s3 = config.storage.s3;
  if (s3) {
    for (const variable of S3_REQUIRED) needs.push({ variable, why: 'S3 storage needs all five S3_* settings', missing: false });
  }
  if (entry === 'api' && !s3) {
    needs.push({
      variable: 'FILES_URL_SECRET',
      why: "the API signs the URLs of the local folder's files with it (the same value on every API process, e.g. `openssl rand -hex 32`), or set S3_* to use object storage",
      missing: config.storage.filesUrlSecret === undefined,
    });
  }
  if (entry === 'worker' && generates) {
    needs.push({
      variable: 'APP_SD_API_URL',
      why: `a worker that consumes ${JOB_QUEUES.generateImage} needs a Stable Diffusion server started with --api (or run \`npm run dev\`, which starts a simulator)`,
      missing: config.sd.url === undefined,
    });
  }
  if (entry === 'worker' && mails && config.env === 'production') {
    // In production a mail written to a local folder is a mail lost: name the setting instead.
    needs.push({
      variable: 'SMTP_URL',
      why: `a production worker that consumes ${JOB_QUEUES.sendEmail} sends mail (smtp://user:pass@host:587); leave ${JOB_QUEUES.sendEmail} out of --queues for a worker without mail`,
      missing: config.mail.smtpUrl === undefined,
    });
  }
  return needs;
}

/**
 * Refuses to start an entry that misses a needed setting, naming every one (see `neededSettings`).
 * The API and the worker get their database URL back, checked.
 */
export function assertNeededSettings(entry: 'api' | 'worker', config: Config): { databaseUrl: string };
export function assertNeededSettings(entry: ProductionEntry, config: Config): { databaseUrl: string | undefined };
export function assertNeededSettings(entry: ProductionEntry, config: Config): { databaseUrl: string | undefined } {
  const missing = neededSettings(entry, config).filter((n) => n.missing);
  if (missing.length > 0) throw new ConfigError(missing.map((n) => `${n.variable} is not set: ${n.why}`).join('\n'));
  return { databaseUrl: config.database.url };
}

