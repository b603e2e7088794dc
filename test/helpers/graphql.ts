/**
 * A minimal GraphQL client over real HTTP for the tests: queries as JSON, subscriptions over SSE
 * (graphql-yoga's distinct-connections mode). Documents are typed by graphql-codegen.
 */
import type { TypedDocumentString } from '../gql/graphql';

export interface GqlResult<T> {
  data?: T | null;
  errors?: Array<{ message: string; extensions?: { code?: string; [k: string]: unknown } }>;
}

/** The `extensions.code` of an answer's first error, if any. */
export const codeOf = (r: { errors?: Array<{ extensions?: { code?: string } }> }) => r.errors?.[0]?.extensions?.code;

type Vars<V> = V extends Record<string, never> ? Record<string, never> | undefined : V;

export async function gql<T, V>(
  baseUrl: string,
  doc: TypedDocumentString<T, V>,
  variables: Vars<V>,
  token?: string,
): Promise<GqlResult<T>> {
  const res = await fetch(`${baseUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query: doc.toString(), variables }),
  });
  return (await res.json()) as GqlResult<T>;
}

export interface Subscription<T> {
  /** Every `next` payload, in arrival order. */
  readonly results: Array<GqlResult<T>>;
  /** Resolves when the server sends `complete` (or the stream ends), with all results. */
  readonly done: Promise<Array<GqlResult<T>>>;
  /** Resolves with the first result matching `pred` (already received or future). */
  waitFor(pred: (r: GqlResult<T>) => boolean, timeoutMs?: number): Promise<GqlResult<T>>;
  close(): void;
}

export function subscribe<T, V>(
  baseUrl: string,
  doc: TypedDocumentString<T, V>,
  variables: Vars<V>,
  token?: string,
): Subscription<T> {
  const controller = new AbortController();
  const results: Array<GqlResult<T>> = [];
  const waiters: Array<{ pred: (r: GqlResult<T>) => boolean; resolve: (r: GqlResult<T>) => void }> = [];
  const onResult = (r: GqlResult<T>) => {
    results.push(r);
    for (const w of [...waiters]) {
      if (w.pred(r)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(r);
      }
    }
  };

  const done = (async () => {
    const res = await fetch(`${baseUrl}/graphql`, {
      method: 'POST',
      signal: controller.signal,
      headers: {
        'content-type': 'application/json',
        accept: 'text/event-stream',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify({ query: doc.toString(), variables }),
    });
    if (!res.body) throw new Error(`no body (HTTP ${res.status})`);
    if (!res.headers.get('content-type')?.includes('text/event-stream')) {
      // An error before the stream started comes back as plain JSON.
      onResult((await res.json()) as GqlResult<T>);
      return results;
    }
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let idx: number;
        while ((idx = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, idx);
          buffer = buffer.slice(idx + 2);
          const lines = frame.split('\n');
          const event = lines.find((l) => l.startsWith('event:'))?.slice(6).trim();
          const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          if (event === 'complete') return results;
          if (event === 'next' && data) onResult(JSON.parse(data) as GqlResult<T>);
        }
      }
    } catch (err) {
      if (!controller.signal.aborted) throw err;
    }
    return results;
  })();
  done.catch(() => undefined);

  return {
    results,
    done,
    waitFor(pred, timeoutMs = 60_000) {
      const found = results.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching event within ${timeoutMs} ms; got ${JSON.stringify(results)}`)), timeoutMs);
        waiters.push({
          pred,
          resolve: (r) => {
            clearTimeout(timer);
            resolve(r);
          },
        });
      });
    },
    close: () => controller.abort(),
  };
}
