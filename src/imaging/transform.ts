/**
 * The image work itself, run inside a post-processing thread (see workers/postprocess.thread.ts).
 * Importing this module loads sharp but does nothing else; the thread calls `configureSharp()` once.
 *
 * Metadata: sharp drops all metadata (EXIF, ICC, XMP, PNG text chunks such as A1111's
 * `parameters`) unless asked to keep it, and we never ask (no withMetadata/keepMetadata). On top of
 * that, `postprocessImage` decodes to raw pixels first, so nothing but pixels can reach the outputs.
 *
 * Every sharp call is awaited before a function returns or throws (no Promise.all that could leave
 * one running after another failed): the pool terminates threads once their tasks have finished,
 * and that is only safe if no libvips work outlives the task (sharp#2263).
 */
import { createHash } from 'node:crypto';
import { encode as encodeBlurhash } from 'blurhash';
import sharp from 'sharp';
import type { OutputInfo, SharpOptions } from 'sharp';
import { ImageDecodeError } from './errors';
import type { PostprocessResult, PostprocessTask, PreviewResult, PreviewTask } from './tasks';

/** Formats A1111 produces (PNG images, PNG/JPEG live previews, WebP if configured so). */
const ACCEPTED_FORMATS: ReadonlySet<string> = new Set(['png', 'jpeg', 'webp']);

const INPUT_OPTIONS = {
  // sharp's most sensitive level: a truncated or corrupt image fails instead of being half-decoded.
  failOn: 'warning',
  // The EXIF orientation tag is stripped with the rest of the metadata, so apply it to the pixels.
  autoOrient: true,
} as const satisfies SharpOptions;

/** Blurhash reads a tiny image: more pixels cost time and do not change a 4×3-component hash. */
const BLURHASH_INPUT_SIZE = 32;
const BLURHASH_COMPONENTS_X = 4;
const BLURHASH_COMPONENTS_Y = 3;

/** Live previews are thrown away within seconds; a low quality keeps the SSE frames small. */
const PREVIEW_WEBP_QUALITY = 70;

/**
 * libvips settings for a pool thread. Both are process-wide in libvips, so calling this from every
 * thread is idempotent. One libvips worker per image means N pool threads use about N cores instead
 * of N × cores; the operation cache only helps when the same input is processed twice, which never
 * happens here, and it would hold decoded images in memory.
 */
export function configureSharp(): void {
  sharp.concurrency(1);
  sharp.cache(false);
}

export async function postprocessImage(task: PostprocessTask): Promise<PostprocessResult> {
  const input = asBytes(task.png);
  await assertSupportedImage(input);

  // Decode once to 8-bit sRGB pixels, then build every output from them: PNG decoding is the
  // expensive step and would otherwise run three times.
  let decoded: { data: Buffer; info: OutputInfo };
  try {
    decoded = await sharp(input, INPUT_OPTIONS)
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (error) {
    throw decodeError(error);
  }
  const { width, height, channels } = decoded.info;
  const fromPixels = () => sharp(decoded.data, { raw: { width, height, channels } });

  // One sharp operation at a time: each one occupies a libuv thread-pool slot, which is shared by
  // the whole process (UV_THREADPOOL_SIZE, default 4), so a thread should hold at most one.
  const webp = await fromPixels().webp({ quality: task.webpQuality }).toBuffer();
  const thumbnail = await fromPixels()
    .resize({
      width: task.thumbnailSize,
      height: task.thumbnailSize,
      fit: 'inside',
      withoutEnlargement: true,
    })
    .webp({ quality: task.webpQuality })
    .toBuffer({ resolveWithObject: true });
  const small = await fromPixels()
    .resize({ width: BLURHASH_INPUT_SIZE, height: BLURHASH_INPUT_SIZE, fit: 'inside' })
    .ensureAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });

  const blurhash = encodeBlurhash(
    new Uint8ClampedArray(small.data.buffer, small.data.byteOffset, small.data.byteLength),
    small.info.width,
    small.info.height,
    BLURHASH_COMPONENTS_X,
    BLURHASH_COMPONENTS_Y,
  );

  return {
    webp: ownBytes(webp),
    thumbnail: ownBytes(thumbnail.data),
    width,
    height,
    thumbnailWidth: thumbnail.info.width,
    thumbnailHeight: thumbnail.info.height,
    blurhash,
    sha256: createHash('sha256').update(webp).digest('hex'),
    bytes: webp.byteLength,
  };
}

export async function previewImage(task: PreviewTask): Promise<PreviewResult> {
  const input = asBytes(task.image);
  await assertSupportedImage(input);
  let webp: Buffer;
  try {
    // A single pass: decode, shrink, encode. Any failure here is about the input, since encoding
    // a small WebP from decoded pixels does not fail on its own.
    webp = await sharp(input, INPUT_OPTIONS)
      .resize({ width: task.size, height: task.size, fit: 'inside', withoutEnlargement: true })
      .webp({ quality: PREVIEW_WEBP_QUALITY })
      .toBuffer();
  } catch (error) {
    throw decodeError(error);
  }
  return { dataUri: `data:image/webp;base64,${webp.toString('base64')}` };
}

/** Reads the header only: rejects non-images and unexpected formats before any pixel work. */
async function assertSupportedImage(input: Uint8Array): Promise<void> {
  let format: string | undefined;
  try {
    ({ format } = await sharp(input, INPUT_OPTIONS).metadata());
  } catch (error) {
    throw decodeError(error);
  }
  if (format === undefined || !ACCEPTED_FORMATS.has(format)) {
    throw new ImageDecodeError(`expected PNG, JPEG or WebP, got ${format ?? 'an unknown format'}`);
  }
}

function decodeError(error: unknown): ImageDecodeError {
  const detail = error instanceof Error ? error.message : String(error);
  return new ImageDecodeError(detail, { cause: error });
}

function asBytes(input: ArrayBuffer | Uint8Array): Uint8Array {
  return input instanceof Uint8Array ? input : new Uint8Array(input);
}

/**
 * A Uint8Array that alone owns a plain ArrayBuffer, so it can be transferred to the main thread.
 * sharp's output Buffers wrap memory allocated by libvips: postMessage cannot detach it and quietly
 * copies it instead (checked on Node 20), so copy once here and transfer the copy.
 */
function ownBytes(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer);
}
