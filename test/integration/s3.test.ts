/**
 * S3 object storage against a real S3 protocol server (s3rver, in this process): a generation's
 * images land in the bucket byte for byte with their content type and cache-control, the API hands
 * out presigned URLs made per answer that download them and stop working after IMAGE_URL_TTL_S, a
 * large object goes up in parts, an abort stops an upload, and a re-delivered upload leaves the same
 * objects.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, NotFound, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { stageImagesForUpload } from '../../src/generation/images';
import { findGeneration } from '../../src/generation/repository';
import { JobProducer } from '../../src/jobs/queues';
import type { JobContext } from '../../src/jobs/runner';
import { createLogger } from '../../src/logger';
import { ProgressPublisher } from '../../src/progress/publisher';
import { createS3Client, S3Storage } from '../../src/storage/s3';
import { IMMUTABLE_CACHE_CONTROL, imageKeys } from '../../src/storage/storage';
import { uploadToCloudProcessor } from '../../workers/processors/uploadToCloud';
import { WAIT_MS } from '../helpers/budgets';
import { gql } from '../helpers/graphql';
import { startTestS3, type TestS3 } from '../helpers/s3';
import { startStack, type Stack } from '../helpers/stack';
import { GenerationDoc } from './documents';
import { events, expectWellFormedStream, generate, testInput, watch } from './helpers';

const MiB = 1024 * 1024;
/** S3's smallest part, and the smallest threshold the config allows. */
const PART_BYTES = 5 * MiB;

const INPUT = testInput('staged by the test', { steps: 2, seed: 1 });

async function getObject(client: S3Client, bucket: string, key: string) {
  const o = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return { bytes: Buffer.from(await o.Body!.transformToByteArray()), contentType: o.ContentType, cacheControl: o.CacheControl };
}

async function keysUnder(client: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (listed.Contents ?? []).map((o) => o.Key!).sort();
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('S3 object storage', () => {
  let s3: TestS3;
  let stack: Stack;
  let client: S3Client;
  beforeAll(async () => {
    s3 = await startTestS3();
    stack = await startStack({ env: s3.env, simulator: { stepMs: 5 } });
    client = createS3Client(stack.config.storage.s3!);
  });
  afterAll(async () => {
    client?.destroy();
    await stack?.close();
    await s3?.close();
  });

  /** A finished generation, with the URLs of its last event. */
  let done: { id: string; token: string; url: string; thumbnailUrl: string } | undefined;

  it('stores a generation\'s images byte for byte with content type and cache-control, and hands out presigned URLs that download them', async () => {
    // Flexible checksums (and the aws-chunked framing a streamed body gets with them) are what stores
    // like s3rver keep inside the object: the uploads must send only what S3 requires.
    const checksummed: string[] = [];
    s3.onRequest((r, headers) => {
      const names = Object.keys(headers).filter((h) => h.startsWith('x-amz-checksum') || h === 'x-amz-sdk-checksum-algorithm' || h === 'x-amz-trailer');
      if (names.length > 0 || /aws-chunked/.test(String(headers['content-encoding']))) checksummed.push(`${r} ${names.join(',')}`);
    });
    const user = await stack.createUser(2);
    const { id } = await generate(stack, user.token, { steps: 4, width: 128, height: 96 });
    const list = events(await watch(stack.baseUrl, id, user.token).done);
    expectWellFormedStream(list, id);
    const last = list[list.length - 1]!;
    expect(last.status).toBe('SUCCEEDED');
    const image = last.images[0]!;
    done = { id, token: user.token, url: image.url, thumbnailUrl: image.thumbnailUrl };

    const keys = imageKeys(id, 0);
    expect(await keysUnder(client, s3.bucket, `generations/${id}/`)).toEqual([keys.image, keys.thumbnail].sort());
    const row = await stack.tdb.db('generated_images').where({ generation_id: id }).first();
    expect(row).toMatchObject({ storage_key: keys.image, thumbnail_key: keys.thumbnail, url: null, thumbnail_url: null });
    const stored = await getObject(client, s3.bucket, keys.image);
    expect(stored).toMatchObject({ contentType: 'image/webp', cacheControl: IMMUTABLE_CACHE_CONTROL });
    // Exactly the bytes post-processing made (no aws-chunked framing around them).
    expect(stored.bytes.length).toBe(row.bytes);
    expect(sha256(stored.bytes)).toBe(row.sha256);
    expect(stored.bytes.subarray(0, 4).toString('latin1')).toBe('RIFF');
    expect(await getObject(client, s3.bucket, keys.thumbnail)).toMatchObject({ contentType: 'image/webp', cacheControl: IMMUTABLE_CACHE_CONTROL });
    expect(checksummed).toEqual([]);
    // Small objects go up in one PUT.
    expect(s3.requests.filter((r) => r.includes(`/${keys.image}`) && r.startsWith('PUT '))).toHaveLength(1);
    expect(s3.requests.some((r) => r.includes(`/${keys.image}?uploads`))).toBe(false);

    const url = new URL(image.url);
    expect(`${url.origin}${url.pathname}`).toBe(`${s3.endpoint}/${s3.bucket}/${keys.image}`);
    expect(url.searchParams.get('X-Amz-Expires')).toBe('3600');
    expect(url.searchParams.get('X-Amz-Signature')).toMatch(/^[0-9a-f]{64}$/);
    const res = await fetch(image.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/webp');
    // A signed link is cached privately and no longer than it lives.
    expect(res.headers.get('cache-control')).toBe('private, max-age=3600, immutable');
    expect(Buffer.from(await res.arrayBuffer()).equals(stored.bytes)).toBe(true);
    const thumb = await fetch(image.thumbnailUrl);
    expect(thumb.status).toBe(200);
    expect(Buffer.from(await thumb.arrayBuffer()).equals((await getObject(client, s3.bucket, keys.thumbnail)).bytes)).toBe(true);

    // The query signs its own URLs for the same objects.
    const q = await gql(stack.baseUrl, GenerationDoc, { id }, user.token);
    const again = q.data?.generation?.images[0]?.url;
    expect(new URL(again!).pathname).toBe(url.pathname);
    expect(Buffer.from(await (await fetch(again!)).arrayBuffer()).equals(stored.bytes)).toBe(true);
  });

  it('a URL stops working after IMAGE_URL_TTL_S, while a longer-lived one for the same object still works; S3_PUBLIC_BASE_URL gives permanent URLs', async () => {
    expect(done).toBeDefined();
    const { id, token } = done!;
    const shortLived = await stack.startApi({ IMAGE_URL_TTL_S: '1' });
    const q = await gql(shortLived.baseUrl, GenerationDoc, { id }, token);
    const url = q.data?.generation?.images[0]?.url;
    expect(new URL(url!).searchParams.get('X-Amz-Expires')).toBe('1');
    // Wait for the state (refused), not for a time: a busy machine may take its time to get there.
    await vi.waitFor(
      async () => {
        const res = await fetch(url!);
        expect(res.status).toBe(403);
        expect(await res.text()).toMatch(/Request has expired/);
      },
      { timeout: WAIT_MS, interval: 200 },
    );
    expect((await fetch(done!.url)).status).toBe(200);

    const publicBase = `${s3.endpoint}/${s3.bucket}`;
    const cdn = await stack.startApi({ S3_PUBLIC_BASE_URL: publicBase });
    const permanent = (await gql(cdn.baseUrl, GenerationDoc, { id }, token)).data?.generation?.images[0];
    expect(permanent?.url).toBe(`${publicBase}/${imageKeys(id, 0).image}`);
    const res = await fetch(permanent!.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe(IMMUTABLE_CACHE_CONTROL);
  });

  it('a large object goes up in parts, with its content type and cache-control, byte for byte', async () => {
    const storage = new S3Storage({ ...stack.config.storage.s3!, multipartThresholdBytes: PART_BYTES }, 60);
    try {
      const key = `large/${randomUUID()}.bin`;
      const body = randomBytes(2 * PART_BYTES + 123_456);
      await storage.put(key, body, 'application/octet-stream');
      const mine = s3.requests.filter((r) => r.includes(`/${key}`));
      expect(mine.filter((r) => r.startsWith('POST ') && r.includes('?uploads'))).toHaveLength(1);
      const parts = mine.filter((r) => r.startsWith('PUT ')).map((r) => new URL(r.split(' ')[1]!, s3.endpoint).searchParams.get('partNumber'));
      expect(parts.sort()).toEqual(['1', '2', '3']);
      expect(mine.filter((r) => r.startsWith('POST ') && r.includes('uploadId='))).toHaveLength(1);
      const stored = await getObject(client, s3.bucket, key);
      expect(stored).toMatchObject({ contentType: 'application/octet-stream', cacheControl: IMMUTABLE_CACHE_CONTROL });
      expect(stored.bytes.length).toBe(body.length);
      expect(stored.bytes.equals(body)).toBe(true);
    } finally {
      storage.close();
    }
  });

  it('an abort stops an upload: no object is left, and a multipart upload is aborted at the store', async () => {
    const storage = new S3Storage({ ...stack.config.storage.s3!, multipartThresholdBytes: PART_BYTES }, 60);
    try {
      const before = new AbortController();
      before.abort(new Error('hard time limit'));
      const seen = s3.requests.length;
      await expect(storage.put(`aborted/${randomUUID()}.bin`, Buffer.from('x'), 'image/webp', before.signal)).rejects.toThrow('hard time limit');
      expect(s3.requests.length).toBe(seen);

      const key = `aborted/${randomUUID()}.bin`;
      const ctl = new AbortController();
      // Abort once the first part reaches the store: mid-upload, whatever the machine's pace.
      s3.onRequest((r) => {
        if (r.startsWith('PUT ') && r.includes(`/${key}?`) && r.includes('partNumber=')) ctl.abort(new Error('hard time limit'));
      });
      await expect(storage.put(key, randomBytes(3 * PART_BYTES), 'application/octet-stream', ctl.signal)).rejects.toThrow('hard time limit');
      await vi.waitFor(() => expect(s3.requests.some((r) => r.startsWith('DELETE ') && r.includes(`/${key}?uploadId=`))).toBe(true), {
        timeout: WAIT_MS,
        interval: 50,
      });
      expect(s3.requests.some((r) => r.startsWith('POST ') && r.includes(`/${key}?uploadId=`))).toBe(false);
      await expect(client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }))).rejects.toBeInstanceOf(NotFound);
    } finally {
      storage.close();
    }
  });

  it('a re-delivered upload (the first delivery died after storing) leaves the same objects and one image row', async () => {
    const { userId } = await stack.createUser(1);
    const id = randomUUID();
    await stack.tdb.db('generations').insert({ id, user_id: userId, status: 'POST_PROCESSING', input: JSON.stringify(INPUT), credits_reserved: 1 });
    const webp = randomBytes(40_000);
    const thumbnail = randomBytes(4_000);
    const staged = { index: 0, webp, thumbnail, width: 64, height: 64, blurhash: 'L00000fQfQfQfQfQfQfQfQfQfQfQ', seed: 1, sha256: sha256(webp) };
    expect(await stageImagesForUpload(stack.tdb.db, id, [staged])).toBe(true);
    const keys = imageKeys(id, 0);
    // The first delivery stored both objects, then its worker died before recording them.
    await stack.storage.put(keys.image, webp, 'image/webp');
    await stack.storage.put(keys.thumbnail, thumbnail, 'image/webp');

    const producer = new JobProducer(stack.config, createLogger('silent'));
    onTestFinished(() => producer.close());
    const processor = uploadToCloudProcessor({
      db: stack.tdb.db,
      publisher: new ProgressPublisher(stack.redis, stack.config.redis.prefix, stack.config.progress.expiresS),
      storage: stack.storage,
      producer,
    });
    const deliver = () => {
      const ctl = new AbortController();
      const ctx: JobContext<'uploadToCloud'> = {
        kind: 'uploadToCloud',
        payload: { generationId: id },
        jobId: id,
        retriesLeft: 0,
        signal: ctl.signal,
        softSignal: new AbortController().signal,
        abort: (failure) => ctl.abort(failure),
        log: createLogger('silent'),
      };
      return processor.run(ctx);
    };
    // The re-delivered copy, then one more after it succeeded.
    await deliver();
    await deliver();

    expect((await findGeneration(stack.tdb.db, id))?.status).toBe('SUCCEEDED');
    expect(await stack.tdb.db('generated_images').where({ generation_id: id })).toHaveLength(1);
    expect(await stack.tdb.db('staged_images').where({ generation_id: id })).toHaveLength(0);
    expect(await keysUnder(client, s3.bucket, `generations/${id}/`)).toEqual([keys.image, keys.thumbnail].sort());
    expect((await getObject(client, s3.bucket, keys.image)).bytes.equals(webp)).toBe(true);
    expect((await getObject(client, s3.bucket, keys.thumbnail)).bytes.equals(thumbnail)).toBe(true);
  });
});
