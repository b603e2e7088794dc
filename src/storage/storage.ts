/** Where finished images live. The local folder adapter is the embedded default; S3 comes next. */
export interface ObjectStorage {
  /**
   * Writes an object; writing the same key twice leaves one object (uploads are retried). An abort
   * of `signal` (the job's hard time limit) stops the write and rejects.
   */
  put(key: string, body: Buffer, contentType: string, signal?: AbortSignal): Promise<void>;
  /** The public URL a client fetches the object from. */
  url(key: string): string;
}

/** Object keys are derived from the generation, so a re-delivered upload writes the same keys. */
export const imageKeys = (generationId: string, index: number) => ({
  image: `generations/${generationId}/${index}.webp`,
  thumbnail: `generations/${generationId}/${index}.thumb.webp`,
});
