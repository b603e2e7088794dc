/**
 * Batches generateImage's reservations into few statements (the scheduler; the statement itself is
 * in src/db/statements.ts).
 */
import type { Knex } from 'knex';
import pg from 'pg';
import { atEndOfTurn } from '../endOfTurn';
import { insertGenerationReservingCredits, insertGenerationsReservingCredits, type NewGeneration } from '../db/statements';
import type { GenerationRow } from './repository';

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
  /** MAX_UNFINISHED_GENERATIONS_PER_USER: a user's unfinished generations at most, these included; 0 (the default): no limit. */
  maxUnfinished?: number;
}

/**
 * Creates generations (credits reserved, row inserted) for the API, several requests per statement.
 *
 * Why: each statement is a transaction whose commit waits for a WAL flush, and its cost in Postgres
 * is mostly per statement (about 330 µs of Postgres CPU for one generation, 80 µs each for ten, on
 * the machine of an earlier benchmark run). Worse, a busy user's reservations serialise on their row lock, held until
 * the flush: one user could not get past about 800 a second however many connections tried
 * (bench/scenarios/mutation). So at most `maxInFlight` statements run at once, and the requests that
 * arrive meanwhile go together in the next one. A request that finds a free slot waits only for the
 * end of the event-loop turn it arrived in, so that requests arriving together share a statement:
 * sent at once, most statements under a load of many users carried one generation (Postgres's
 * fixed cost per statement, every time); now they carry about ten (bench/scenarios/mutation).
 *
 * The outcome for each user is what running their requests one by one in arrival order would give:
 * a user is in at most one statement at a time (so this process never waits on its own row locks
 * and cannot deadlock with itself), and when a user cannot pay for all their generations of a
 * statement (or their unfinished generations would pass `maxUnfinished`), those are retried one at a
 * time, so as many as fit are created and the rest get null (INSUFFICIENT_CREDITS or RATE_LIMITED:
 * the service tells which). A statement that fails because of a row (a violated constraint, or a
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
  private readonly maxUnfinished: number;

  constructor(
    private readonly db: Knex,
    opts: GenerationInserterOptions = {},
  ) {
    this.maxInFlight = opts.maxInFlight ?? 3;
    this.maxBatch = opts.maxBatch ?? 200;
    this.maxUnfinished = opts.maxUnfinished ?? 0;
  }

  insert(generation: NewGeneration): Promise<GenerationRow | null> {
    return new Promise((resolve, reject) => {
      this.queue.push({ generation, resolve, reject });
      this.schedulePump();
    });
  }

  /** At the end of this event-loop turn, so that the requests of one turn share a statement. */
  private readonly schedulePump = atEndOfTurn(() => this.pump());

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
      rows = await insertGenerationsReservingCredits(this.db, batch.map((p) => p.generation), this.maxUnfinished);
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
      // Too few credits (or too many unfinished) for all of this user's generations together: try them one at a time.
      else if ((perUser.get(p.generation.userId) ?? 0) > 1) retry.push(p);
      else p.resolve(null);
    }
    await this.oneByOne(retry);
  }

  private async oneByOne(batch: PendingInsert[]): Promise<void> {
    for (const p of batch) {
      try {
        p.resolve(await insertGenerationReservingCredits(this.db, p.generation, this.maxUnfinished));
      } catch (err) {
        p.reject(err);
      }
    }
  }
}

