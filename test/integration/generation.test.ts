import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql } from '../helpers/graphql';
import { PROCESSES_TEST_MS } from '../helpers/budgets';
import { startStack, type Stack } from '../helpers/stack';
import { GenerationDoc, MeDoc } from './documents';
import { events, expectWellFormedStream, generate, HAPPY_ORDER, statusPath, watch } from './helpers';

describe('a generation, end to end over real HTTP', () => {
  let stack: Stack;
  beforeAll(async () => {
    // No worker at first: the first test watches the generation while it is still queued.
    stack = await startStack({ worker: false, simulator: { stepMs: 10 } });
  });
  afterAll(async () => stack?.close());

  it('streams QUEUED → STARTED → GENERATING (steps) → POST_PROCESSING → UPLOADING → SUCCEEDED, and the image is a clean WebP', async () => {
    const user = await stack.createUser(5);
    const { id, result } = await generate(stack, user.token, { steps: 30, width: 256, height: 192, seed: 1234 });
    expect(result.data?.generateImage).toMatchObject({ status: 'QUEUED', creditsReserved: 1 });
    expect(await stack.credits(user.userId)).toBe(4);

    const sub = watch(stack.baseUrl, id, user.token);
    const first = await sub.waitFor(() => true);
    expect(first.data?.generationProgress).toMatchObject({ status: 'QUEUED', queuePosition: 1 });
    expect(first.data?.generationProgress.etaSeconds).toBeGreaterThan(0);

    await stack.startWorker();
    const list = events(await sub.done);
    expectWellFormedStream(list, id);
    expect(statusPath(list), JSON.stringify(list.map((e) => [e.seq, e.status, e.progress]))).toEqual(HAPPY_ORDER);
    const generating = list.filter((e) => e.status === 'GENERATING');
    expect(generating.length).toBeGreaterThanOrEqual(3);
    expect(new Set(generating.map((e) => e.step)).size).toBeGreaterThanOrEqual(3);
    for (const e of generating) {
      expect(e.totalSteps).toBe(30);
      expect(e.step).toBeGreaterThanOrEqual(0);
      expect(e.step).toBeLessThanOrEqual(30);
    }
    expect(generating.some((e) => e.preview?.startsWith('data:image/webp;base64,'))).toBe(true);

    const last = list[list.length - 1]!;
    expect(last).toMatchObject({ status: 'SUCCEEDED', progress: 1, error: null, attempt: 1 });
    expect(last.images).toHaveLength(1);
    const image = last.images[0]!;
    expect(image).toMatchObject({ width: 256, height: 192, seed: 1234 });
    expect(image.blurhash.length).toBeGreaterThan(5);

    const res = await fetch(image.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/webp');
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('RIFF');
    expect(bytes.subarray(8, 12).toString('latin1')).toBe('WEBP');
    expect(bytes.includes('parameters')).toBe(false);
    expect(bytes.includes('red fox')).toBe(false);
    const meta = await sharp(bytes).metadata();
    expect(meta).toMatchObject({ format: 'webp', width: 256, height: 192 });
    expect(meta.exif).toBeUndefined();
    const thumb = await fetch(image.thumbnailUrl);
    expect(thumb.status).toBe(200);

    const q = await gql(stack.baseUrl, GenerationDoc, { id }, user.token);
    expect(q.data?.generation).toMatchObject({ id, status: 'SUCCEEDED', progress: 1, attempts: 1, creditsReserved: 1, error: null });
    // URLs are made for each answer (they expire): the query's names the same file and downloads it.
    const again = q.data?.generation?.images[0]?.url;
    expect(new URL(again!).pathname).toBe(new URL(image.url).pathname);
    expect(Buffer.from(await (await fetch(again!)).arrayBuffer()).equals(bytes)).toBe(true);
    expect(await stack.credits(user.userId)).toBe(4);
  });

  it('a subscriber that joins mid-way gets the current state first, then the rest; one that joins after the end gets the final state', async () => {
    const user = await stack.createUser(5);
    stack.sim.setStepMs(15);
    const { id } = await generate(stack, user.token, { steps: 40 });
    const early = watch(stack.baseUrl, id, user.token);
    const seen = await early.waitFor((r) => r.data?.generationProgress.status === 'GENERATING');
    const late = watch(stack.baseUrl, id, user.token);
    const lateList = events(await late.done);
    const earlyList = events(await early.done);
    expectWellFormedStream(lateList, id);
    expectWellFormedStream(earlyList, id);
    expect(lateList[0]!.seq).toBeGreaterThanOrEqual(seen.data!.generationProgress.seq);
    expect(lateList[lateList.length - 1]).toEqual(earlyList[earlyList.length - 1]);

    const after = events(await watch(stack.baseUrl, id, user.token).done);
    expect(after).toHaveLength(1);
    expect(after[0]).toMatchObject({ status: 'SUCCEEDED', progress: 1 });
    expect(after[0]!.images).toHaveLength(1);
    stack.sim.setStepMs(10);
  });

  it('a subscriber on a second API process sees the whole generation', async () => {
    const second = await stack.spawnApi();
    try {
      const user = await stack.createUser(2);
      const { id } = await generate(stack, user.token, { steps: 20 });
      const list = events(await watch(second.baseUrl, id, user.token).done);
      expectWellFormedStream(list, id);
      expect(list[list.length - 1]!.status).toBe('SUCCEEDED');
      const imageUrl = list[list.length - 1]!.images[0]!.url;
      expect((await fetch(imageUrl)).status).toBe(200);
    } finally {
      await second.stop();
    }
    // A spawned API's start alone has taken past the default 30 s with the whole suite running.
  }, PROCESSES_TEST_MS);

  it("another user's generation is answered as not found", async () => {
    const owner = await stack.createUser(2);
    const other = await stack.createUser(2);
    const { id } = await generate(stack, owner.token, { steps: 5 });
    const q = await gql(stack.baseUrl, GenerationDoc, { id }, other.token);
    expect(q.errors).toBeUndefined();
    expect(q.data?.generation).toBeNull();
    const sub = await watch(stack.baseUrl, id, other.token).done;
    expect(sub).toHaveLength(1);
    expect(sub[0]!.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    // The same answer as for an id that does not exist at all.
    const missing = await watch(stack.baseUrl, '00000000-0000-4000-8000-000000000000', other.token).done;
    expect(missing[0]!.errors?.[0]?.message.replace(/Generation \S+/, '')).toBe(sub[0]!.errors?.[0]?.message.replace(/Generation \S+/, ''));
    expect((await gql(stack.baseUrl, GenerationDoc, { id: 'not-a-uuid' }, other.token)).data?.generation).toBeNull();
    await watch(stack.baseUrl, id, owner.token).done;
  });

  it('requires a token', async () => {
    const res = await gql(stack.baseUrl, MeDoc, {});
    expect(res.errors).toBeUndefined();
    expect(res.data?.me).toBeNull();
    // A token that was sent but is not valid is not the same as no token: a client can tell a typo
    // (or a revoked token) from being signed out.
    const unknown = await gql(stack.baseUrl, MeDoc, {}, 'sdk_typo');
    expect(unknown.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect(unknown.data?.me ?? null).toBeNull();
    const user = await stack.createUser(1);
    await stack.tdb.db('api_tokens').where({ user_id: user.userId }).update({ revoked_at: stack.tdb.db.fn.now() });
    const revoked = await gql(stack.baseUrl, MeDoc, {}, user.token);
    expect(revoked.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    // A header that is not `Bearer <token>` at all is a mistake too, not anonymity.
    const codeWith = async (authorization: string, query: string) => {
      const res = await fetch(`${stack.baseUrl}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization },
        body: JSON.stringify({ query }),
      });
      return ((await res.json()) as { errors?: Array<{ extensions?: { code?: string } }> }).errors?.[0]?.extensions?.code;
    };
    expect(await codeWith('Token sdk_x', '{ me { email } }')).toBe('UNAUTHENTICATED');
    expect(await codeWith('Bearer sdk_wrong', 'mutation { generateImage(input: {prompt: "x"}) { id } }')).toBe('UNAUTHENTICATED');
  });
});
