import type { Logger } from '../logger';

/**
 * Logs a limit's Redis going away once, and its return once, however many requests meet the
 * outage in between (each of them would otherwise add a line).
 */
export class OutageLog {
  private down = false;

  constructor(
    private readonly log: Logger,
    /** What happens to requests meanwhile, for the log line ("allowed", "refused"). */
    private readonly meanwhile: string,
  ) {}

  failed(err: unknown, limit: string): void {
    if (this.down) return;
    this.down = true;
    this.log.warn({ err: err instanceof Error ? err.message : String(err), limit }, `rate limits: Redis unreachable; ${this.meanwhile} until it answers again`);
  }

  ok(): void {
    if (!this.down) return;
    this.down = false;
    this.log.info(`rate limits: Redis answers again; limits apply (${this.meanwhile} while it was away)`);
  }
}
