/**
 * A minimal PNG encoder: 8-bit RGB, no interlace, filter 0 on every scanline, plus the text
 * chunks A1111 writes (`parameters`). Enough for real decoders (sharp, browsers) to read.
 */
import zlib from 'node:zlib';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export interface PngText {
  keyword: string;
  text: string;
}

/**
 * @param rgb width × height × 3 bytes, row-major.
 * @param level zlib level; 1 keeps big images fast, and the simulator's pictures compress well anyway.
 */
export function encodePng(width: number, height: number, rgb: Uint8Array, texts: PngText[] = [], level = 1): Buffer {
  const stride = width * 3;
  if (rgb.length !== stride * height) throw new RangeError(`expected ${stride * height} RGB bytes, got ${rgb.length}`);

  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: truecolour (RGB)
  ihdr[10] = 0; // compression: deflate
  ihdr[11] = 0; // filter method 0
  ihdr[12] = 0; // no interlace

  // Each scanline starts with its filter type byte; 0 = None, so rows are copied as they are.
  const raw = Buffer.alloc((stride + 1) * height);
  const src = Buffer.from(rgb.buffer, rgb.byteOffset, rgb.length);
  for (let y = 0; y < height; y++) src.copy(raw, y * (stride + 1) + 1, y * stride, (y + 1) * stride);

  return Buffer.concat([
    SIGNATURE,
    chunk('IHDR', ihdr),
    ...texts.map(textChunk),
    chunk('IDAT', zlib.deflateSync(raw, { level })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function chunk(type: string, data: Buffer): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  data.copy(out, 8);
  // The CRC covers the type and the data, not the length.
  out.writeUInt32BE(zlib.crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/**
 * tEXt is Latin-1 only; like PIL (which A1111 uses), text outside Latin-1 goes into an
 * uncompressed iTXt chunk as UTF-8 instead of being mangled.
 */
function textChunk({ keyword, text }: PngText): Buffer {
  if (/^[\u0000-\u00ff]*$/.test(text)) {
    return chunk('tEXt', Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([0]), Buffer.from(text, 'latin1')]));
  }
  return chunk(
    'iTXt',
    Buffer.concat([
      Buffer.from(keyword, 'latin1'),
      // NUL, compression flag 0, method 0, empty language tag + NUL, empty translated keyword + NUL
      Buffer.from([0, 0, 0, 0, 0]),
      Buffer.from(text, 'utf8'),
    ]),
  );
}
