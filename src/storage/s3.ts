/**
 * S3-compatible object storage (Yandex Object Storage, AWS, MinIO): PutObject for objects up to
 * S3_MULTIPART_THRESHOLD_BYTES, a multipart upload in parts of that size above it, and presigned GET
 * URLs that expire IMAGE_URL_TTL_S after the answer that carries them (or permanent URLs under
 * S3_PUBLIC_BASE_URL). The client builds no connection until the first call.
 */
import { GetObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Config } from '../config';
import { JobError } from '../jobs/errors';
import { IMMUTABLE_CACHE_CONTROL, privateCacheControl, type ImageUrls, type ObjectStorage } from './storage';

export type S3Settings = NonNullable<Config['storage']['s3']>;

/** Parts of one multipart upload sent at once (lib-storage's default). */
const MULTIPART_QUEUE_SIZE = 4;
/** HTTP statuses that say "try again later" rather than "this request is wrong". */
const RETRY_LATER_STATUSES = new Set([408, 429]);

export function createS3Client(s: S3Settings): S3Client {
  return new S3Client({
    endpoint: s.endpoint,
    region: s.region,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    forcePathStyle: s.forcePathStyle,
    // The SDK's defaults (WHEN_SUPPORTED) add CRC32 checksums to every upload and send a streamed
    // body in aws-chunked framing; stores that do not speak it (s3rver, older MinIO and others) keep
    // the framing as part of the object, silently. Checksums only where the S3 API requires them.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

export class S3Storage implements ObjectStorage, ImageUrls {
  readonly client: S3Client;

  constructor(
    private readonly s: S3Settings,
    private readonly urlTtlS: number,
  ) {
    this.client = createS3Client(s);
  }

  async put(key: string, body: Buffer, contentType: string, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const params = { Bucket: this.s.bucket, Key: key, Body: body, ContentType: contentType, CacheControl: IMMUTABLE_CACHE_CONTROL };
    try {
      if (body.length <= this.s.multipartThresholdBytes) {
        await this.client.send(new PutObjectCommand(params), { abortSignal: signal });
        return;
      }
      const upload = new Upload({
        client: this.client,
        params,
        partSize: this.s.multipartThresholdBytes,
        queueSize: MULTIPART_QUEUE_SIZE,
        // An upload that fails or is aborted is aborted at the store too: no orphaned parts to pay for.
        leavePartsOnError: false,
      });
      const abort = () => void upload.abort();
      signal?.addEventListener('abort', abort, { once: true });
      try {
        await upload.done();
      } finally {
        signal?.removeEventListener('abort', abort);
      }
    } catch (err) {
      // An abort is the job's time limit speaking, not the store's failure.
      signal?.throwIfAborted();
      throw storageError(err);
    }
  }

  async url(key: string): Promise<string> {
    if (this.s.publicBaseUrl) return `${this.s.publicBaseUrl}/${key}`;
    const command = new GetObjectCommand({
      Bucket: this.s.bucket,
      Key: key,
      ResponseCacheControl: privateCacheControl(this.urlTtlS),
    });
    return getSignedUrl(this.client, command, { expiresIn: this.urlTtlS });
  }

  close(): void {
    this.client.destroy();
  }
}

/**
 * The store's answer as a job error: unavailable (5xx, throttling: retried) or refused (a 4xx such
 * as AccessDenied or NoSuchBucket: a setting is wrong, retrying will not help). Other errors
 * (connection refused, reset) pass through to the job's error table as they are.
 */
function storageError(err: unknown): unknown {
  if (!(err instanceof S3ServiceException)) return err;
  const status = err.$metadata.httpStatusCode;
  if (err.$fault === 'server' || err.$retryable || (status !== undefined && RETRY_LATER_STATUSES.has(status))) {
    return new JobError('STORAGE_UNAVAILABLE', 'The image storage is unavailable; the upload will be retried.', { cause: err });
  }
  return new JobError('STORAGE_REJECTED', `The image storage refused the upload (${err.name}); check the S3_* settings.`, { cause: err });
}
