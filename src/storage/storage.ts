/**
 * Where finished images live, and how clients reach them. The local folder is the embedded default;
 * S3-compatible object storage is the production one. Objects are private either way: a client gets
 * a URL made when the API answers, which expires IMAGE_URL_TTL_S later (S3 presigned, or signed by
 * the API for the local folder), or a permanent one under a configured public base URL.
 */
export interface ObjectStorage {
  /**
   * Writes an object; writing the same key twice leaves one object (uploads are retried). An abort
   * of `signal` (the job's hard time limit) stops the write and rejects.
   */
  put(key: string, body: Buffer, contentType: string, signal?: AbortSignal): Promise<void>;
  /** Releases connections, if the adapter holds any. */
  close?(): void;
}

/** Turns storage keys into the URLs of one answer; only the API makes them, never stored. */
export interface ImageUrls {
  url(key: string): Promise<string>;
  close?(): void;
}

/**
 * Objects are written once under keys that never change content. Stored on every object, so a CDN
 * or public bucket (S3_PUBLIC_BASE_URL) may cache it for a year; signed URLs override it with a
 * private equivalent (privateCacheControl) so no shared cache keeps serving a link after it expired.
 */
export const IMMUTABLE_CACHE_CONTROL = 'public, max-age=31536000, immutable';

/** The Cache-Control of a response to a signed URL that works for `seconds` more. */
export const privateCacheControl = (seconds: number) => `private, max-age=${Math.max(0, seconds)}, immutable`;

/** Object keys are derived from the generation, so a re-delivered upload writes the same keys. */
export const imageKeys = (generationId: string, index: number) => ({
  image: `generations/${generationId}/${index}.webp`,
  thumbnail: `generations/${generationId}/${index}.thumb.webp`,
});
