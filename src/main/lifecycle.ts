/**
 * Process-level plumbing shared by the entries (api, worker, dev): only entries listen to signals.
 * The first SIGTERM or SIGINT closes in order (stop intake, drain, close pools and connections).
 */
import { ConfigError } from '../config';
import type { Logger } from '../logger';
import { SchemaBehindError } from '../db/migrate';

/**
 * A signal that arrives again within this long is the same request delivered twice, not a second
 * one: a terminal or a process manager signals the whole process group, and a parent in it (npm,
 * a shell) forwards the signal to us again a few milliseconds later.
 */
export const DUPLICATE_SIGNAL_WINDOW_MS = 2000;

export interface SignalHandling {
  close(): Promise<void>;
  log: Logger;
  exit(code: number): void;
  /** The clock (tests move it). */
  now?: () => number;
}

/**
 * What to do with each SIGTERM/SIGINT: the first closes and exits 0 (1 if closing failed). Later
 * signals never cut the drain short, except a second Ctrl-C (SIGINT) past the duplicate window: a
 * person at a terminal asking for "now". A repeated SIGTERM is left to the process manager's own
 * deadline (Docker, Kubernetes and systemd follow it with SIGKILL), so running jobs get their
 * whole shutdown time.
 */
export function signalHandler({ close, log, exit, now = Date.now }: SignalHandling): (signal: NodeJS.Signals) => void {
  let firstAt: number | undefined;
  return (signal) => {
    if (firstAt !== undefined) {
      const since = now() - firstAt;
      if (since <= DUPLICATE_SIGNAL_WINDOW_MS) {
        log.debug({ signal, sinceMs: since }, 'the same signal again (delivered to the process group and forwarded): still shutting down');
        return;
      }
      if (signal === 'SIGINT') {
        log.warn({ signal }, 'second Ctrl-C: exiting now without waiting for running work');
        exit(1);
        return;
      }
      log.warn({ signal }, 'already shutting down (press Ctrl-C again or send SIGKILL to exit at once)');
      return;
    }
    firstAt = now();
    log.info({ signal }, 'shutting down');
    close().then(
      () => exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        exit(1);
      },
    );
  };
}

/** Only the process entries call this: it takes over SIGTERM and SIGINT (see `signalHandler`). */
export function closeOnSignals(close: () => Promise<void>, log: Logger): void {
  const onSignal = signalHandler({ close, log, exit: (code) => process.exit(code) });
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/** Prints a start-up failure the way its kind deserves: a config or schema problem is one clear line. */
export function exitOnStartupError(err: unknown, log?: Logger): never {
  if (err instanceof ConfigError || err instanceof SchemaBehindError) {
    process.stderr.write(`\n${err.message}\n\n`);
  } else if (log) {
    log.fatal({ err }, 'failed to start');
  } else {
    process.stderr.write(`failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  }
  process.exit(1);
}
