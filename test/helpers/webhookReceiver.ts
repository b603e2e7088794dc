/**
 * A real webhook receiver for the tests (node:http on 127.0.0.1, in this process): it records every
 * request it gets, raw body and headers, per path, and its answers are scripted per path (a status
 * for the next tries, a redirect, or no answer at all: a receiver that hangs).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedHook {
  path: string;
  headers: Record<string, string>;
  /** The raw body, as signed. */
  body: string;
}

type Script = { kind: 'status'; status: number; times: number } | { kind: 'hang'; times: number } | { kind: 'redirect'; to: string };

export interface TestReceiver {
  /** http://127.0.0.1:<port> */
  origin: string;
  /** Requests to `path`, in arrival order (answered or not). */
  received(path: string): ReceivedHook[];
  /** Requests to `path` held open right now (a hanging receiver). */
  open(path: string): number;
  /** Answers the next `times` requests to `path` with `status` (then 204). */
  replyWith(path: string, status: number, times?: number): void;
  /** Holds the next `times` requests to `path` open without an answer, until the client gives up. */
  hang(path: string, times?: number): void;
  /** Answers every request to `path` with a 302 to `to`. */
  redirect(path: string, to: string): void;
  /** Resolves with the first request to `path` matching `pred` (already received or future). */
  waitFor(path: string, pred?: (h: ReceivedHook) => boolean): Promise<ReceivedHook>;
  close(): Promise<void>;
}

export async function startReceiver(): Promise<TestReceiver> {
  const received: ReceivedHook[] = [];
  const scripts = new Map<string, Script>();
  const held = new Map<string, Set<http.ServerResponse>>();
  const waiters: Array<{ path: string; pred: (h: ReceivedHook) => boolean; resolve: (h: ReceivedHook) => void }> = [];

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const hook: ReceivedHook = { path, headers: req.headers as Record<string, string>, body: Buffer.concat(chunks).toString('utf8') };
      received.push(hook);
      const script = scripts.get(path);
      if (script?.kind === 'hang' && script.times > 0) {
        script.times--;
        const open = held.get(path) ?? new Set();
        held.set(path, open);
        open.add(res);
        res.on('close', () => open.delete(res));
      } else if (script?.kind === 'redirect') {
        res.writeHead(302, { location: script.to }).end();
      } else if (script?.kind === 'status' && script.times > 0) {
        script.times--;
        res.writeHead(script.status).end('no');
      } else {
        res.writeHead(204).end();
      }
      for (const w of [...waiters]) {
        if (w.path === path && w.pred(hook)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(hook);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    origin: `http://127.0.0.1:${port}`,
    received: (path) => received.filter((h) => h.path === path),
    open: (path) => held.get(path)?.size ?? 0,
    replyWith: (path, status, times = Infinity) => void scripts.set(path, { kind: 'status', status, times }),
    hang: (path, times = Infinity) => void scripts.set(path, { kind: 'hang', times }),
    redirect: (path, to) => void scripts.set(path, { kind: 'redirect', to }),
    waitFor(path, pred = () => true) {
      const found = received.find((h) => h.path === path && pred(h));
      if (found) return Promise.resolve(found);
      return new Promise((resolve) => waiters.push({ path, pred, resolve }));
    },
    async close() {
      for (const open of held.values()) for (const res of open) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
