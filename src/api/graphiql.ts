/**
 * GraphiQL served from this process instead of a CDN, so it works offline and behind firewalls.
 * Yoga's own page loads the same files from a CDN; we rewrite those addresses to ours.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { renderGraphiQL, type GraphiQLOptions } from 'graphql-yoga';

export const GRAPHIQL_ASSETS_PATH = '/graphiql-assets/';

const CDN_BASE = /https:\/\/unpkg\.com\/@graphql-yoga\/graphiql@[^/]+\/dist\//g;
const FAVICON = /<link rel=icon href=[^>]+>/;

function assetsDir(): string | null {
  try {
    const require = createRequire(import.meta.url);
    return path.join(path.dirname(require.resolve('@graphql-yoga/graphiql/package.json')), 'dist');
  } catch {
    return null;
  }
}

export function renderLocalGraphiQL(opts: GraphiQLOptions): string {
  const html = renderGraphiQL(opts).replace(FAVICON, '');
  return assetsDir() ? html.replace(CDN_BASE, GRAPHIQL_ASSETS_PATH) : html;
}

const TYPES: Record<string, string> = { '.js': 'application/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/** Returns the asset's bytes and type, or null for anything that is not one of the dist files. */
export async function readGraphiQLAsset(urlPath: string): Promise<{ body: Buffer; type: string } | null> {
  const dir = assetsDir();
  const rel = urlPath.slice(GRAPHIQL_ASSETS_PATH.length);
  if (!dir || !/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)?$/.test(rel) || rel.includes('..')) return null;
  const type = TYPES[path.extname(rel)];
  if (!type) return null;
  try {
    return { body: await readFile(path.join(dir, rel)), type };
  } catch {
    return null;
  }
}
