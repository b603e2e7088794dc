import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ObjectStorage } from './storage';

/** Keys are plain relative paths made of safe segments; anything else is refused. */
const SAFE_KEY = /^(?:[A-Za-z0-9_-][A-Za-z0-9._-]*\/)*[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

export function resolveKey(root: string, key: string): string | null {
  if (!SAFE_KEY.test(key) || key.split('/').some((s) => s === '..' || s === '.')) return null;
  return path.join(root, ...key.split('/'));
}

/** Stores objects as files under a folder; the API serves them at signed `/files/<key>` URLs (localFileUrls.ts). */
export class LocalFolderStorage implements ObjectStorage {
  readonly root: string;

  constructor(dir: string) {
    this.root = path.resolve(dir);
  }

  async put(key: string, body: Buffer, _contentType?: string, signal?: AbortSignal): Promise<void> {
    const file = resolveKey(this.root, key);
    if (!file) throw new Error(`invalid storage key: ${key}`);
    signal?.throwIfAborted();
    await mkdir(path.dirname(file), { recursive: true });
    // Write then rename: a reader never sees half a file, and a retried upload replaces it whole.
    const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
    try {
      await writeFile(tmp, body, { signal });
      signal?.throwIfAborted();
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }
}
