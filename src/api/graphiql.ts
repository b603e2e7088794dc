/**
 * GraphiQL served from this process instead of a CDN, so it works offline and behind firewalls.
 * Yoga's own page loads the same files from a CDN; we rewrite those addresses to ours.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { renderGraphiQL, type GraphiQLOptions } from 'graphql-yoga';
import { contentSecurityPolicy, inlineScriptHashes } from './securityHeaders';

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

/**
 * JSON that can sit inside an inline <script>: `<` becomes `\u003c` (the same string to JavaScript),
 * so no text in the options (`</script>`, `<!--`) can end the script or change how HTML parses it.
 */
export function scriptSafeJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

/**
 * Runs in the browser on the options before yoga's GraphiQL gets them. Yoga's page prefers an
 * options `query` to the URL's `?query=` and to what the person last had open, so with one set,
 * every reload would show that query again and GraphiQL would open a new tab for it. GraphiQL itself
 * restores the last query (kept in localStorage under `graphiql:query`); this keeps `query` for a
 * first visit only: the URL's query first, then the stored one, then `query`. A first visit with
 * `?query=` (a shared link) opens just that query, not `defaultTabs` with it in the first tab's place.
 */
const FIRST_VISIT_QUERY = `((o) => {
  if (typeof o.query !== 'string') return o;
  let stored = null, tabs = null;
  try { stored = localStorage.getItem('graphiql:query'); tabs = localStorage.getItem('graphiql:tabState'); } catch {}
  const fromUrl = new URL(location.href).searchParams.get('query');
  if (fromUrl && tabs === null) delete o.defaultTabs;
  o.query = fromUrl || stored || o.query;
  return o;
})`;

/** The element the page's options are in (a JSON data block: the browser does not run it, CSP does not hash it). */
const OPTIONS_ID = 'graphiql-options';

export function renderLocalGraphiQL(opts: GraphiQLOptions): string {
  // Yoga writes JSON.stringify(opts) into the page's <script> as it is, and through String.replace,
  // which expands `$&` or `$'` in a query. So yoga renders only the title, and we put the options in.
  // They go in a data block that the script reads: the scripts that run are then the same for any
  // options (a token, a query), so one Content-Security-Policy with their hashes fits every page.
  const shell = { title: opts.title };
  // No <link rel=icon> would make the browser ask for /favicon.ico, which answers 404.
  let html = renderGraphiQL(shell).replace(FAVICON, '<link rel=icon href="data:,">');
  if (assetsDir()) html = html.replace(CDN_BASE, GRAPHIQL_ASSETS_PATH);
  const placeholder = JSON.stringify(shell);
  const at = html.lastIndexOf(placeholder);
  const scriptAt = html.lastIndexOf('<script>', at);
  if (at < 0 || scriptAt < 0) throw new Error('graphql-yoga changed its GraphiQL page: the options are no longer where renderLocalGraphiQL puts them');
  const readOptions = `${FIRST_VISIT_QUERY}(JSON.parse(document.getElementById(${JSON.stringify(OPTIONS_ID)}).textContent))`;
  return (
    html.slice(0, scriptAt) +
    `<script type="application/json" id="${OPTIONS_ID}">${scriptSafeJson(opts)}</script>` +
    html.slice(scriptAt, at) +
    readOptions +
    html.slice(at + placeholder.length)
  );
}

/**
 * The Content-Security-Policy of the GraphiQL page: its own scripts (the files and the inline ones
 * by their hashes, never 'unsafe-inline'), Monaco's workers, which the page makes from blob: URLs of
 * the worker files it fetched, and requests to this origin only. Styles may be inline: Monaco
 * and GraphiQL's React parts add <style> elements and style attributes as they run, with no nonce to
 * give them; a style can restyle the page but not run code.
 */
export function graphiqlCsp(): string {
  const page = renderLocalGraphiQL({ title: 'GraphiQL' });
  return contentSecurityPolicy({
    'script-src': ["'self'", ...inlineScriptHashes(page)],
    'worker-src': ['blob:'],
    'connect-src': ["'self'"],
    'style-src': ["'self'", "'unsafe-inline'"],
    'img-src': ["'self'", 'data:'],
    'font-src': ["'self'", 'data:'],
  });
}

const TYPES: Record<string, string> = { '.js': 'application/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/** A file or folder name of the dist folder; a leading letter or digit rules out `.`, `..` and hidden files. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * The dist-relative path an asset URL names, or null. Dots inside a name are fine (Monaco's GraphQL
 * worker is `graphql.worker..bundle.js`); a `.`/`..` segment, `%` escapes, backslashes, empty
 * segments (absolute paths, `//`) and anything deeper than `monacoeditorwork/<file>` are refused.
 */
export function graphiqlAssetPath(urlPath: string): string | null {
  if (!urlPath.startsWith(GRAPHIQL_ASSETS_PATH)) return null;
  const segments = urlPath.slice(GRAPHIQL_ASSETS_PATH.length).split('/');
  if (segments.length > 2 || !segments.every((s) => NAME.test(s))) return null;
  return segments.join('/');
}

/** Returns the asset's bytes and type, or null for anything that is not one of the dist files. */
export async function readGraphiQLAsset(urlPath: string): Promise<{ body: Buffer; type: string } | null> {
  const dir = assetsDir();
  const rel = graphiqlAssetPath(urlPath);
  if (!dir || !rel) return null;
  const type = TYPES[path.extname(rel)];
  if (!type) return null;
  const file = path.resolve(dir, rel);
  // Belt and braces: whatever the name check lets through must still resolve inside dist/.
  const inside = path.relative(dir, file);
  if (inside.startsWith('..') || path.isAbsolute(inside)) return null;
  try {
    return { body: await readFile(file), type };
  } catch {
    return null;
  }
}
