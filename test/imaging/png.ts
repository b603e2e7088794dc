/**
 * A minimal PNG encoder for tests: 8-bit RGB or RGBA, no interlacing, filter 0 on every row, and
 * any number of tEXt chunks (A1111 stores its generation parameters in one named `parameters`).
 * Written by hand so the tests control every byte that goes in, metadata included.
 */
import { crc32, deflateSync } from 'node:zlib';

export type Rgba = readonly [r: number, g: number, b: number, a?: number];

export interface PngSpec {
  width: number;
  height: number;
  /** 3 = RGB (colour type 2), 4 = RGBA (colour type 6). Default 3. */
  channels?: 3 | 4;
  /** Colour of pixel (x, y); alpha is used with 4 channels only (default 255). */
  pixel: (x: number, y: number) => Rgba;
  /** tEXt chunks, keyword → Latin-1 text, written before the image data like A1111 does. */
  text?: Record<string, string>;
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function encodePng({ width, height, channels = 3, pixel, text = {} }: PngSpec): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = channels === 4 ? 6 : 2; // colour type
  ihdr[10] = 0; // compression: deflate
  ihdr[11] = 0; // filter method 0
  ihdr[12] = 0; // no interlace

  const stride = 1 + width * channels;
  const raw = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    raw[y * stride] = 0; // filter type None for this row
    for (let x = 0; x < width; x++) {
      const [r, g, b, a = 255] = pixel(x, y);
      const at = y * stride + 1 + x * channels;
      raw[at] = r;
      raw[at + 1] = g;
      raw[at + 2] = b;
      if (channels === 4) raw[at + 3] = a;
    }
  }

  const textChunks = Object.entries(text).map(([keyword, value]) =>
    chunk('tEXt', Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([0]), Buffer.from(value, 'latin1')])),
  );
  return Buffer.concat([
    SIGNATURE,
    chunk('IHDR', ihdr),
    ...textChunks,
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** length, type, data, CRC-32 of type + data. */
function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/** A smooth gradient with a checker pattern: varied enough that encoders cannot cheat. */
export function gradientPixel(width: number, height: number): (x: number, y: number) => Rgba {
  return (x, y) => {
    const checker = ((x >> 3) + (y >> 3)) % 2 === 0 ? 40 : 0;
    return [
      Math.round((x / Math.max(1, width - 1)) * 215) + checker,
      Math.round((y / Math.max(1, height - 1)) * 215) + checker,
      (x * 7 + y * 13) % 256,
    ];
  };
}
