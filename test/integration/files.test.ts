/**
 * The local folder's files over real HTTP: /files/ serves a URL the API signed until it expires, and
 * refuses everything else. A changed signature, key or expiry and a missing signature answer 403, an
 * expired link 403, a signed link to a file that is not there 404, a path that leaves the folder 404.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { progressKey } from '../../src/progress/event';
import { WAIT_MS } from '../helpers/budgets';
import { gql } from '../helpers/graphql';
import { startStack, type Stack } from '../helpers/stack';
import { GenerationDoc } from './documents';
import { events, generate, watch } from './helpers';

describe('local files behind signed URLs', () => {
  let stack: Stack;
  let id: string;
  let token: string;
  let url: URL;
  let thumbnailUrl: URL;
  beforeAll(async () => {
    stack = await startStack({ simulator: { stepMs: 5 } });
    const user = await stack.createUser(1);
    token = user.token;
    ({ id } = await generate(stack, token, { steps: 3 }));
    const last = events(await watch(stack.baseUrl, id, token).done).pop()!;
    expect(last.status).toBe('SUCCEEDED');
    url = new URL(last.images[0]!.url);
    thumbnailUrl = new URL(last.images[0]!.thumbnailUrl);
  });
  afterAll(async () => stack?.close());

  const status = async (u: URL | string) => (await fetch(u)).status;
  const withQuery = (u: URL, change: Record<string, string | null>) => {
    const changed = new URL(u);
    for (const [k, v] of Object.entries(change)) {
      if (v === null) changed.searchParams.delete(k);
      else changed.searchParams.set(k, v);
    }
    return changed;
  };

  it('serves the signed URL, privately cached for no longer than the link lives', async () => {
    expect(url.pathname).toBe(`/files/generations/${id}/0.webp`);
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/webp');
    const maxAge = Number(/^private, max-age=(\d+), immutable$/.exec(res.headers.get('cache-control') ?? '')?.[1]);
    expect(maxAge).toBeGreaterThan(0);
    expect(maxAge).toBeLessThanOrEqual(stack.config.storage.urlTtlS);
    expect(await status(thumbnailUrl)).toBe(200);
  });

  it('refuses a changed signature, another key, a moved expiry or no signature with 403; a missing file is 404', async () => {
    const signature = url.searchParams.get('signature')!;
    const flipped = `${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`;
    expect(await status(withQuery(url, { signature: flipped }))).toBe(403);
    expect(await status(withQuery(url, { expires: String(Number(url.searchParams.get('expires')) + 86_400) }))).toBe(403);
    expect(await status(withQuery(url, { signature: null }))).toBe(403);
    expect(await status(`${url.origin}${url.pathname}`)).toBe(403);
    // The image's signature does not open its thumbnail.
    expect(await status(`${thumbnailUrl.origin}${thumbnailUrl.pathname}${url.search}`)).toBe(403);
    const res = await fetch(withQuery(url, { signature: flipped }));
    expect(await res.json()).toEqual({ error: 'this link is not valid' });

    // A link the API signed, to a file that does not exist.
    expect(await status(await stack.imageUrls.url(`generations/${randomUUID()}/0.webp`))).toBe(404);
    // The path checks come first, as before: nothing outside the folder, signed or not.
    expect(await status(`${url.origin}/files/..%2f..%2fetc%2fpasswd${url.search}`)).toBe(404);
  });

  it('a snapshot published before URLs were made per answer (URLs, no keys) is answered from Postgres', async () => {
    const key = progressKey(stack.config.redis.prefix, id);
    const snapshot = JSON.parse((await stack.redis.hget(key, 'data'))!) as { images: Array<Record<string, unknown>> };
    snapshot.images = snapshot.images.map(({ key: _k, thumbnailKey: _t, ...rest }) => ({ ...rest, url: `${url.origin}${url.pathname}`, thumbnailUrl: 'old' }));
    await stack.redis.hset(key, 'data', JSON.stringify(snapshot));
    const q = await gql(stack.baseUrl, GenerationDoc, { id }, token);
    expect(q.errors).toBeUndefined();
    const again = new URL(q.data!.generation!.images[0]!.url);
    expect(again.pathname).toBe(url.pathname);
    expect(await status(again)).toBe(200);
  });

  it('a link stops working after IMAGE_URL_TTL_S (403), while a longer-lived one for the same file still works', async () => {
    const shortLived = await stack.startApi({ IMAGE_URL_TTL_S: '1' });
    const q = await gql(shortLived.baseUrl, GenerationDoc, { id }, token);
    const short = new URL(q.data!.generation!.images[0]!.url);
    expect(short.pathname).toBe(url.pathname);
    // Wait for the state (refused as expired), not for a time: a busy machine may take its time.
    await vi.waitFor(
      async () => {
        const res = await fetch(short);
        expect(res.status).toBe(403);
        expect(await res.json()).toEqual({ error: 'this link has expired' });
      },
      { timeout: WAIT_MS, interval: 200 },
    );
    expect(await status(url)).toBe(200);
  });
});
