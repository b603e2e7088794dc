/** Child processes for tests: run one to its end, or start one and wait on what it prints. */
import { execFile, spawn, type ChildProcess, type ExecFileOptions, type SpawnOptions } from 'node:child_process';
import { promisify } from 'node:util';
import { PROCESS_START_MS } from './budgets';

const exec = promisify(execFile);

/** Runs a command to its end and returns its exit code and output (stdout then stderr); never throws. */
export async function runCommand(command: string, args: string[], opts: ExecFileOptions = {}): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await exec(command, args, { timeout: PROCESS_START_MS, maxBuffer: 16 << 20, ...opts, encoding: 'utf8' });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

export interface Watched {
  child: ChildProcess;
  /** Everything it printed so far, stdout and stderr together. */
  output(): string;
  /** Its exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** Resolves once its output matches `pattern`; fails if it exits first or the budget runs out. */
  waitFor(pattern: RegExp, ms?: number): Promise<void>;
}

/** Starts a long-running process and collects its output, for tests that wait on what it says. */
export function spawnWatched(command: string, args: string[], opts: SpawnOptions = {}): Watched {
  let out = '';
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    exited,
    async waitFor(pattern, ms = PROCESS_START_MS) {
      const deadline = Date.now() + ms;
      while (!pattern.test(out)) {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited before ${pattern}:\n${out}`);
        if (Date.now() > deadline) throw new Error(`no ${pattern} within ${ms} ms in:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}
