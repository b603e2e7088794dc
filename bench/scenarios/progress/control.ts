/**
 * A small request/answer channel over a bench child's IPC: the bench asks (`ask`), the child answers
 * (`serveControl`). Every child answers `memory` (its heap and RSS after full garbage collections,
 * which needs --expose-gc), `cpu` (microseconds used so far) and `heapSnapshot` (writes one to the
 * given file, for diagnosis).
 */
import type http from 'node:http';
import v8 from 'node:v8';
import type { BenchChild } from '../../lib/processes';
import { report } from '../../lib/processes';

export interface MemoryFigures {
  heapUsed: number;
  rss: number;
  external: number;
  arrayBuffers: number;
}

interface ControlRequest {
  controlId: number;
  op: string;
  args?: unknown;
}

interface ControlAnswer {
  controlId: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}

type Handler = (args: unknown) => unknown;

const isRequest = (m: unknown): m is ControlRequest =>
  typeof m === 'object' && m !== null && 'controlId' in m && 'op' in m && typeof (m as ControlRequest).op === 'string';

/** Full collections until the heap stops shrinking (weak callbacks and finalizers run in between). */
export async function measureMemory(): Promise<MemoryFigures> {
  const gc = globalThis.gc;
  if (!gc) throw new Error('memory figures need the child to run with --expose-gc');
  let previous = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 8; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
    const used = process.memoryUsage().heapUsed;
    if (i >= 2 && used >= previous * 0.999) break;
    previous = used;
  }
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers };
}

export const connectionCount = (server: http.Server): Promise<number> =>
  new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));

/** In a child: answers the bench's requests; `memory` is built in. Exits when the bench goes away. */
export function serveControl(handlers: Record<string, Handler>): void {
  const all: Record<string, Handler> = {
    memory: () => measureMemory(),
    heapSnapshot: (file) => v8.writeHeapSnapshot(String(file)),
    /** Microseconds of CPU (user + system) this process has used so far. */
    cpu: () => {
      const c = process.cpuUsage();
      return c.user + c.system;
    },
    ...handlers,
  };
  process.on('message', (m: unknown) => {
    if (!isRequest(m)) return;
    const handler = all[m.op];
    void Promise.resolve()
      .then(() => {
        if (!handler) throw new Error(`unknown control op ${m.op}`);
        return handler(m.args);
      })
      .then(
        (value) => report({ controlId: m.controlId, ok: true, value } satisfies ControlAnswer),
        (err: unknown) =>
          report({ controlId: m.controlId, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies ControlAnswer),
      );
  });
  process.once('disconnect', () => process.exit(0));
}

let nextId = 0;

/** In the bench: sends one request to the child and resolves with its answer. */
export async function ask<T>(child: BenchChild, op: string, args?: unknown, timeoutMs = 120_000): Promise<T> {
  const controlId = ++nextId;
  const answer = child.next<ControlAnswer>((m) => typeof m === 'object' && m !== null && (m as ControlAnswer).controlId === controlId, timeoutMs);
  child.send({ controlId, op, args } satisfies ControlRequest);
  const a = await answer;
  if (!a.ok) throw new Error(`child ${op} failed: ${a.error ?? 'unknown error'}`);
  return a.value as T;
}

/** Asks until the child's server has no open connection left (the clients' sockets were closed). */
export async function waitForNoConnections(child: BenchChild, timeoutMs = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const n = await ask<number>(child, 'connections');
    if (n === 0) return;
    if (performance.now() > deadline) throw new Error(`${n} connections still open after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
