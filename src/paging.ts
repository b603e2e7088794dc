/**
 * Keyset paging of the lists a client pages through (`chatHistory`, `generations`, `creditHistory`): newest first by
 * (created_at, id), with opaque cursors that name a row's place rather than an offset, so a page
 * neither skips nor repeats rows when newer ones arrive meanwhile, and a cursor stays valid.
 * `first` and `after` are checked at the edge (the zod schemas below, through the validation plugin,
 * which checks an argument only when it is given).
 */
import type { Knex } from 'knex';
import { z } from 'zod';

/** Items per page when `first` is not given (at most PAGE_SIZE_MAX). */
export const DEFAULT_PAGE_SIZE = 20;

/** The lists whose cursors are told apart: a cursor of one is refused by the others. */
export type CursorList = 'chat' | 'generations' | 'credits';

/** How each list's rows are identified: a UUID, or (the credit ledger) a bigint sequence. */
const ID_KINDS: Readonly<Record<CursorList, 'uuid' | 'bigint'>> = { chat: 'uuid', generations: 'uuid', credits: 'bigint' };

/** A row's place in its list: its created_at to the microsecond (ISO 8601, UTC) and its id. */
export interface Cursor {
  at: string;
  id: string;
}

export interface PageRequest {
  first: number;
  after: Cursor | null;
}

export interface Page<T> {
  edges: Array<{ node: T; cursor: string }>;
  hasNextPage: boolean;
  /** True when `after` was given: the row it names, and those before it, come earlier. */
  hasPreviousPage: boolean;
}

/**
 * The SQL of a row's cursor time. Postgres keeps microseconds and a JavaScript Date only
 * milliseconds: a cursor made from a Date would skip or repeat rows created in the same millisecond.
 */
export const cursorAtSql = (column: string): string => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

const CURSOR_AT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const ID_PATTERNS = {
  uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
  bigint: /^[1-9][0-9]{0,17}$/,
} as const;

const encodeCursor = (list: CursorList, c: Cursor): string => Buffer.from(JSON.stringify([list, c.at, c.id])).toString('base64url');

function decodeCursor(list: CursorList, raw: string): Cursor | null {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
    if (!Array.isArray(parsed) || parsed.length !== 3) return null;
    const [l, at, id] = parsed as unknown[];
    if (l !== list || typeof at !== 'string' || !CURSOR_AT.test(at) || typeof id !== 'string' || !ID_PATTERNS[ID_KINDS[list]].test(id)) return null;
    return { at, id };
  } catch {
    return null;
  }
}

/** `after`, when given: a cursor this list handed out, decoded; anything else is BAD_USER_INPUT. */
export const afterSchema = (list: CursorList) =>
  z.string().transform((raw, ctx) => {
    const cursor = decodeCursor(list, raw);
    if (!cursor) {
      ctx.addIssue({ code: 'custom', message: "after must be a cursor this list returned (an edge's cursor or pageInfo.endCursor)" });
      return z.NEVER;
    }
    return cursor;
  });

/** `first`, when given: 0..PAGE_SIZE_MAX. */
export const firstSchema = (max: number) =>
  z.number().int().min(0, 'first must not be negative').max(max, `first must be at most ${max} (PAGE_SIZE_MAX)`);

/** The page asked for by checked `first` and `after`, either of them left out. */
export const pageRequest = (args: { first?: number | null; after?: Cursor | null }, max: number): PageRequest => ({
  first: args.first ?? Math.min(DEFAULT_PAGE_SIZE, max),
  after: args.after ?? null,
});

/**
 * Reads one page of `table` newest first, after the cursor, with one row more than asked for (which
 * only tells that a next page exists) and each row's `cursor_at`; the caller narrows it to the
 * caller's rows and hands the result to toPage.
 */
export function pageQuery(db: Knex, table: string, req: PageRequest, list: CursorList): Knex.QueryBuilder {
  const idType = ID_KINDS[list];
  const q = db(table)
    .select(`${table}.*`, db.raw(`${cursorAtSql(`${table}.created_at`)} AS cursor_at`))
    .orderBy([
      { column: `${table}.created_at`, order: 'desc' },
      { column: `${table}.id`, order: 'desc' },
    ])
    .limit(req.first + 1);
  if (req.after) q.whereRaw(`(${table}.created_at, ${table}.id) < (?::timestamptz, ?::${idType})`, [req.after.at, req.after.id]);
  return q;
}

/** The page from pageQuery's rows: at most `first` edges, each with its opaque cursor. */
export function toPage<T extends { id: string | number }>(list: CursorList, req: PageRequest, rows: ReadonlyArray<T & { cursor_at: string }>): Page<T> {
  return {
    edges: rows.slice(0, req.first).map((row) => ({ node: row, cursor: encodeCursor(list, { at: row.cursor_at, id: String(row.id) }) })),
    hasNextPage: rows.length > req.first,
    hasPreviousPage: req.after !== null,
  };
}
