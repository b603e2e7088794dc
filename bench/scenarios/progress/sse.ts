/**
 * Many GraphQL-over-SSE subscriptions from one process, over undici with one socket per
 * subscription (yoga's "distinct connections" mode). Frames are split on the blank line and handed
 * over as (event, data) strings; parsing the payload is the caller's business.
 */
import { Pool } from 'undici';

export type FrameHandler = (event: string, data: string) => void;

export interface SubscribeRequest {
  query: string;
  variables: Record<string, unknown>;
  token?: string;
}

export class SseClients {
  private readonly pool: Pool;

  constructor(origin: string, maxSockets: number) {
    // bodyTimeout 0: an idle subscription is silent for up to yoga's 12 s keep-alive.
    this.pool = new Pool(origin, { connections: maxSockets, pipelining: 1, bodyTimeout: 0, headersTimeout: 60_000 });
  }

  /** Resolves once the response has started (HTTP 200, text/event-stream); frames arrive after. */
  async subscribe(req: SubscribeRequest, onFrame: FrameHandler): Promise<void> {
    const res = await this.pool.request({
      path: '/graphql',
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'text/event-stream',
        ...(req.token ? { authorization: `Bearer ${req.token}` } : {}),
      },
      body: JSON.stringify({ query: req.query, variables: req.variables }),
    });
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      throw new Error(`subscription answered HTTP ${res.statusCode}: ${text.slice(0, 300)}`);
    }
    res.body.setEncoding('utf8');
    let buffer = '';
    res.body.on('data', (chunk: string) => {
      buffer += chunk;
      let end: number;
      while ((end = buffer.indexOf('\n\n')) !== -1) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (frame.startsWith(':')) continue; // keep-alive comment
        let event = 'message';
        let data = '';
        for (const line of frame.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(line.startsWith('data: ') ? 6 : 5);
        }
        onFrame(event, data);
      }
    });
    // Closing the pool ends every body with an error: that is how subscriptions are closed here.
    res.body.on('error', () => undefined);
  }

  /** Closes every socket (the server sees each subscription's connection end). */
  async close(): Promise<void> {
    await this.pool.destroy();
  }
}

/** Runs `task(i)` for i in 0..n-1 with at most `concurrency` running at once. */
export async function forEachLimited(n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, n) }, async () => {
    while (next < n) await task(next++);
  });
  await Promise.all(lanes);
}

/** Polls `done` until it holds, failing with `describe()` after `timeoutMs`. */
export async function waitUntil(done: () => boolean, timeoutMs: number, describe: () => string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`timed out: ${describe()}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Wall-clock milliseconds with sub-millisecond resolution; processes on one machine agree on it. */
export const nowMs = (): number => performance.timeOrigin + performance.now();
