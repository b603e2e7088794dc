/**
 * Load for the fault tests (test/faults/): clients that each submit generateImage in a loop and
 * record every answer (or that none came), and the checks that follow an outage: every accepted
 * generation SUCCEEDED, each charged once, nothing kept for the refused ones.
 */
import type { Knex } from 'knex';
import { expect } from 'vitest';
import { unbalancedUsers } from '../../src/credits/ledger';
import { WAIT_MS } from './budgets';
import { until } from './wait';

/** The stack's settings for the load: no per-user limits (the clients are few and quick), no mail to confirm. */
export const LOAD_ENV = { RATE_LIMIT_GENERATIONS_PER_MINUTE: '0', MAX_UNFINISHED_GENERATIONS_PER_USER: '0', EMAIL_VERIFICATION_REQUIRED: 'false' } as const;

export interface LoadAnswer {
  client: number;
  /** performance.now() when the request was sent and when its answer (or its failure) came. */
  sentAt: number;
  answeredAt: number;
  /** HTTP status; 0: no answer (the connection failed, or no answer within WAIT_MS). */
  status: number;
  /** The generation's id when it was accepted. */
  id?: string;
  /** `extensions.code` of the first error. */
  code?: string;
  retryAfter: string | null;
}

const GENERATE = 'mutation G($input: GenerateImageInput!) { generateImage(input: $input) { id } }';
/** A small, quick generation: the load is about the queue, not the GPU. */
const INPUT = { prompt: 'a lighthouse in a storm', width: 64, height: 64, steps: 3 };

export interface GenerationLoad {
  readonly answers: LoadAnswer[];
  /** Accepted generations' ids, in the order of their answers. */
  accepted(): string[];
  /** Stops the loops; resolves when every client's last request has been answered. */
  stop(): Promise<void>;
}

/**
 * A stream on each of the last `n` accepted generations, opened by `open` with the generation and the
 * client that asked for it. The streams are returned at once (for the caller to close); `listening`
 * resolves once each has sent its first state, so it is subscribed.
 */
export function watchLatest<S extends { waitFor(pred: () => boolean, timeoutMs?: number): Promise<unknown> }>(
  load: GenerationLoad,
  n: number,
  open: (id: string, client: number) => S,
): { streams: S[]; listening: Promise<unknown> } {
  const streams = load.answers
    .filter((a) => a.id)
    .slice(-n)
    .map((a) => open(a.id!, a.client));
  return { streams, listening: Promise.all(streams.map((s) => s.waitFor(() => true, WAIT_MS))) };
}

/**
 * One client per token, each sending generateImage to `baseUrl()` (asked before every request, so
 * a test may move the clients), then pausing `pauseMs` before the next.
 */
export function startGenerationLoad(baseUrl: () => string, tokens: readonly string[], pauseMs = 100): GenerationLoad {
  const answers: LoadAnswer[] = [];
  let stopping = false;
  const loop = async (client: number, token: string) => {
    while (!stopping) {
      const sentAt = performance.now();
      try {
        const res = await fetch(`${baseUrl()}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          body: JSON.stringify({ query: GENERATE, variables: { input: INPUT } }),
          signal: AbortSignal.timeout(WAIT_MS),
        });
        const body = (await res.json()) as { data?: { generateImage?: { id: string } } | null; errors?: Array<{ extensions?: { code?: string } }> };
        answers.push({
          client,
          sentAt,
          answeredAt: performance.now(),
          status: res.status,
          id: body.data?.generateImage?.id,
          code: body.errors?.[0]?.extensions?.code,
          retryAfter: res.headers.get('retry-after'),
        });
      } catch {
        answers.push({ client, sentAt, answeredAt: performance.now(), status: 0, retryAfter: null });
      }
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  };
  const loops = tokens.map((t, i) => loop(i, t));
  return {
    answers,
    accepted: () => answers.flatMap((a) => (a.id ? [a.id] : [])),
    async stop() {
      stopping = true;
      await Promise.all(loops);
    },
  };
}

/** Waits until every one of `ids` has SUCCEEDED, or the budget is spent (the checks that follow then say which did not and why). */
async function untilSucceeded(db: Knex, ids: readonly string[], budgetMs: number): Promise<void> {
  const succeeded = async () => {
    const [row] = await db('generations').whereIn('id', ids).where({ status: 'SUCCEEDED' }).count<Array<{ n: string | number }>>('* as n');
    return Number(row?.n ?? 0) === ids.length;
  };
  await until(succeeded, 'every accepted generation to succeed', budgetMs).catch(() => undefined);
}

/**
 * After the load: every accepted generation SUCCEEDED; each user's generations are exactly the
 * accepted ones that succeeded plus refused ones that ended FAILED with their credits back (a request
 * refused after its row was written); each user's balance is what they started with minus one credit
 * per success, and equals their ledger, which holds one charge per generation and one refund per
 * failed one.
 */
async function expectChargedOncePerSuccess(db: Knex, users: ReadonlyArray<{ userId: string; credits: number }>, accepted: readonly string[]): Promise<void> {
  const rows: Array<{ id: string; user_id: string; status: string; error_code: string | null }> = await db('generations')
    .whereIn('user_id', users.map((u) => u.userId))
    .select('id', 'user_id', 'status', 'error_code');
  const byId = new Map(rows.map((r) => [r.id, r]));
  expect(accepted.filter((id) => byId.get(id)?.status !== 'SUCCEEDED').map((id) => [id, byId.get(id)?.status, byId.get(id)?.error_code])).toEqual([]);
  const acceptedSet = new Set(accepted);
  // Rows nobody was told about: refused at the queue, ended FAILED (ENQUEUE_FAILED) and refunded.
  const refused = rows.filter((r) => !acceptedSet.has(r.id));
  expect(refused.filter((r) => r.status !== 'FAILED' || r.error_code !== 'ENQUEUE_FAILED')).toEqual([]);
  const ledger: Array<{ generation_id: string; kind: string; n: string | number }> = await db('credit_ledger')
    .whereIn('generation_id', rows.map((r) => r.id))
    .groupBy('generation_id', 'kind')
    .select('generation_id', 'kind', db.raw('count(*) as n'));
  const entries = new Map<string, string[]>();
  for (const l of ledger) entries.set(l.generation_id, [...(entries.get(l.generation_id) ?? []), ...Array<string>(Number(l.n)).fill(l.kind)]);
  for (const r of rows) expect([r.id, (entries.get(r.id) ?? []).sort()]).toEqual([r.id, r.status === 'SUCCEEDED' ? ['charge'] : ['charge', 'refund']]);
  for (const u of users) {
    const succeeded = rows.filter((r) => r.user_id === u.userId && r.status === 'SUCCEEDED').length;
    const balance = await db('users').where({ id: u.userId }).first<{ photo_credits: number }>('photo_credits');
    expect(balance?.photo_credits).toBe(u.credits - succeeded);
  }
  expect(await unbalancedUsers(db)).toEqual([]);
}

/**
 * The end of a fault test under load: every accepted generation SUCCEEDED (waited for within
 * `budgetMs`), each charged once and the refused ones refunded (expectChargedOncePerSuccess), and
 * every progress stream kept open across the fault heard its generation succeed.
 */
export async function expectLoadSettled(
  db: Knex,
  users: ReadonlyArray<{ userId: string }>,
  credits: number,
  load: GenerationLoad,
  streams: ReadonlyArray<{ done: Promise<unknown> }>,
  budgetMs: number,
): Promise<void> {
  const accepted = load.accepted();
  await untilSucceeded(db, accepted, budgetMs);
  await expectChargedOncePerSuccess(db, users.map((u) => ({ userId: u.userId, credits })), accepted);
  for (const s of streams) expect(await s.done).toEqual(expect.arrayContaining([{ data: { generationProgress: { status: 'SUCCEEDED' } } }]));
}
