/**
 * The messages that cross the thread boundary between `PostprocessPool` (main thread) and
 * `workers/postprocess.thread.ts`. One registry, used by both sides, so a task kind and its result
 * cannot drift apart. Everything here is plain data: numbers, strings and byte arrays that are
 * transferred, never copied twice.
 */

/** Re-encode a finished generation: strip metadata, WebP, thumbnail, blurhash, checksum. */
export interface PostprocessTask {
  kind: 'postprocess';
  /** The encoded image (A1111 sends PNG). Transferred: the sender must not use it afterwards. */
  png: ArrayBuffer | Uint8Array;
  /** WebP quality, 1–100. */
  webpQuality: number;
  /** The thumbnail fits inside thumbnailSize×thumbnailSize (never enlarged). */
  thumbnailSize: number;
}

export interface PostprocessResult {
  webp: Uint8Array;
  thumbnail: Uint8Array;
  width: number;
  height: number;
  thumbnailWidth: number;
  thumbnailHeight: number;
  blurhash: string;
  /** Lower-case hex SHA-256 of `webp`. */
  sha256: string;
  /** `webp.byteLength`. */
  bytes: number;
}

/** Shrink a live preview (PNG or JPEG from A1111's progress endpoint) to a small data URI. */
export interface PreviewTask {
  kind: 'preview';
  /** Transferred, like `PostprocessTask.png`. */
  image: ArrayBuffer | Uint8Array;
  /** The preview fits inside size×size (never enlarged). */
  size: number;
}

export interface PreviewResult {
  /** `data:image/webp;base64,…` */
  dataUri: string;
}

/** Task kind → payload and result. */
export interface ImagingTasks {
  postprocess: { task: PostprocessTask; result: PostprocessResult };
  preview: { task: PreviewTask; result: PreviewResult };
}

export type ImagingTaskKind = keyof ImagingTasks;
export type ImagingTask = ImagingTasks[ImagingTaskKind]['task'];
export type ImagingResult<K extends ImagingTaskKind = ImagingTaskKind> = ImagingTasks[K]['result'];
