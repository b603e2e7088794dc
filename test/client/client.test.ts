/**
 * The client library (client/) over real HTTP against the test stack: generate with progress, watch
 * a generation made elsewhere, cancel through an abort, the service's errors as codes, and a
 * progress stream cut by the network in the middle, which the client opens again without losing or
 * repeating a state. The built package (client/dist, made by `npm test` before this runs) loads in
 * Node as it is published.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, SdJobsError, type Progress } from '../../client/src/index';
import { gql } from '../helpers/graphql';
import { startStack, type Stack } from '../helpers/stack';
import { CancelDoc, GenerateDoc } from '../integration/documents';
import { HAPPY_ORDER } from '../integration/helpers';

/** A TCP proxy in front of the API whose connections the test can cut, as a dropped network would. */
async function startProxy(target: string) {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get connections() {
      return connections;
    },
    /** Cuts every open connection, both ways. */
    cut() {
      for (const s of sockets) s.destroy();
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('the client library', () => {
  let stack: Stack;
  let token: string;
  beforeAll(async () => {
    stack = await startStack();
    ({ token } = await stack.createUser(20));
  });
  afterAll(() => stack?.close());

  it('generates with live progress and resolves with the finished images', async () => {
    const client = createClient({ url: stack.baseUrl, token });
    const seen: Progress[] = [];
    const done = await client.generate({ prompt: 'a lighthouse at dusk', steps: 6, width: 64, height: 64 }, { onProgress: (p) => seen.push(p) });
    expect(done.status).toBe('SUCCEEDED');
    expect(done.images).toHaveLength(1);
    const image = await fetch(done.images[0]!.url);
    expect(image.headers.get('content-type')).toBe('image/webp');
    // Every state in order, seq rising, the last one the answer.
    expect(seen.at(-1)).toEqual(done);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.seq).toBeGreaterThan(seen[i - 1]!.seq);
    const path = seen.map((p) => p.status).filter((s, i, all) => i === 0 || all[i - 1] !== s);
    expect(HAPPY_ORDER.slice(HAPPY_ORDER.indexOf(path[0]!))).toEqual(path);
  });

  it('watches a generation made elsewhere as an async iterator that ends after its final state', async () => {
    const made = await gql(stack.baseUrl, GenerateDoc, { input: { prompt: 'made by another client', steps: 4, width: 64, height: 64 } }, token);
    const id = made.data!.generateImage.id;
    const states: string[] = [];
    for await (const p of createClient({ url: `${stack.baseUrl}/graphql`, token }).watch(id)) states.push(p.status);
    expect(states.at(-1)).toBe('SUCCEEDED');
  });

  it('cancels the generation when the caller aborts, and rejects', async () => {
    const client = createClient({ url: stack.baseUrl, token });
    stack.sim.pause();
    const abort = new AbortController();
    let id: string | undefined;
    const running = client.generate({ prompt: 'never mind', steps: 20, width: 64, height: 64 }, {
      signal: abort.signal,
      onProgress: (p) => {
        id = p.generationId;
        if (p.status === 'GENERATING' || p.status === 'STARTED') abort.abort();
      },
    });
    await expect(running).rejects.toThrow();
    stack.sim.resume();
    const final = await createClient({ url: stack.baseUrl, token }).watch(id!).next();
    expect(final.value).toMatchObject({ status: 'CANCELLED' });
  });

  it("turns the service's errors into codes: a bad token, bad input, an unknown id, a generation cancelled elsewhere", async () => {
    await expect(createClient({ url: stack.baseUrl, token: 'sdk_wrong' }).generate({ prompt: 'x' })).rejects.toMatchObject({ name: 'SdJobsError', code: 'UNAUTHENTICATED' });
    const client = createClient({ url: stack.baseUrl, token });
    await expect(client.generate({ prompt: 'x', width: 63 })).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
    const watching = client.watch('00000000-0000-4000-8000-000000000000').next();
    await expect(watching).rejects.toMatchObject({ code: 'NOT_FOUND' });
    // Cancelled by someone else while the client waits: rejected with CANCELLED and the final state.
    stack.sim.pause();
    const seenStart = new Promise<string>((resolve) => {
      const pending = client.generate({ prompt: 'cancelled elsewhere', steps: 20, width: 64, height: 64 }, { onProgress: (p) => resolve(p.generationId) });
      pending.catch((err: unknown) => (cancelled = err));
    });
    let cancelled: unknown;
    const id = await seenStart;
    await gql(stack.baseUrl, CancelDoc, { id }, token);
    stack.sim.resume();
    await expect.poll(() => cancelled).toBeInstanceOf(SdJobsError);
    expect(cancelled).toMatchObject({ code: 'CANCELLED', generation: { status: 'CANCELLED' } });
  });

  it('opens a stream that the network cut mid-generation again, and misses no state and repeats none', async () => {
    const proxy = await startProxy(stack.baseUrl);
    try {
      const client = createClient({ url: proxy.url, token, reconnect: { initialDelayMs: 20 } });
      stack.sim.pause();
      const seen: Progress[] = [];
      let generating!: () => void;
      const isGenerating = new Promise<void>((resolve) => (generating = resolve));
      const finished = client.generate({ prompt: 'through a bad network', steps: 6, width: 64, height: 64 }, {
        onProgress: (p) => {
          seen.push(p);
          if (p.status === 'STARTED' || p.status === 'GENERATING') generating();
        },
      });
      await isGenerating;
      const before = proxy.connections;
      proxy.cut();
      stack.sim.resume();
      const done = await finished;
      expect(done.status).toBe('SUCCEEDED');
      expect(proxy.connections).toBeGreaterThan(before);
      for (let i = 1; i < seen.length; i++) expect(seen[i]!.seq).toBeGreaterThan(seen[i - 1]!.seq);
      expect(seen.filter((p) => p.status === 'SUCCEEDED')).toHaveLength(1);
    } finally {
      stack.sim.resume();
      await proxy.close();
    }
  });

  it('gives up with STREAM_LOST when the service cannot be reached again', async () => {
    const proxy = await startProxy(stack.baseUrl);
    const made = await gql(stack.baseUrl, GenerateDoc, { input: { prompt: 'unreachable', steps: 3, width: 64, height: 64 } }, token);
    await proxy.close();
    const client = createClient({ url: proxy.url, token, reconnect: { initialDelayMs: 1, maxDelayMs: 2, maxAttempts: 3 } });
    await expect(client.watch(made.data!.generateImage.id).next()).rejects.toMatchObject({ code: 'STREAM_LOST' });
  });

  it('loads from its built package (client/dist) in Node', async () => {
    // Named at run time: the build (npm test makes it after type-checking) is not there to type-check against.
    const builtUrl = new URL('../../client/dist/index.js', import.meta.url).href;
    const built = (await import(builtUrl)) as typeof import('../../client/src/index');
    const done = await built.createClient({ url: stack.baseUrl, token }).generate({ prompt: 'from the package', steps: 2, width: 64, height: 64 });
    expect(done.status).toBe('SUCCEEDED');
  });
});
