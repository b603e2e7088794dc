/**
 * GraphiQL's asset route (real file names with dots pass, path traversal does not) and its page
 * (the options cannot end the inline script).
 */
import { describe, expect, it } from 'vitest';
import { graphiqlAssetPath, graphiqlCsp, readGraphiQLAsset, renderLocalGraphiQL, scriptSafeJson } from '../../src/api/graphiql';
import { inlineScriptHashes } from '../../src/api/securityHeaders';

describe('graphiqlAssetPath', () => {
  it('accepts the dist files, including a name with ".." inside it', () => {
    expect(graphiqlAssetPath('/graphiql-assets/yoga-graphiql.umd.js')).toBe('yoga-graphiql.umd.js');
    expect(graphiqlAssetPath('/graphiql-assets/graphiql.css')).toBe('graphiql.css');
    expect(graphiqlAssetPath('/graphiql-assets/monacoeditorwork/graphql.worker..bundle.js')).toBe('monacoeditorwork/graphql.worker..bundle.js');
    expect(graphiqlAssetPath('/graphiql-assets/monacoeditorwork/editor.worker.bundle.js')).toBe('monacoeditorwork/editor.worker.bundle.js');
  });

  it.each([
    '/graphiql-assets/..',
    '/graphiql-assets/../package.json',
    '/graphiql-assets/monacoeditorwork/../../package.json',
    '/graphiql-assets/monacoeditorwork/..',
    '/graphiql-assets/./graphiql.css',
    '/graphiql-assets/%2e%2e/package.json',
    '/graphiql-assets/%2E%2E%2Fpackage.json',
    '/graphiql-assets/..%2fpackage.json',
    '/graphiql-assets/monacoeditorwork\\..\\..\\package.json',
    '/graphiql-assets/..\\package.json',
    '/graphiql-assets//etc/passwd',
    '/graphiql-assets/C:/Windows/win.ini',
    '/graphiql-assets/',
    '/graphiql-assets/monacoeditorwork/',
    '/graphiql-assets/.hidden.js',
    '/graphiql-assets/a/b/c.js',
    '/graphiql-assetsX/graphiql.css',
    '/graphql',
  ])('refuses %s', (urlPath) => {
    expect(graphiqlAssetPath(urlPath)).toBeNull();
  });
});

describe('readGraphiQLAsset', () => {
  it("serves Monaco's GraphQL worker, whose name has '..' in it", async () => {
    const asset = await readGraphiQLAsset('/graphiql-assets/monacoeditorwork/graphql.worker..bundle.js');
    expect(asset?.type).toBe('application/javascript; charset=utf-8');
    expect(asset?.body.length).toBeGreaterThan(1000);
  });

  it('serves nothing outside dist/ and nothing but scripts and styles', async () => {
    expect(await readGraphiQLAsset('/graphiql-assets/../package.json')).toBeNull();
    expect(await readGraphiQLAsset('/graphiql-assets/monacoeditorwork/../../package.json')).toBeNull();
    expect(await readGraphiQLAsset('/graphiql-assets/%2e%2e/package.json')).toBeNull();
    expect(await readGraphiQLAsset('/graphiql-assets/no-such-file.js')).toBeNull();
  });
});

describe('renderLocalGraphiQL', () => {
  const hostile = '</script><script>alert(1)</script><!-- $& $\' $1';
  const opts = { title: 'Stable Diffusion jobs', headers: JSON.stringify({ note: hostile }), defaultTabs: [{ query: `# ${hostile}\n{ me { email } }` }] };
  const html = renderLocalGraphiQL(opts);

  it('embeds the options so that no text in them ends the script', () => {
    expect(html).not.toContain('alert(1)</script>');
    expect(html).not.toContain('<!--');
    // Three scripts of yoga's page and the options' data block.
    expect(html.match(/<\/script>/g)).toHaveLength(4);
    // The embedded text is the options' JSON, unchanged for JavaScript (`$&` was not expanded).
    expect(html).toContain(scriptSafeJson(opts));
    expect(JSON.parse(scriptSafeJson(opts))).toEqual(opts);
  });

  it('loads its files from this server and asks for no favicon', () => {
    expect(html).not.toContain('unpkg.com');
    expect(html).not.toContain('raw.githubusercontent.com');
    expect(html).toContain('/graphiql-assets/yoga-graphiql.umd.js');
    expect(html).toContain('/graphiql-assets/monacoeditorwork/graphql.worker..bundle.js');
    expect(html).toContain('<link rel=icon href="data:,">');
    expect(html).toContain('<title>Stable Diffusion jobs</title>');
  });

  it('runs the same inline scripts whatever the options, so one CSP with their hashes fits every page', () => {
    const plain = renderLocalGraphiQL({ title: 'GraphiQL' });
    const hashes = inlineScriptHashes(html);
    expect(hashes).toHaveLength(2);
    expect(inlineScriptHashes(plain)).toEqual(hashes);
    const policy = graphiqlCsp();
    const scriptSrc = /script-src ([^;]*)/.exec(policy)?.[1] ?? '';
    for (const h of hashes) expect(scriptSrc).toContain(h);
    expect(scriptSrc).not.toContain('unsafe-inline');
    expect(policy).toContain("frame-ancestors 'none'");
    expect(policy).not.toMatch(/https?:/);
  });
});
