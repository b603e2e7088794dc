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
  /** Where the thread keeps a copy of `png` for a second run (./keptInput.ts); absent on a second run. */
  keep?: SharedArrayBuffer | undefined;
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
  /** As PostprocessTask.keep. */
  keep?: SharedArrayBuffer | undefined;
}

export interface PreviewResult {
  /** `data:image/webp;base64,…` */
  dataUri: string;
}

/** How a fault task ends its thread: an uncaught error, process.exit(), or a heap that outgrows its limit. */
export type FaultMode = 'probe' | 'crash' | 'exit' | 'oom';

/**
 * Tests only: the threads handle it only in a pool created with `faultTasksForTests` (never the
 * worker's), so nothing in production can send one that does anything but fail.
 */
export interface FaultTask {
  kind: 'fault';
  mode: FaultMode;
  /** Over a SharedArrayBuffer: the fault happens while [0] > 0, counted down; absent, or a 'probe': no fault. */
  armed?: Int32Array | undefined;
  /** An image kept (as PostprocessTask.png) before the fault, and post-processed after it. */
  png?: Uint8Array | undefined;
  keep?: SharedArrayBuffer | undefined;
}

export interface FaultResult {
  /** The worker thread's id (node:worker_threads). */
  threadId: number;
  /** Tasks of any kind this thread has run, this one included. */
  tasksRun: number;
  /** What became of `png`. */
  image?: { width: number; height: number; sha256: string } | undefined;
}

/** Task kind → payload and result. */
export interface ImagingTasks {
  postprocess: { task: PostprocessTask; result: PostprocessResult };
  preview: { task: PreviewTask; result: PreviewResult };
  fault: { task: FaultTask; result: FaultResult };
}

export type ImagingTaskKind = keyof ImagingTasks;
export type ImagingTask = ImagingTasks[ImagingTaskKind]['task'];
export type ImagingResult<K extends ImagingTaskKind = ImagingTaskKind> = ImagingTasks[K]['result'];
