/**
 * `npm run schema:print` writes schema.graphql from the Pothos builder;
 * `npm run schema:check` fails when the committed file is stale.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { loadConfig } from '../src/config';
import { parseFlags } from '../src/main/cli';
import { DEFAULT_SAMPLERS } from '../src/generation/samplers';
import { buildSchema, printSchemaSDL } from '../src/schema/index';

const FILE = new URL('../schema.graphql', import.meta.url);
const USAGE = `usage: npm run schema:print   (writes schema.graphql from the Pothos builder)
       npm run schema:check   (fails when the committed schema.graphql is stale)`;
const { check } = parseFlags(USAGE, { check: { type: 'boolean', default: false } });

const samplers = { has: (s: string) => DEFAULT_SAMPLERS.includes(s), list: () => DEFAULT_SAMPLERS };
const sdl = printSchemaSDL(buildSchema({ limits: loadConfig({}).limits, samplers }));

if (check) {
  const committed = await readFile(FILE, 'utf8').catch(() => '');
  if (committed !== sdl) {
    process.stderr.write('schema.graphql is stale: run `npm run schema:print` and commit the result.\n');
    process.exit(1);
  }
  process.stdout.write('schema.graphql is up to date.\n');
} else {
  await writeFile(FILE, sdl);
  process.stdout.write('wrote schema.graphql\n');
}
