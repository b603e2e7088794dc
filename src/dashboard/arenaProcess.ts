/**
 * Keeps the dashboard's process (./arenaMain.ts) for the API and passes requests to it. The process
 * is started on the first request that needs it, and again on the next one after it died; a
 * request it cannot answer gets 502, and the API goes on whatever happened to it. Its Unix socket
 * lies in a folder only this user can open, so nothing reaches arena except through the API's
 * sign-in. close() (safe to call twice) ends it and removes the folder.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../logger';
import type { ArenaSettings } from './arenaApp';
import type { ArenaProcessSettings } from './arenaMain';

/** From fork to listening: it loads tsx, express and handlebars (a few seconds on a busy machine). */
const START_TIMEOUT_MS = 120_000;
/** What the API keeps of the process's stderr, to log when it dies (its last words). */
const STDERR_TAIL = 4000;
/** Request headers not passed on: the admin's credentials stay in the API, and hop-by-hop ones. */
const DROPPED_HEADERS = new Set(['authorization', 'cookie', 'connection', 'keep-alive', 'upgrade', 'proxy-authorization', 'te', 'trailer']);

export class ArenaProcess {
  private child: ChildProcess | undefined;
  private starting: Promise<string> | undefined;
  private dir: string | undefined;
  private closed = false;

  constructor(
    private readonly settings: ArenaSettings & { logLevel: string },
    private readonly log: Logger,
  ) {}

  /** Answers the request through the dashboard's process. */
  async forward(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let socketPath: string;
    try {
      socketPath = await this.socket();
    } catch (err) {
      this.log.error({ err }, 'the dashboard process could not be started');
      return unavailable(res);
    }
    const headers: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) if (!DROPPED_HEADERS.has(name)) headers[name] = value;
    await new Promise<void>((resolve) => {
      const upstream = http.request({ socketPath, path: req.url, method: req.method, headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
        answer.on('end', resolve);
        answer.on('error', () => {
          res.destroy();
          resolve();
        });
      });
      // The admin's browser went away before the answer ended: stop asking the dashboard process too.
      let gone = false;
      res.once('close', () => {
        if (res.writableFinished) return;
        gone = true;
        upstream.destroy();
        resolve();
      });
      upstream.on('error', (err) => {
        if (gone) return resolve();
        // The process died with the request (or just before it): this answer is lost, the API is not.
        this.log.warn({ err: err.message, url: req.url }, 'the dashboard process did not answer');
        if (res.headersSent) res.destroy();
        else unavailable(res);
        resolve();
      });
      req.pipe(upstream);
    });
  }

  /** The socket of a running dashboard process, started if there is none. */
  private socket(): Promise<string> {
    if (this.closed) return Promise.reject(new Error('the API is closing'));
    this.starting ??= this.start().catch((err: unknown) => {
      this.starting = undefined;
      throw err;
    });
    return this.starting;
  }

  private async start(): Promise<string> {
    this.dir ??= await mkdtemp(path.join(os.tmpdir(), 'sdjobs-dashboard-'));
    const socketPath = path.join(this.dir, `arena-${Date.now()}.sock`);
    // Only what it needs: no database URL, no secrets of the API's environment.
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, NODE_ENV: process.env.NODE_ENV };
    const child = fork(fileURLToPath(new URL('./arenaMain.ts', import.meta.url)), [], {
      execArgv: ['--import', 'tsx'],
      env,
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
      serialization: 'json',
    });
    this.child = child;
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-STDERR_TAIL)));
    child.once('exit', (code, signal) => {
      if (this.child === child) {
        this.child = undefined;
        this.starting = undefined;
      }
      if (!this.closed) this.log.error({ code, signal, stderr }, 'the dashboard process exited; it starts again on the next request');
    });
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the dashboard process did not start within ${START_TIMEOUT_MS} ms`));
      }, START_TIMEOUT_MS);
      const failed = (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(`the dashboard process exited before it was ready: ${stderr}`));
      };
      child.once('error', failed);
      child.once('exit', failed);
      child.once('message', (m: unknown) => {
        clearTimeout(timer);
        child.off('exit', failed);
        if ((m as { ready?: unknown } | null)?.ready === true) resolve(socketPath);
        else reject(new Error('the dashboard process answered something other than ready'));
      });
      const message: ArenaProcessSettings = { ...this.settings, socketPath };
      child.send(message);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

function unavailable(res: http.ServerResponse): void {
  res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' }).end('The queue dashboard is not available right now; try again in a moment.');
}
