/**
 * Every documented `npm run` script works on a fresh clone, in any order: the files a script needs
 * that are generated (the tests' typed GraphQL documents in test/gql/) are made by the script that
 * needs them, and each script answers `--help` (or runs its quick check) without any service.
 *
 * The clone is the working tree's tracked and not-ignored files copied into an empty folder, so
 * nothing generated or local (.data/, test/gql/, bench results) comes along; node_modules is linked.
 */
import { existsSync } from 'node:fs';
import { cp, mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_START_MS, PROCESSES_TEST_MS } from '../helpers/budgets';
import { runCommand } from '../helpers/run';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** The README's scripts with the arguments that make each answer without services. */
const HELP_RUNS: Array<[script: string, args: string[], expected: RegExp]> = [
  ['dev', ['--help'], /usage: npm run dev/],
  ['api', ['--help'], /usage: npm run api/],
  ['worker', ['--help'], /usage: npm run worker -- \[--queues=/],
  ['migrate', ['--help'], /usage: npm run migrate/],
  ['user:create', ['--help'], /usage: npm run user:create -- --email/],
  ['sd:simulator', ['--help'], /usage: npm run sd:simulator/],
  ['schema:check', [], /schema\.graphql is up to date/],
  ['test:busy', ['--help'], /usage: npm run test:busy/],
  ['generate', ['--help'], /usage: sd-jobs "<prompt>"/],
];

function npmRun(cwd: string, script: string, args: string[]) {
  const env = { ...process.env };
  for (const k of ['DATABASE_URL', 'APP_DATABASE_URL', 'APP_SD_API_URL', 'REDIS_URL']) delete env[k];
  return runCommand('npm', ['run', '-s', script, ...(args.length ? ['--', ...args] : [])], { cwd, env });
}

describe('npm run scripts on a fresh clone', { timeout: PROCESSES_TEST_MS }, () => {
  let clone: string;

  beforeAll(async () => {
    clone = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-clone-'));
    const { out: stdout } = await runCommand('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT });
    // node_modules is linked below, whatever it is here (a folder, or a link git does not ignore).
    const files = stdout.split('\0').filter((f) => f && f !== 'node_modules' && existsSync(path.join(ROOT, f)));
    for (const f of files) await cp(path.join(ROOT, f), path.join(clone, f), { recursive: true });
    await symlink(path.join(ROOT, 'node_modules'), path.join(clone, 'node_modules'), 'dir');
  }, PROCESS_START_MS);
  afterAll(async () => {
    if (clone) await rm(clone, { recursive: true, force: true });
  });

  it('bench runs first, before anything generated its typed documents', async () => {
    expect(existsSync(path.join(clone, 'test/gql'))).toBe(false);
    const bench = await npmRun(clone, 'bench', ['--help']);
    expect(bench.code, bench.out).toBe(0);
    expect(bench.out).toMatch(/usage: npm run bench -- \[--quick\]/);
    expect(existsSync(path.join(clone, 'test/gql/index.ts'))).toBe(true);
  });

  it('client:build builds the client library from a fresh clone, typed from schema.graphql', async () => {
    expect(existsSync(path.join(clone, 'client/dist'))).toBe(false);
    const build = await npmRun(clone, 'client:build', []);
    expect(build.code, build.out).toBe(0);
    expect(existsSync(path.join(clone, 'client/dist/index.js'))).toBe(true);
    expect(existsSync(path.join(clone, 'client/dist/index.d.ts'))).toBe(true);
  });

  it.each(HELP_RUNS)('npm run %s %j answers without any service', async (script, args, expected) => {
    const run = await npmRun(clone, script, args);
    expect(run.code, run.out).toBe(0);
    expect(run.out).toMatch(expected);
  });

  it('an unknown flag is refused with the usage and exit code 2', async () => {
    const run = await npmRun(clone, 'worker', ['--queue=high_priority']);
    expect(run.code).toBe(2);
    expect(run.out).toMatch(/Unknown option '--queue'[\s\S]*usage: npm run worker/);
  });
});
