/**
 * The measured hot statements, each a named prepared statement sent straight to a pooled
 * connection (bench/scenarios/mutation): reserving credits and inserting generations, for every
 * generateImage, and finding a token's user, for every request the token cache has not seen.
 * Everything else goes through Objection models or the repositories' SQL.
 */
import type { Knex } from 'knex';
import pg from 'pg';
import type { AuthUser } from '../auth/tokens';
import type { GenerationInput } from '../generation/input';
import { LIVE_STATUSES } from '../generation/lifecycle';
import type { GenerationRow } from '../generation/repository';

/** Every column of a generation, in the order of `GenerationRow`. */
const GENERATION_COLUMNS = [
  'id',
  'user_id',
  'status',
  'input',
  'credits_reserved',
  'attempts',
  'progress',
  'error_code',
  'error_message',
  'error_retryable',
  'refunded_at',
  'created_at',
  'started_at',
  'finished_at',
  'updated_at',
  'start_deadline_at',
] as const satisfies ReadonlyArray<keyof GenerationRow>;

/** The statuses counted by MAX_UNFINISHED_GENERATIONS_PER_USER (as the partial index of migration 009 lists them). */
const UNFINISHED_SQL = LIVE_STATUSES.map((st) => `'${st}'`).join(', ');

/**
 * The statement that creates generations. Keyed (one generation with an idempotency key), it also
 * claims the key with a plain INSERT into idempotency_keys, in the same statement: a key that
 * exists already (a committed claim, or one a concurrent statement commits while this one waits on
 * it) fails the whole statement with a unique violation, so nothing is reserved or inserted.
 */
function insertReservingCreditsSql(keyed: boolean): string {
  return `WITH wanted AS (
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::int[], $5::int[]) AS w(id, user_id, input, credits, deadline_s)
   ), totals AS (
     SELECT user_id, sum(credits) AS credits, count(*) AS generations FROM wanted GROUP BY user_id
   ), reserved AS (
     UPDATE users SET photo_credits = users.photo_credits - totals.credits, updated_at = now()
     FROM totals
     WHERE users.id = totals.user_id AND users.photo_credits >= totals.credits
       AND ($6::int = 0 OR totals.generations + (
         SELECT count(*) FROM generations g WHERE g.user_id = users.id AND g.status IN (${UNFINISHED_SQL})
       ) <= $6::int)
     RETURNING users.id
   )
   , inserted AS (
     INSERT INTO generations (id, user_id, status, input, credits_reserved, start_deadline_at)
     SELECT wanted.id, wanted.user_id, 'QUEUED', wanted.input, wanted.credits,
       CASE WHEN wanted.deadline_s IS NULL THEN NULL ELSE now() + wanted.deadline_s * interval '1 second' END
     FROM wanted JOIN reserved ON reserved.id = wanted.user_id
     RETURNING ${GENERATION_COLUMNS.join(', ')}
   ), charged AS (
     INSERT INTO credit_ledger (user_id, kind, amount, generation_id)
     SELECT user_id, 'charge', -credits_reserved, id FROM inserted
   )${
     keyed
       ? `, claimed AS (
     INSERT INTO idempotency_keys (user_id, key, input_hash, generation_id, expires_at)
     SELECT user_id, $7::text, $8::text, id, now() + $9::int * interval '1 second' FROM inserted
   )`
       : ''
   }
   SELECT * FROM inserted`;
}

const INSERT_RESERVING_CREDITS_SQL = insertReservingCreditsSql(false);
const INSERT_KEYED_RESERVING_CREDITS_SQL = insertReservingCreditsSql(true);

export interface NewGeneration {
  id: string;
  userId: string;
  input: GenerationInput;
  /** startDeadlineSeconds: still QUEUED this long after the insert, it is cancelled (DEADLINE_EXCEEDED). */
  startDeadlineSeconds?: number | null;
}

/** What claims an idempotency key for a new generation (see insertKeyedGenerationReservingCredits). */
export interface IdempotencyClaim {
  key: string;
  /** The canonical hash of the request (src/generation/idempotency.ts). */
  inputHash: string;
  /** IDEMPOTENCY_TTL_S: how long the key keeps answering with this generation. */
  ttlS: number;
}

/** The primary key of idempotency_keys: a unique violation on it means the key is taken. */
export const IDEMPOTENCY_KEY_CONSTRAINT = 'idempotency_keys_pkey';

/**
 * Reserves the credits of new generations (`batchSize` each), inserts them and writes their charges
 * to the credit ledger, in ONE statement (a data-modifying CTE), all or none per user: a user with too few credits for all of their
 * generations here gets none of them (and keeps their credits); the rows returned are those created.
 * With `maxUnfinished` above 0, the same holds for a user whose unfinished generations (any status
 * before SUCCEEDED, FAILED or CANCELLED) would number more than that with these: a count over the
 * partial index of migration 009, in the same statement (no extra round trip). It counts the rows
 * committed when the statement began, so two statements of one user at the same moment (two API
 * processes) may together pass it by their own generations; one process never runs two at once
 * (GenerationInserter).
 * Credits can never go below zero: the UPDATE checks the balance on the row it locks, after any
 * concurrent reservation has committed (and a CHECK constraint backs it up).
 *
 * Every `generateImage` goes through this, so it is a named prepared statement (Postgres parses and
 * plans it once per connection) sent straight to a pooled connection (see `runPrepared`). Its
 * columns are listed rather than `*`, so that a migration adding a column does not break the prepared
 * plan of a running process ("cached plan must not change result type"). Rows are passed sorted by
 * user, so that concurrent statements tend to lock users' rows in the same order.
 */
export async function insertGenerationsReservingCredits(db: Knex, generations: readonly NewGeneration[], maxUnfinished = 0): Promise<GenerationRow[]> {
  const sorted = [...generations].sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0));
  return runPrepared<GenerationRow>(db, 'sdjobs_insert_generations_reserving_credits_v3', INSERT_RESERVING_CREDITS_SQL, generationParams(sorted, maxUnfinished));
}

function generationParams(generations: readonly NewGeneration[], maxUnfinished: number): unknown[] {
  return [
    generations.map((g) => g.id),
    generations.map((g) => g.userId),
    generations.map((g) => JSON.stringify(g.input)),
    generations.map((g) => g.input.batchSize),
    generations.map((g) => g.startDeadlineSeconds ?? null),
    maxUnfinished,
  ];
}

/**
 * `insertGenerationReservingCredits` that also claims an idempotency key for the generation, in the
 * same statement: null when the user has too few credits (or too many unfinished; the key is not
 * claimed then), and a pg.DatabaseError with code 23505 on IDEMPOTENCY_KEY_CONSTRAINT when the key
 * is taken (nothing reserved or inserted). A second request with the key that runs while the first
 * statement is still open waits for it on the key (and on the user's row), then fails that way.
 */
export async function insertKeyedGenerationReservingCredits(
  db: Knex,
  generation: NewGeneration,
  claim: IdempotencyClaim,
  maxUnfinished = 0,
): Promise<GenerationRow | null> {
  const [row] = await runPrepared<GenerationRow>(db, 'sdjobs_insert_keyed_generation_reserving_credits_v1', INSERT_KEYED_RESERVING_CREDITS_SQL, [
    ...generationParams([generation], maxUnfinished),
    claim.key,
    claim.inputHash,
    claim.ttlS,
  ]);
  return row ?? null;
}

/** What a taken idempotency key answers: its request's hash and generation, and whether it has expired. */
export interface IdempotencyRecord {
  inputHash: string;
  expired: boolean;
  generation: GenerationRow;
}

/**
 * Reads the user's key and, when it has expired, deletes it (in the same statement: the row read is
 * the one deleted), so the caller may claim it again. Null when there is no such key (it was released
 * meanwhile, or its generation deleted).
 */
export async function readIdempotencyKey(db: Knex, userId: string, key: string): Promise<IdempotencyRecord | null> {
  const [row] = await runPrepared<GenerationRow & { input_hash: string; key_expired: boolean }>(
    db,
    'sdjobs_read_idempotency_key_v1',
    `WITH expired AS (
       DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND expires_at <= now() RETURNING 1
     )
     SELECT ${GENERATION_COLUMNS.map((c) => `g.${c}`).join(', ')}, k.input_hash, k.expires_at <= now() AS key_expired
     FROM idempotency_keys k JOIN generations g ON g.id = k.generation_id
     WHERE k.user_id = $1 AND k.key = $2`,
    [userId, key],
  );
  if (!row) return null;
  const { input_hash, key_expired, ...generation } = row;
  return { inputHash: input_hash, expired: key_expired, generation };
}

/**
 * QUEUED generations past their start deadline (by Postgres's clock), oldest deadline first, over the
 * partial index of migration 011. Every API process runs it every START_DEADLINE_SWEEP_MS, so it is
 * prepared and sent straight to a pooled connection like the hot statements: cheap, and out of
 * knex's query events, which count a request's own statements (test/integration/batching.test.ts).
 */
export async function findOverdueGenerationIds(db: Knex, limit: number): Promise<string[]> {
  const rows = await runPrepared<{ id: string }>(
    db,
    'sdjobs_find_overdue_generations_v1',
    `SELECT id FROM generations
     WHERE status = 'QUEUED' AND start_deadline_at IS NOT NULL AND start_deadline_at <= now()
     ORDER BY start_deadline_at LIMIT $1`,
    [limit],
  );
  return rows.map((r) => r.id);
}

/** Frees the key claimed for a generation that could not be queued: a retry with it creates a new one. */
export async function releaseIdempotencyKey(db: Knex, generationId: string): Promise<void> {
  await db('idempotency_keys').where({ generation_id: generationId }).delete();
}

/** Reserves `batchSize` credits and inserts one generation; null when the user has too few credits (or too many unfinished). */
export async function insertGenerationReservingCredits(db: Knex, generation: NewGeneration, maxUnfinished = 0): Promise<GenerationRow | null> {
  const [row] = await insertGenerationsReservingCredits(db, [generation], maxUnfinished);
  return row ?? null;
}

/** The part of knex's client that lends out pooled connections (typed `any` by knex). */
interface ConnectionLender {
  acquireConnection(): Promise<unknown>;
  releaseConnection(connection: unknown): Promise<unknown>;
}

/** What a PGlite connection (the dev database) offers: text with $n parameters. */
interface TextQueryable {
  query<R>(text: string, values: unknown[]): Promise<{ rows: R[] }>;
}

/**
 * Runs one statement on a connection borrowed from knex's pool. With node-postgres it is a named
 * prepared statement sent directly: knex's raw-SQL formatting, runner and query events took about a
 * third of the database time of a generateImage request in a CPU profile (bench/scenarios/mutation).
 * Any other connection (PGlite in dev) gets the text and values as they are.
 */
async function runPrepared<R>(db: Knex, name: string, text: string, values: unknown[]): Promise<R[]> {
  const lender = db.client as ConnectionLender;
  const connection = await lender.acquireConnection();
  try {
    if (connection instanceof pg.Client) {
      return (await connection.query<R & pg.QueryResultRow>({ name, text, values })).rows;
    }
    return (await (connection as TextQueryable).query<R>(text, values)).rows;
  } finally {
    await lender.releaseConnection(connection);
  }
}

/** The user a live token (not revoked, not expired) belongs to, by the token's sha256; null if none. */
export async function findUserByTokenHash(db: Knex, tokenHash: string): Promise<AuthUser | null> {
  // A prepared statement: on a cache miss this is the request's only query besides its own work.
  const result = await db
    .raw<{ rows: Array<{ id: string; email: string; is_admin: boolean; email_verified: boolean }> }>(
      `SELECT u.id, u.email, u.is_admin, u.email_verified_at IS NOT NULL AS email_verified
       FROM api_tokens t JOIN users u ON u.id = t.user_id
       WHERE t.token_hash = ? AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) LIMIT 1`,
      [tokenHash],
    )
    .options({ name: 'sdjobs_find_user_by_token_hash_v2' });
  const row = result.rows[0];
  return row ? { id: row.id, email: row.email, isAdmin: row.is_admin, emailVerified: row.email_verified } : null;
}
