/**
 * The simulator's "model": a picture that is a pure function of (prompt, seed). A hash of both
 * picks a diagonal colour gradient and a few discs, so different prompts or seeds give visibly
 * different images and the same inputs give the same pixels. Shapes live in 0..1 coordinates,
 * so a 64 px live preview looks like a small copy of the final image.
 */
import { createHash } from 'node:crypto';

export interface PictureSpec {
  prompt: string;
  seed: number;
}

/**
 * @param done 0..1: how far "denoising" got. Below 1 the picture is blended with seeded noise,
 *   which is what live previews and interrupted jobs show.
 * @returns width × height × 3 RGB bytes.
 */
export function renderPicture(spec: PictureSpec, width: number, height: number, done = 1): Buffer {
  const h = createHash('sha256').update(`${spec.seed}\n${spec.prompt}`).digest();
  const byte = (i: number) => h[i % h.length] ?? 0;
  const out = Buffer.allocUnsafe(width * height * 3);

  // Background: gradient c0 → c1 along a hashed direction, via a 257-entry colour table so the
  // per-pixel work is two lookups and three stores.
  const lut = new Uint8Array(257 * 3);
  for (let t = 0; t <= 256; t++) {
    for (let c = 0; c < 3; c++) lut[t * 3 + c] = (byte(c) * (256 - t) + byte(3 + c) * t) >> 8;
  }
  const angle = (byte(6) / 255) * Math.PI * 2;
  const ax = Math.abs(Math.cos(angle));
  const ay = 1 - ax;
  const flipX = byte(6) & 1;
  const flipY = byte(6) & 2;
  const tx = new Uint16Array(width);
  const ty = new Uint16Array(height);
  for (let x = 0; x < width; x++) tx[x] = Math.floor(ax * 256 * ((flipX ? width - 1 - x : x) / Math.max(1, width - 1)));
  for (let y = 0; y < height; y++) ty[y] = Math.floor(ay * 256 * ((flipY ? height - 1 - y : y) / Math.max(1, height - 1)));
  let o = 0;
  for (let y = 0; y < height; y++) {
    const rowT = ty[y] ?? 0;
    for (let x = 0; x < width; x++) {
      const l = Math.min(256, rowT + (tx[x] ?? 0)) * 3;
      out[o++] = lut[l] ?? 0;
      out[o++] = lut[l + 1] ?? 0;
      out[o++] = lut[l + 2] ?? 0;
    }
  }

  // Discs: each row of a disc is one span, filled with a repeating 3-byte pattern.
  const size = Math.min(width, height);
  const discs = 2 + (byte(7) % 3);
  for (let d = 0; d < discs; d++) {
    const k = 8 + d * 6;
    const cx = (byte(k) / 255) * width;
    const cy = (byte(k + 1) / 255) * height;
    const r = (0.08 + (byte(k + 2) / 255) * 0.22) * size;
    const colour = Buffer.from([byte(k + 3), byte(k + 4), byte(k + 5)]);
    const y0 = Math.max(0, Math.ceil(cy - r));
    const y1 = Math.min(height - 1, Math.floor(cy + r));
    for (let y = y0; y <= y1; y++) {
      const half = Math.sqrt(Math.max(0, r * r - (y - cy) * (y - cy)));
      const x0 = Math.max(0, Math.ceil(cx - half));
      const x1 = Math.min(width - 1, Math.floor(cx + half));
      if (x1 >= x0) out.fill(colour, (y * width + x0) * 3, (y * width + x1 + 1) * 3);
    }
  }

  if (done < 1) addNoise(out, spec.seed, Math.max(0, done));
  return out;
}

/** Blends seeded noise in: out = picture·done + noise·(1 − done). Same seed, same noise. */
function addNoise(px: Buffer, seed: number, done: number): void {
  const keep = Math.round(done * 256);
  let state = (seed ^ 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < px.length; i++) {
    // xorshift32: cheap, deterministic, good enough to look like noise.
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    px[i] = ((px[i] ?? 0) * keep + (state & 0xff) * (256 - keep)) >> 8;
  }
}

/** A preview size with the image's aspect ratio and its longer side `max` px. */
export function previewSize(width: number, height: number, max = 64): { width: number; height: number } {
  const scale = max / Math.max(width, height);
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}
