/**
 * The local-folder storage: a write is whole or absent (written aside, then renamed), a retried write
 * replaces the object, an aborted write leaves nothing behind, and unsafe keys are refused.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalFolderStorage } from '../../src/storage/localFolder';

describe('local folder storage', () => {
  let dir: string;
  let storage: LocalFolderStorage;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'storage-'));
    storage = new LocalFolderStorage(dir, 'http://files.test');
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('writes an object, and a second write of the same key replaces it', async () => {
    await storage.put('generations/g/0.webp', Buffer.from('first'), 'image/webp');
    await storage.put('generations/g/0.webp', Buffer.from('second'), 'image/webp');
    expect(await readFile(path.join(dir, 'generations/g/0.webp'), 'utf8')).toBe('second');
    expect(await readdir(path.join(dir, 'generations/g'))).toEqual(['0.webp']);
    expect(storage.url('generations/g/0.webp')).toBe('http://files.test/files/generations/g/0.webp');
  });

  it('stops a write whose signal aborts, and leaves no file or temporary file behind', async () => {
    const ctl = new AbortController();
    const big = Buffer.alloc(64 * 1024 * 1024, 1);
    const writing = storage.put('generations/g/1.webp', big, 'image/webp', ctl.signal);
    ctl.abort(new Error('hard time limit'));
    await expect(writing).rejects.toThrow();
    const left = await readdir(path.join(dir, 'generations/g')).catch(() => []);
    expect(left).toEqual([]);
    const before = new AbortController();
    before.abort();
    await expect(storage.put('generations/g/2.webp', Buffer.from('x'), 'image/webp', before.signal)).rejects.toThrow();
  });

  it('refuses keys that leave the folder or are not plain paths', async () => {
    for (const key of ['../x', 'a/../../x', '/abs', 'a//b', '.hidden/../x', '']) {
      await expect(storage.put(key, Buffer.from('x'), 'image/webp'), key).rejects.toThrow(/invalid storage key/);
    }
  });
});
