/**
 * What `generateImage` answers about the generation it has just created, over real HTTP with no
 * worker: its state is known (QUEUED, seq 0) without reading it back, and `current` still tells
 * the place in the queue.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../helpers/stack';

interface Created {
  id: string;
  status: string;
  progress: number;
  error: unknown;
  images: unknown[];
  creditsReserved: number;
  current?: { seq: number; status: string; queuePosition: number | null; etaSeconds: number | null };
}

describe('generateImage resolvers', () => {
  let stack: Stack;
  let token: string;
  /** Queries knex ran (the reservation itself goes to the pool directly and is not counted). */
  let queries: string[] = [];

  beforeAll(async () => {
    stack = await startStack({ worker: false });
    ({ token } = await stack.createUser(10));
    stack.tdb.db.on('query', (q: { sql: string }) => queries.push(q.sql));
  });
  afterAll(async () => {
    await stack?.close();
  });

  const generate = async (selection: string) => {
    const res = await fetch(`${stack.baseUrl}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({
        query: `mutation($input: GenerateImageInput!) { generateImage(input: $input) { ${selection} } }`,
        variables: { input: { prompt: 'a lighthouse at dusk', width: 512, height: 512 } },
      }),
    });
    const body = (await res.json()) as { data?: { generateImage: Created }; errors?: unknown };
    expect(body.errors).toBeUndefined();
    return body.data!.generateImage;
  };

  it('answers the state of a new generation without reading it back', async () => {
    await generate('id'); // the token is cached from here on
    queries = [];
    const g = await generate('id status progress error { code } images { url } creditsReserved');
    expect(g).toMatchObject({ status: 'QUEUED', progress: 0, error: null, images: [], creditsReserved: 1 });
    expect(queries).toEqual([]);
  });

  it('tells the place in the queue when `current` is asked for', async () => {
    const first = await generate('id current { seq status queuePosition etaSeconds }');
    const second = await generate('id status current { seq status queuePosition etaSeconds }');
    expect(first.current).toMatchObject({ seq: 0, status: 'QUEUED' });
    expect(second.current).toMatchObject({ seq: 0, status: 'QUEUED', queuePosition: first.current!.queuePosition! + 1 });
    expect(second.current!.etaSeconds).toBeGreaterThan(0);
    expect(second.status).toBe('QUEUED');
  });
});
