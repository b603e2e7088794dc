/**
 * The local-folder storage: a write is whole or absent (written aside, then renamed), a retried write
 * replaces the object, an aborted write leaves nothing behind, and unsafe keys are refused. Its URLs
 * are signed for one key and one expiry: any change to either, or a passed expiry, is refused.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalFileUrls } from '../../src/storage/localFileUrls';
import { LocalFolderStorage } from '../../src/storage/localFolder';

describe('local folder storage', () => {
  let dir: string;
  let storage: LocalFolderStorage;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'storage-'));
    storage = new LocalFolderStorage(dir);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('writes an object, and a second write of the same key replaces it', async () => {
    await storage.put('generations/g/0.webp', Buffer.from('first'), 'image/webp');
    await storage.put('generations/g/0.webp', Buffer.from('second'), 'image/webp');
    expect(await readFile(path.join(dir, 'generations/g/0.webp'), 'utf8')).toBe('second');
    expect(await readdir(path.join(dir, 'generations/g'))).toEqual(['0.webp']);
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

describe('local file URLs', () => {
  const SECRET = 'a-test-secret-of-at-least-32-characters';
  const TTL_S = 600;
  const urls = new LocalFileUrls('/unused', 'http://files.test', SECRET, TTL_S);
  const KEY = 'generations/g/0.webp';
  const signed = async (key = KEY) => new URL(await urls.url(key));

  it('signs a key with an expiry TTL seconds ahead, and accepts exactly that URL until then', async () => {
    const before = Math.floor(Date.now() / 1000);
    const url = await signed();
    expect(`${url.origin}${url.pathname}`).toBe(`http://files.test/files/${KEY}`);
    const expires = Number(url.searchParams.get('expires'));
    expect(expires - before).toBeGreaterThanOrEqual(TTL_S);
    expect(expires - before).toBeLessThanOrEqual(TTL_S + 1);
    const check = urls.check(KEY, url.searchParams);
    expect(check.ok).toBe(true);
    // Still good in its last second, expired right after it.
    expect(urls.check(KEY, url.searchParams, expires * 1000).ok).toBe(true);
    expect(urls.check(KEY, url.searchParams, expires * 1000 + 1)).toEqual({ ok: false, reason: 'expired' });
  });

  it('refuses another key, a moved expiry, a changed or missing signature, and another secret', async () => {
    const url = await signed();
    const q = (change: Record<string, string | null>) => {
      const p = new URLSearchParams(url.searchParams);
      for (const [k, v] of Object.entries(change)) {
        if (v === null) p.delete(k);
        else p.set(k, v);
      }
      return p;
    };
    const signature = url.searchParams.get('signature')!;
    const flipped = `${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`;
    expect(urls.check('generations/g/0.thumb.webp', url.searchParams)).toEqual({ ok: false, reason: 'bad signature' });
    expect(urls.check(KEY, q({ expires: String(Number(url.searchParams.get('expires')) + 3600) }))).toEqual({ ok: false, reason: 'bad signature' });
    expect(urls.check(KEY, q({ expires: '1e12' }))).toEqual({ ok: false, reason: 'bad signature' });
    expect(urls.check(KEY, q({ signature: flipped }))).toEqual({ ok: false, reason: 'bad signature' });
    expect(urls.check(KEY, q({ signature: signature.slice(0, 10) }))).toEqual({ ok: false, reason: 'bad signature' });
    expect(urls.check(KEY, q({ signature: null }))).toEqual({ ok: false, reason: 'unsigned' });
    expect(urls.check(KEY, q({ expires: null }))).toEqual({ ok: false, reason: 'unsigned' });
    const other = new LocalFileUrls('/unused', 'http://files.test', `${SECRET}-other`, TTL_S);
    expect(other.check(KEY, url.searchParams)).toEqual({ ok: false, reason: 'bad signature' });
  });
});
