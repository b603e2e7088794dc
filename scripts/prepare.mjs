/**
 * `npm ci`'s prepare: builds the web page (web/dist) so that a fresh clone serves it. An install
 * without the dev dependencies (`npm ci --omit=dev`), which cannot build it, skips it and says so:
 * the API then leads `/` to GraphiQL (the Docker image builds the page in a stage of its own).
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
try {
  require.resolve('vite/package.json');
  require.resolve('@graphql-codegen/cli/package.json');
} catch {
  process.stderr.write('prepare: the dev dependencies are not installed; the web page is not built (npm run web:build builds it)\n');
  process.exit(0);
}
const build = spawnSync('npm', ['run', '-s', 'web:build'], { stdio: 'inherit' });
process.exit(build.status ?? 1);
