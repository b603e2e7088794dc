/**
 * Logs of a full generation, as an operator reads them: every line about a job names the
 * generation, its queue and attempt; every line written for an API request carries the request id
 * (the one a proxy sent in x-request-id, which the answer echoes); and no line holds a token.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../helpers/stack';
import { events, watch } from './helpers';

describe('logs', () => {
  const lines: string[] = [];
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { LOG_LEVEL: 'debug' }, logLines: lines });
  });
  afterAll(() => stack?.close());

  it('name the generation and the request on each line, and never hold a token', async () => {
    const { token } = await stack.createUser(3);
    const send = (query: string, variables: Record<string, unknown>, requestId: string) =>
      fetch(`${stack.baseUrl}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': requestId },
        body: JSON.stringify({ query, variables }),
      });
    const res = await send('mutation LogProbe($input: GenerateImageInput!) { generateImage(input: $input) { id } }', { input: { prompt: 'logged', steps: 3, width: 64, height: 64 } }, 'probe-request-1');
    expect(res.headers.get('x-request-id')).toBe('probe-request-1');
    const id = ((await res.json()) as { data: { generateImage: { id: string } } }).data.generateImage.id;
    expect(events(await watch(stack.baseUrl, id, token).done).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    // A generation that fails for good logs why, on its job's lines.
    stack.sim.failNext('bad-request');
    const failed = await send('mutation LogFail($input: GenerateImageInput!) { generateImage(input: $input) { id } }', { input: { prompt: 'refused', steps: 3, width: 64, height: 64 } }, 'probe-request-2');
    const failedId = ((await failed.json()) as { data: { generateImage: { id: string } } }).data.generateImage.id;
    expect(events(await watch(stack.baseUrl, failedId, token).done).at(-1)).toMatchObject({ status: 'FAILED' });
    // An answer without x-request-id gets one made.
    expect((await fetch(`${stack.baseUrl}/healthz`)).headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);

    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const jobLines = parsed.filter((l) => l.generation === failedId);
    expect(jobLines.length, JSON.stringify(parsed.slice(-20))).toBeGreaterThan(0);
    for (const l of jobLines) expect(l).toMatchObject({ queue: 'high_priority', attempt: 1, kind: 'generateImage' });
    expect(parsed.some((l) => l.req === 'probe-request-1')).toBe(true);
    const all = lines.join('\n');
    expect(all).not.toContain(token);
    expect(all).not.toMatch(/Bearer /);
  });
});
