/** The storage adapters the configuration asks for: S3 when S3_* is set, else the local folder. */
import { requireSetting, type Config } from '../config';
import { LocalFileUrls } from './localFileUrls';
import { LocalFolderStorage } from './localFolder';
import { S3Storage } from './s3';
import type { ImageUrls, ObjectStorage } from './storage';

/** Where a worker writes images. The caller owns it (close() it after the worker). */
export function createObjectStorage(config: Config): ObjectStorage {
  const { s3, dir, urlTtlS } = config.storage;
  return s3 ? new S3Storage(s3, urlTtlS) : new LocalFolderStorage(dir);
}

/**
 * How the API turns storage keys into URLs. For the local folder it needs FILES_URL_SECRET and
 * throws a ConfigError naming it when unset. The caller owns it (close() it after the API).
 */
export function createImageUrls(config: Config): ImageUrls {
  const { s3, dir, urlTtlS, filesUrlSecret } = config.storage;
  if (s3) return new S3Storage(s3, urlTtlS);
  const secret = requireSetting(
    filesUrlSecret,
    'FILES_URL_SECRET',
    'the API signs the URLs of the local folder\'s files with it (the same value on every API process, e.g. `openssl rand -hex 32`), or set S3_* to use object storage',
  );
  return new LocalFileUrls(dir, config.http.publicUrl, secret, urlTtlS);
}

/**
 * The origins the image URLs handed to clients point at, for the web page's Content-Security-Policy
 * (`img-src`): PUBLIC_URL's for the local folder; for S3 the public base URL's, or the endpoint's
 * (path style) or the bucket's host under it (virtual-hosted style, the SDK's default).
 */
export function imageOrigins(config: Config): string[] {
  const s3 = config.storage.s3;
  if (!s3) return [new URL(config.http.publicUrl).origin];
  if (s3.publicBaseUrl) return [new URL(s3.publicBaseUrl).origin];
  const endpoint = new URL(s3.endpoint);
  if (s3.forcePathStyle) return [endpoint.origin];
  return [`${endpoint.protocol}//${s3.bucket}.${endpoint.host}`];
}
