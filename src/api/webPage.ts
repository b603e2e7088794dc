/**
 * Serves the web page (web/, built into web/dist by `npm run web:build`) at `/`: its index.html and
 * its hashed assets. In `npm run dev` the demo user's token is written into the page, so a first
 * look needs no sign-in. Without a build, `/` leads to GraphiQL instead.
 */
import { createReadStream, existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import type http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream';
import { scriptSafeJson } from './graphiql';
import { contentSecurityPolicy, inlineScriptHashes, inlineStyleHashes } from './securityHeaders';

/** Where the build is, from this file (src/api/) in the repository or the image. */
export const WEB_DIST_DIR = path.resolve(import.meta.dirname, '../../web/dist');

const TYPES: Readonly<Record<string, string>> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};
/** Vite's asset names: a name, a content hash, an extension; nothing else is served from assets/. */
const ASSET = /^\/assets\/[A-Za-z0-9_-]+\.[A-Za-z0-9]+$/;

export interface WebPage {
  /** Serves the request if it is the page's; false otherwise. */
  handle(req: http.IncomingMessage, res: http.ServerResponse): boolean;
}

export interface WebPageOptions {
  dir?: string;
  demoToken?: string;
  /** Origins the images the page shows come from besides its own (S3, PUBLIC_URL): its CSP's img-src. */
  imageOrigins?: readonly string[];
}

/**
 * The page's Content-Security-Policy: its own files, any inline script or style of the built page
 * by its hash (dev's token script), GraphQL and its event streams on this origin, images from here,
 * from where image URLs point, and the live previews' data: URLs.
 */
export function webPageCsp(html: string, imageOrigins: readonly string[] = []): string {
  return contentSecurityPolicy({
    'script-src': ["'self'", ...inlineScriptHashes(html)],
    'style-src': ["'self'", ...inlineStyleHashes(html)],
    'img-src': ["'self'", 'data:', ...imageOrigins],
    'connect-src': ["'self'"],
    'font-src': ["'self'"],
    'form-action': ["'self'"],
  });
}

export function webPage(opts: WebPageOptions = {}): WebPage {
  const dir = opts.dir ?? WEB_DIST_DIR;
  const built = existsSync(path.join(dir, 'index.html'));
  let index: Promise<{ html: string; csp: string }> | undefined;
  const indexHtml = () =>
    (index ??= readFile(path.join(dir, 'index.html'), 'utf8').then(
      (file) => {
        const html = opts.demoToken ? file.replace('</head>', `<script>window.__SDJOBS__ = ${scriptSafeJson({ token: opts.demoToken })};</script></head>`) : file;
        return { html, csp: webPageCsp(html, opts.imageOrigins) };
      },
      (err: unknown) => {
        // Read again next time (a build replaced it meanwhile), rather than answering 500 for good.
        index = undefined;
        throw err;
      },
    ));

  return {
    handle(req, res) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return false;
      const pathname = (req.url ?? '/').split('?')[0]!;
      if (pathname === '/' || pathname === '/index.html') {
        if (!built) {
          res.writeHead(302, { location: '/graphql' }).end();
          return true;
        }
        void indexHtml().then(
          ({ html, csp }) => {
            res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache', 'content-security-policy': csp });
            res.end(req.method === 'HEAD' ? undefined : html);
          },
          () => res.writeHead(500).end(),
        );
        return true;
      }
      if (!built || !ASSET.test(pathname)) return false;
      const file = path.join(dir, pathname);
      void stat(file).then(
        (info) => {
          res.writeHead(200, {
            'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
            'content-length': info.size,
            // Hashed names never change content.
            'cache-control': 'public, max-age=31536000, immutable',
          });
          if (req.method === 'HEAD') return res.end();
          pipeline(createReadStream(file), res, (err) => err && res.destroy());
        },
        () => res.writeHead(404, { 'content-type': 'text/plain' }).end('not found'),
      );
      return true;
    },
  };
}
