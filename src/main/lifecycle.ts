/**
 * Process-level plumbing shared by the entries (api, worker, dev): only entries listen to signals.
 * The first SIGTERM/SIGINT closes in order; a second one forces the exit.
 */
import { ConfigError } from '../config';
import type { Logger } from '../logger';
import { SchemaBehindError } from '../db/migrate';

export function closeOnSignals(close: () => Promise<void>, log: Logger): void {
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    signalled = true;
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
