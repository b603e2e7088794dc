/** Runs a command to its end and returns its exit code and output (stdout then stderr); never throws. */
import { execFile, type ExecFileOptions } from 'node:child_process';
import { promisify } from 'node:util';
import { PROCESS_START_MS } from './budgets';

const exec = promisify(execFile);

export async function runCommand(command: string, args: string[], opts: ExecFileOptions = {}): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await exec(command, args, { timeout: PROCESS_START_MS, maxBuffer: 16 << 20, ...opts, encoding: 'utf8' });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}
