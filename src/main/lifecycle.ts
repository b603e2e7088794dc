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

/**
 * Closes on the first SIGTERM/SIGINT and exits 0 (1 if closing failed). Later signals never cut the
 * drain short, except a second Ctrl-C (SIGINT) past the duplicate window: a person at a terminal
 * asking for "now". A repeated SIGTERM is left to the process manager's own deadline (Docker,
 * Kubernetes and systemd follow it with SIGKILL), so the running jobs get their whole shutdown time.
 */
export function closeOnSignals(close: () => Promise<void>, log: Logger): void {
  let firstAt: number | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (firstAt !== undefined) {
      const since = Date.now() - firstAt;
      if (since <= DUPLICATE_SIGNAL_WINDOW_MS) {
        log.debug({ signal, sinceMs: since }, 'the same signal again (delivered to the process group and forwarded): still shutting down');
        return;
      }
      if (signal === 'SIGINT') {
        log.warn({ signal }, 'second Ctrl-C: exiting now without waiting for running work');
        process.exit(1);
      }
      log.warn({ signal }, 'already shutting down (press Ctrl-C again or send SIGKILL to exit at once)');
      return;
    }
    firstAt = Date.now();
    log.info({ signal }, 'shutting down');
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
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
