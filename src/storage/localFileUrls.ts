/**
 * Signed, expiring URLs for the local folder's files, the local twin of S3's presigned URLs: the
 * API makes `<publicUrl>/files/<key>?expires=<unix s>&signature=<HMAC-SHA256(secret, key \n expires)>`
 * when it answers, and serves a file only for a URL it signed that has not expired, so a leaked link
 * dies after IMAGE_URL_TTL_S as it would on S3. Every API process must share the secret.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import path from 'node:path';
import type { ImageUrls } from './storage';

export const FILES_PATH = '/files/';

/** Why a URL was refused; a valid one gives the seconds it has left. */
export type FileUrlCheck = { ok: true; secondsLeft: number } | { ok: false; reason: 'unsigned' | 'bad signature' | 'expired' };

export class LocalFileUrls implements ImageUrls {
  /** The folder the files are served from (LocalFolderStorage's root). */
  readonly root: string;

  constructor(
    dir: string,
    private readonly publicUrl: string,
    private readonly secret: string,
    private readonly ttlS: number,
  ) {
    this.root = path.resolve(dir);
  }

  url(key: string): Promise<string> {
    const expires = Math.floor(Date.now() / 1000) + this.ttlS;
    return Promise.resolve(`${this.publicUrl}${FILES_PATH}${key}?expires=${expires}&signature=${this.sign(key, expires)}`);
  }

  /** Checks a request's query for `key`: the signature first (in constant time), then the expiry. */
  check(key: string, query: URLSearchParams, nowMs = Date.now()): FileUrlCheck {
    const expiresParam = query.get('expires');
    const signature = query.get('signature');
    if (!expiresParam || !signature) return { ok: false, reason: 'unsigned' };
    const expires = /^\d{1,12}$/.test(expiresParam) ? Number(expiresParam) : NaN;
    const given = Buffer.from(signature, 'base64url');
    const expected = Buffer.from(this.sign(key, expires), 'base64url');
    // timingSafeEqual needs equal lengths; a length mismatch says nothing about the secret.
    if (Number.isNaN(expires) || given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return { ok: false, reason: 'bad signature' };
    }
    const secondsLeft = expires - Math.floor(nowMs / 1000);
    if (nowMs > expires * 1000) return { ok: false, reason: 'expired' };
    return { ok: true, secondsLeft };
  }

  private sign(key: string, expires: number): string {
    return createHmac('sha256', this.secret).update(`${key}\n${expires}`).digest('base64url');
  }
}
