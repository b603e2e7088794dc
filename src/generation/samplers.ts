/**
 * The samplers a request may name. Workers read the list from their Stable Diffusion server at start
 * and store it in Redis; the API reads it from there (refreshed in the background), so the API never
 * calls the SD server itself. Until a worker has reported, A1111's standard list is used.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import { A1111_SAMPLERS } from '../sd/samplers';
import type { SamplerCheck } from './input';

/** Used until a worker has reported its server's list. */
export const DEFAULT_SAMPLERS = A1111_SAMPLERS;

export const samplersKey = (prefix: string) => `${prefix}:sd:samplers`;

/** Stored by a worker after it has asked its SD server; kept for a day, refreshed at every start. */
export async function storeSamplers(redis: Redis, prefix: string, samplers: readonly string[]): Promise<void> {
  await redis.set(samplersKey(prefix), JSON.stringify(samplers), 'EX', 86_400);
}

export class SamplerCatalog implements SamplerCheck {
  private names: ReadonlySet<string> = new Set(DEFAULT_SAMPLERS);
  private ordered: readonly string[] = DEFAULT_SAMPLERS;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly log: Logger,
  ) {}

  has(name: string): boolean {
    return this.names.has(name);
  }

  list(): readonly string[] {
    return this.ordered;
  }

  async refresh(): Promise<void> {
    try {
      const raw = await this.redis.get(samplersKey(this.prefix));
      if (!raw) return;
      const parsed: unknown = JSON.parse(raw);
      if (Array.isArray(parsed) && parsed.length > 0 && parsed.every((s) => typeof s === 'string')) {
        this.ordered = parsed;
        this.names = new Set(parsed);
      }
    } catch (err) {
      this.log.warn({ err }, 'could not refresh the sampler list; keeping the previous one');
    }
  }

  /** Loads once, then refreshes every `intervalMs` until close(). */
  async start(intervalMs = 60_000): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), intervalMs);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }
}
