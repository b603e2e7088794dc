/**
 * The command line (client/src/cli.ts) as people run it: in a real terminal (a pseudo-terminal,
 * through util-linux's `script`) it redraws a progress bar whose step advances; into a pipe it
 * prints one plain line per state; it writes the images where asked, prints JSON for scripts, exits
 * with the error's code on failure, and Ctrl-C cancels the generation.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand, spawnWatched } from '../helpers/run';
import { startStack, type Stack } from '../helpers/stack';

const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = [process.execPath, '--import', import.meta.resolve('tsx'), path.join(ROOT, 'client/src/cli.ts')];
const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

describe('the command line', () => {
  let stack: Stack;
  let token: string;
  let out: string;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    // Steps slow enough that a terminal sees several of them.
    stack = await startStack({ simulator: { stepMs: 40 } });
    ({ token } = await stack.createUser(20));
    out = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-cli-'));
    env = { ...process.env, SD_JOBS_URL: stack.baseUrl, SD_JOBS_TOKEN: token };
  });
  afterAll(async () => {
    await stack?.close();
    if (out) await rm(out, { recursive: true, force: true });
  });

  it('into a pipe: one plain line per state, then the files it wrote', async () => {
    const dir = path.join(out, 'pipe');
    const run = await runCommand(CLI[0]!, [...CLI.slice(1), 'a lighthouse at dusk', '--steps', '4', '--width', '64', '--height', '64', '--out', dir], { env });
    expect(run.code, run.out).toBe(0);
    const lines = run.out.trim().split('\n');
    expect(run.out).not.toContain('\r');
    const statuses = lines.map((l) => l.split(/\s+/)[0]);
    expect(statuses).toContain('SUCCEEDED');
    expect(lines.find((l) => l.startsWith('GENERATING'))).toMatch(/step \d+\/4/);
    const files = await readdir(dir);
    expect(files).toHaveLength(1);
    expect(lines.at(-1)).toBe(path.join(dir, files[0]!));
    expect((await readFile(path.join(dir, files[0]!))).subarray(8, 12).toString('latin1')).toBe('WEBP');
  });

  it('in a terminal: a progress bar redrawn in place, its step advancing', async () => {
    const dir = path.join(out, 'tty');
    const command = [...CLI, 'a lighthouse in a terminal', '--steps', '12', '--width', '64', '--height', '64', '--out', dir].map(quote).join(' ');
    const run = await runCommand('script', ['-qefc', command, '/dev/null'], { env: { ...env, COLUMNS: '100' } });
    expect(run.code, run.out).toBe(0);
    const frames = run.out.split('\r').filter((f) => f.includes('%'));
    expect(frames.length, JSON.stringify(run.out)).toBeGreaterThan(2);
    const steps = new Set(frames.map((f) => /step (\d+)\/12/.exec(f)?.[1]).filter(Boolean));
    expect(steps.size, run.out).toBeGreaterThanOrEqual(2);
    expect(frames.at(-1)).toMatch(/\[#{24}\] 100%\s+SUCCEEDED/);
    expect(await readdir(dir)).toHaveLength(1);
  });

  it('--json prints the result for scripts', async () => {
    const dir = path.join(out, 'json');
    const run = await runCommand(CLI[0]!, [...CLI.slice(1), 'json please', '--steps', '2', '--width', '64', '--height', '64', '--batch-size', '2', '--json', '--out', dir], { env });
    expect(run.code, run.out).toBe(0);
    const result = JSON.parse(run.out) as { id: string; status: string; images: Array<{ file: string; url: string }> };
    expect(result.status).toBe('SUCCEEDED');
    expect(result.images).toHaveLength(2);
    for (const image of result.images) expect(existsSync(image.file)).toBe(true);
  });

  it('exits 1 with the error code on failure, and 2 with the usage for a bad command line', async () => {
    const denied = await runCommand(CLI[0]!, [...CLI.slice(1), 'no entry', '--token', 'sdk_wrong'], { env });
    expect(denied.code).toBe(1);
    expect(denied.out).toMatch(/UNAUTHENTICATED/);
    const bad = await runCommand(CLI[0]!, [...CLI.slice(1), 'too wide', '--width', '63'], { env });
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/BAD_USER_INPUT/);
    const usage = await runCommand(CLI[0]!, [...CLI.slice(1), '--steps', 'many', 'x'], { env });
    expect(usage.code).toBe(2);
    expect(usage.out).toMatch(/--steps must be a number[\s\S]*usage: sd-jobs/);
  });

  it('Ctrl-C cancels the generation and exits 130', async () => {
    stack.sim.pause();
    try {
      const cli = spawnWatched(CLI[0]!, [...CLI.slice(1), 'stop me', '--steps', '20', '--width', '64', '--height', '64', '--out', path.join(out, 'cancelled')], { env });
      await cli.waitFor(/^(STARTED|GENERATING)/m);
      cli.child.kill('SIGINT');
      expect(await cli.exited).toBe(130);
      expect(cli.output()).toMatch(/cancelled/);
      const row = await stack.tdb.db('generations').whereRaw(`input->>'prompt' = ?`, ['stop me']).first<{ status: string }>('status');
      expect(row?.status).toBe('CANCELLED');
    } finally {
      stack.sim.resume();
    }
  });
});
