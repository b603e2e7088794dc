/**
 * Raw HTTP answers for tests that check more than a GraphQL result: the status, `Retry-After`, the
 * body as sent (JSON, or an event stream's frames) and how long the whole answer took.
 */
export interface Answer {
  status: number;
  retryAfter: string | null;
  text: string;
  /** How long the answer took, whole. */
  ms: number;
}

export async function ask(url: string, init: RequestInit = {}): Promise<Answer> {
  const started = performance.now();
  const res = await fetch(url, init);
  const text = await res.text();
  return { status: res.status, retryAfter: res.headers.get('retry-after'), text, ms: Math.round(performance.now() - started) };
}

/** A GraphQL operation over HTTP; `stream` asks for an event stream, as a subscription does. */
export function graphql(baseUrl: string, query: string, variables: Record<string, unknown>, token: string, stream = false): Promise<Answer> {
  return ask(`${baseUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...(stream ? { accept: 'text/event-stream' } : {}) },
    body: JSON.stringify({ query, variables }),
  });
}

export interface GraphQLErrorBody {
  message: string;
  extensions?: { code?: string; retryAfterSeconds?: number };
}

/** The errors of a JSON answer, or of every `next` event of an event stream. */
export function errorsOf(answer: Answer): GraphQLErrorBody[] {
  if (!answer.text.includes('event: ')) return (JSON.parse(answer.text) as { errors?: GraphQLErrorBody[] }).errors ?? [];
  return answer.text
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .flatMap((line) => (JSON.parse(line.slice('data: '.length)) as { errors?: GraphQLErrorBody[] }).errors ?? []);
}
