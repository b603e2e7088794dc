/** Test helper: splits a PNG into chunks, checking the signature and every CRC on the way. */
import zlib from 'node:zlib';

export interface PngChunk {
  type: string;
  data: Buffer;
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function readPngChunks(png: Buffer): PngChunk[] {
  if (!png.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG signature');
  const chunks: PngChunk[] = [];
  let off = 8;
  while (off < png.length) {
    const len = png.readUInt32BE(off);
    const type = png.toString('latin1', off + 4, off + 8);
    const data = png.subarray(off + 8, off + 8 + len);
    const crc = png.readUInt32BE(off + 8 + len);
    if (zlib.crc32(png.subarray(off + 4, off + 8 + len)) !== crc) throw new Error(`bad CRC in ${type}`);
    chunks.push({ type, data });
    off += 12 + len;
  }
  return chunks;
}

/** tEXt chunks as keyword → text (Latin-1, as the PNG spec says). */
export function pngTexts(png: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of readPngChunks(png)) {
    if (c.type !== 'tEXt') continue;
    const nul = c.data.indexOf(0);
    out[c.data.toString('latin1', 0, nul)] = c.data.toString('latin1', nul + 1);
  }
  return out;
}

export function pngSize(png: Buffer): { width: number; height: number } {
  const ihdr = readPngChunks(png)[0];
  if (!ihdr || ihdr.type !== 'IHDR') throw new Error('first chunk is not IHDR');
  return { width: ihdr.data.readUInt32BE(0), height: ihdr.data.readUInt32BE(4) };
}
