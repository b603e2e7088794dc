/**
 * Every write to a generation's row goes through here. A status changes only by one of the named
 * transitions of ./lifecycle, written only from a status that transition allows (in the same
 * statement), so a late or re-delivered step can neither undo a final outcome nor move a generation
 * backwards; and the credits go back in the same statement that makes a generation FAILED or
 * CANCELLED: exactly once.
 */
import type { Knex } from 'knex';
import pg from 'pg';
import { Generation } from '../db/models';
import type { GenerationInput } from './input';
import { IllegalTransitionError, isTerminal, TRANSITIONS, type GenerationStatus, type Transition } from './lifecycle';

/** The statuses a transition may be taken from, as an SQL list (constants, never user input). */
export const fromStatusesSql = (transition: Transition): string => TRANSITIONS[transition].from.map((s) => `'${s}'`).join(', ');

/**
 * After a transition wrote no row: null when the generation is gone or already final (a cancel or
 * another delivery ended it: the caller stops quietly); an IllegalTransitionError otherwise.
 */
export async function refusedTransition(db: Knex, id: string, transition: Transition): Promise<null> {
  const current = await db('generations').where({ id }).first<{ status: GenerationStatus } | undefined>('status');
  if (!current || isTerminal(current.status)) return null;
  throw new IllegalTransitionError(id, current.status, transition);
}

export interface GenerationRow {
  id: string;
  user_id: string;
  status: GenerationStatus;
  input: GenerationInput;
  credits_reserved: number;
  attempts: number;
  progress: number;
  error_code: string | null;
  error_message: string | null;
  error_retryable: boolean | null;
  refunded_at: Date | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  updated_at: Date;
}

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
] as const satisfies ReadonlyArray<keyof GenerationRow>;

const INSERT_RESERVING_CREDITS_SQL = `WITH wanted AS (
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::int[]) AS w(id, user_id, input, credits)
   ), totals AS (
     SELECT user_id, sum(credits) AS credits FROM wanted GROUP BY user_id
   ), reserved AS (
     UPDATE users SET photo_credits = users.photo_credits - totals.credits, updated_at = now()
     FROM totals
     WHERE users.id = totals.user_id AND users.photo_credits >= totals.credits
     RETURNING users.id
   )
   INSERT INTO generations (id, user_id, status, input, credits_reserved)
   SELECT wanted.id, wanted.user_id, 'QUEUED', wanted.input, wanted.credits
   FROM wanted JOIN reserved ON reserved.id = wanted.user_id
   RETURNING ${GENERATION_COLUMNS.join(', ')}`;

export interface NewGeneration {
  id: string;
  userId: string;
  input: GenerationInput;
}

/**
 * Reserves the credits of new generations (`batchSize` each) and inserts them, in ONE statement (a
 * data-modifying CTE), all or none per user: a user with too few credits for all of their
 * generations here gets none of them (and keeps their credits); the rows returned are those created.
 * Credits can never go below zero: the UPDATE checks the balance on the row it locks, after any
 * concurrent reservation has committed (and a CHECK constraint backs it up).
 *
 * Every `generateImage` goes through this, so it is a named prepared statement (Postgres parses and
 * plans it once per connection) sent straight to a pooled connection (see `runPrepared`). Its
 * columns are listed rather than `*`, so that a migration adding a column does not break the prepared
 * plan of a running process ("cached plan must not change result type"). Rows are passed sorted by
 * user, so that concurrent statements tend to lock users' rows in the same order.
 */
export async function insertGenerationsReservingCredits(db: Knex, generations: readonly NewGeneration[]): Promise<GenerationRow[]> {
  const sorted = [...generations].sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0));
  return runPrepared<GenerationRow>(db, 'sdjobs_insert_generations_reserving_credits', INSERT_RESERVING_CREDITS_SQL, [
    sorted.map((g) => g.id),
    sorted.map((g) => g.userId),
    sorted.map((g) => JSON.stringify(g.input)),
    sorted.map((g) => g.input.batchSize),
  ]);
}

/** Reserves `batchSize` credits and inserts one generation; null when the user has too few credits. */
export async function insertGenerationReservingCredits(db: Knex, generation: NewGeneration): Promise<GenerationRow | null> {
  const [row] = await insertGenerationsReservingCredits(db, [generation]);
  return row ?? null;
}

/**
 * Whether an error may belong to one generation of a statement rather than to the whole of it:
 * bad data (class 22), a violated constraint (23), a deadlock or serialization failure (40). Those
 * are worth retrying one at a time; anything else (no connection, a pool timeout, the server going
 * away) would only fail again, once per request, so every request gets it at once.
 */
function isRowLevelError(err: unknown): boolean {
  return err instanceof pg.DatabaseError && /^(22|23|40)/.test(err.code ?? '');
}

interface PendingInsert {
  generation: NewGeneration;
  resolve(row: GenerationRow | null): void;
  reject(err: unknown): void;
}

export interface GenerationInserterOptions {
  /** Statements in flight at once (each holds a pooled connection). Default 3. */
  maxInFlight?: number;
  /** Generations in one statement at most. Default 200. */
  maxBatch?: number;
}

/**
 * Creates generations (credits reserved, row inserted) for the API, several requests per statement.
 *
 * Why: each statement is a transaction whose commit waits for a WAL flush, and its cost in Postgres
 * is mostly per statement (about 330 µs of Postgres CPU for one generation, 80 µs each for ten, on
 * the benchmark machine). Worse, a busy user's reservations serialise on their row lock, held until
 * the flush: one user could not get past about 800 a second however many connections tried
 * (bench/scenarios/mutation). So at most `maxInFlight` statements run at once, and the requests that
 * arrive meanwhile go together in the next one. Nothing waits when the API is idle: a request that
 * finds a free slot goes at once.
 *
 * The outcome for each user is what running their requests one by one in arrival order would give:
 * a user is in at most one statement at a time (so this process never waits on its own row locks
 * and cannot deadlock with itself), and when a user cannot pay for all their generations of a
 * statement, those are retried one at a time, so as many as fit are created and the rest get null
 * (INSUFFICIENT_CREDITS). A statement that fails because of a row (a violated constraint, or a
 * deadlock with another API process) is retried one generation at a time, so the error reaches only
 * the request it belongs to; any other failure reaches every request of the statement.
 */
export class GenerationInserter {
  private readonly queue: PendingInsert[] = [];
  /** Users with a statement in flight: their later requests wait for it. */
  private readonly busyUsers = new Set<string>();
  private inFlight = 0;
  private readonly maxInFlight: number;
  private readonly maxBatch: number;

  constructor(
    private readonly db: Knex,
    opts: GenerationInserterOptions = {},
  ) {
    this.maxInFlight = opts.maxInFlight ?? 3;
    this.maxBatch = opts.maxBatch ?? 200;
  }

  insert(generation: NewGeneration): Promise<GenerationRow | null> {
    return new Promise((resolve, reject) => {
      this.queue.push({ generation, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch = this.takeBatch();
      if (batch.length === 0) return;
      this.inFlight++;
      const users = new Set(batch.map((p) => p.generation.userId));
      for (const u of users) this.busyUsers.add(u);
      void this.run(batch).finally(() => {
        this.inFlight--;
        for (const u of users) this.busyUsers.delete(u);
        this.pump();
      });
    }
  }

  /** The oldest waiting requests of users without a statement in flight, in arrival order. */
  private takeBatch(): PendingInsert[] {
    const batch: PendingInsert[] = [];
    let kept = 0;
    for (let i = 0; i < this.queue.length; i++) {
      const p = this.queue[i]!;
      if (batch.length < this.maxBatch && !this.busyUsers.has(p.generation.userId)) batch.push(p);
      else this.queue[kept++] = p;
    }
    this.queue.length = kept;
    return batch;
  }

  /** Settles every request of the batch; never throws. */
  private async run(batch: PendingInsert[]): Promise<void> {
    let rows: GenerationRow[];
    try {
      rows = await insertGenerationsReservingCredits(this.db, batch.map((p) => p.generation));
    } catch (err) {
      if (batch.length > 1 && isRowLevelError(err)) await this.oneByOne(batch);
      else for (const p of batch) p.reject(err);
      return;
    }
    const created = new Map(rows.map((r) => [r.id, r]));
    const perUser = new Map<string, number>();
    for (const p of batch) perUser.set(p.generation.userId, (perUser.get(p.generation.userId) ?? 0) + 1);
    const retry: PendingInsert[] = [];
    for (const p of batch) {
      const row = created.get(p.generation.id);
      if (row) p.resolve(row);
      // Too few credits for all of this user's generations together: try them one at a time.
      else if ((perUser.get(p.generation.userId) ?? 0) > 1) retry.push(p);
      else p.resolve(null);
    }
    await this.oneByOne(retry);
  }

  private async oneByOne(batch: PendingInsert[]): Promise<void> {
    for (const p of batch) {
      try {
        p.resolve(await insertGenerationReservingCredits(this.db, p.generation));
      } catch (err) {
        p.reject(err);
      }
    }
  }
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

export async function findGeneration(db: Knex, id: string): Promise<GenerationRow | null> {
  const row = await Generation.query(db).findById(id);
  return (row as GenerationRow | undefined) ?? null;
}

/**
 * Takes one of the in-flight transitions (start, generate, postProcess, stage, retry); returns the
 * row, null when the generation is already final, and throws IllegalTransitionError (nothing
 * written) when its status does not allow the transition. `newAttempt` counts a new try (start).
 */
export async function transitionGeneration(
  db: Knex,
  id: string,
  transition: Exclude<Transition, 'succeed' | 'fail' | 'cancel'>,
  extra: { progress?: number; newAttempt?: boolean } = {},
): Promise<GenerationRow | null> {
  const result = await db.raw<{ rows: GenerationRow[] }>(
    `UPDATE generations SET status = :status, updated_at = now(),
       progress = GREATEST(progress, :progress),
       attempts = attempts + :inc,
       started_at = CASE WHEN :inc = 1 THEN COALESCE(started_at, now()) ELSE started_at END
     WHERE id = :id AND status IN (${fromStatusesSql(transition)})
     RETURNING *`,
    { id, status: TRANSITIONS[transition].to, progress: extra.progress ?? 0, inc: extra.newAttempt ? 1 : 0 },
  );
  return result.rows[0] ?? refusedTransition(db, id, transition);
}

export interface GenerationFailure {
  code: string;
  message: string;
  retryable: boolean;
}

/**
 * Ends a live generation as FAILED or CANCELLED and gives its reserved credits back, in one
 * statement. Returns null when the generation was already final (nothing changes, nothing refunded).
 */
export async function endGenerationWithRefund(
  db: Knex,
  id: string,
  transition: 'fail' | 'cancel',
  error: GenerationFailure,
): Promise<GenerationRow | null> {
  const result = await db.raw<{ rows: GenerationRow[] }>(
    `WITH ended AS (
       UPDATE generations SET status = :status, error_code = :code, error_message = :message,
         error_retryable = :retryable, refunded_at = now(), finished_at = now(), updated_at = now()
       WHERE id = :id AND status IN (${fromStatusesSql(transition)}) AND refunded_at IS NULL
       RETURNING *
     ), refund AS (
       UPDATE users SET photo_credits = users.photo_credits + ended.credits_reserved, updated_at = now()
       FROM ended WHERE users.id = ended.user_id
       RETURNING users.id
     ), unstaged AS (
       -- Images staged for an upload that will never run now.
       DELETE FROM staged_images USING ended WHERE staged_images.generation_id = ended.id
       RETURNING staged_images.index
     )
     SELECT ended.* FROM ended`,
    { id, status: TRANSITIONS[transition].to, code: error.code, message: error.message, retryable: error.retryable },
  );
  return result.rows[0] ?? null;
}
