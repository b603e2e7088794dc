/**
 * One load run with autocannon, in the bench process: `connections` keep-alive connections POST the
 * mutation for `durationS` seconds. With several tokens, each connection cycles through its own share
 * of them, so requests rotate over all the users and no two connections send the same user's.
 * Requests are prebuilt buffers: the load costs the same for whichever server it hits.
 */
import autocannon from 'autocannon';
import type { BenchChild } from '../../lib/processes';
import { GENERATE_BODY, isGenerated } from './document';

export interface LoadOptions {
  url: string;
  tokens: readonly string[];
  connections: number;
  durationS: number;
  /** Stop after this many requests instead (autocannon's `amount`). */
  amount?: number;
}

export interface LoadResult {
  /** Completed responses per second over the run. */
  rps: number;
  p50: number;
  p99: number;
  responses: number;
  /** Responses with a non-2xx status. */
  non2xx: number;
  /** Connection errors and timeouts. */
  errors: number;
  /** 2xx responses whose body is not a generated id (e.g. GraphQL `errors` in a 200). */
  mismatches: number;
  /** The first response body that failed the check, to say what went wrong. */
  firstBadBody?: string;
}

const header = (token: string) => ({ 'content-type': 'application/json', authorization: `Bearer ${token}` });

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const { tokens, connections } = opts;
  if (tokens.length === 0) throw new Error('runLoad needs at least one token');
  let nextClient = 0;
  let firstBadBody: string | undefined;
  const result = await autocannon({
    url: opts.url,
    method: 'POST',
    body: GENERATE_BODY,
    headers: header(tokens[0]!),
    connections,
    duration: opts.durationS,
    ...(opts.amount ? { amount: opts.amount } : {}),
    // autocannon checks for the end of the run at each sample: every 100 ms, not every second.
    sampleInt: 100,
    verifyBody: (body) => {
      if (isGenerated(body)) return true;
      firstBadBody ??= String(body).slice(0, 500);
      return false;
    },
    ...(tokens.length > 1
      ? {
          setupClient: (client: autocannon.Client) => {
            // Connection i takes its own share of the tokens: every token is used, none by two connections.
            const i = nextClient++ % connections;
            const share = tokens.filter((_, k) => k % connections === i);
            const mine = share.length ? share : [tokens[i % tokens.length]!];
            client.setRequests(mine.map((t) => ({ method: 'POST', body: GENERATE_BODY, headers: header(t) })));
          },
        }
      : {}),
  });
  const responses = result.requests.total;
  return {
    rps: responses / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    responses,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    mismatches: result.mismatches,
    ...(firstBadBody === undefined ? {} : { firstBadBody }),
  };
}

/** One request outside the load, read whole: the shape the load's check relies on, or why not. */
export async function sampleRequest(url: string, token: string): Promise<{ ok: boolean; status: number; body: string }> {
  const res = await fetch(url, { method: 'POST', headers: header(token), body: GENERATE_BODY });
  const body = await res.text();
  return { ok: res.ok && isGenerated(body), status: res.status, body };
}

/** CPU time (user + system, µs) a server child has used so far; its children answer `{ type: 'cpu' }`. */
export async function cpuMicros(child: BenchChild): Promise<number> {
  const reply = child.next<{ type: string; usage: NodeJS.CpuUsage }>((m) => m.type === 'cpu', 10_000);
  child.send({ type: 'cpu' });
  const { usage } = await reply;
  return usage.user + usage.system;
}
