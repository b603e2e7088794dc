/**
 * The web page (web/): built into web/dist by `npm run web:build` (which `npm ci`'s prepare and
 * `npm test` run), and served by the API at `/`. Everything it needs is bundled: no CDN.
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  logLevel: 'warn',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // One small bundle: no source maps shipped to browsers.
    sourcemap: false,
  },
});
