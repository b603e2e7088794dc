/**
 * Child processes for the benchmarks: the thing measured and the load it is measured with run in
 * different processes, as they would in production. A child is a TypeScript module run through tsx
 * with an IPC channel; it reports with `process.send` and is told what to do the same way.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface BenchChild {
  readonly child: ChildProcess;
  /** Resolves with the first message matching `pred` (sent after this call). */
  next<T = unknown>(pred?: (m: T) => boolean, timeoutMs?: number): Promise<T>;
  send(message: unknown): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the child has exited. */
  stop(graceMs?: number): Promise<void>;
}

export function forkTs(moduleUrl: string | URL, opts: { args?: string[]; env?: Record<string, string>; gc?: boolean } = {}): BenchChild {
  const file = typeof moduleUrl === 'string' && !moduleUrl.startsWith('file:') ? moduleUrl : fileURLToPath(moduleUrl);
  const child = fork(file, opts.args ?? [], {
    execArgv: ['--import', 'tsx', ...(opts.gc ? ['--expose-gc'] : [])],
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    next<T>(pred: (m: T) => boolean = () => true, timeoutMs = 120_000) {
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`${file}: no expected message within ${timeoutMs} ms`));
        }, timeoutMs);
        const onMessage = (m: unknown) => {
          if (pred(m as T)) {
            cleanup();
            resolve(m as T);
          }
        };
        const onExit = (code: number | null) => {
          cleanup();
          reject(new Error(`${file} exited (${code}) before sending the expected message`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          child.off('message', onMessage);
          child.off('exit', onExit);
        };
        child.on('message', onMessage);
        child.once('exit', onExit);
      });
    },
    send(message) {
      child.send(message as never);
    },
    async stop(graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** In a child: sends a message to the parent (no-op without IPC). */
export function report(message: unknown): void {
  process.send?.(message);
}
