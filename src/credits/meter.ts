/**
 * Credits charged and refunded, counted where it happens: the API charges (generateImage) and
 * refunds what it ends itself (a cancel, a job that could not be queued); a worker refunds the
 * generations it fails, its sweep those it gives up. Each process shows its own counts on its
 * /metrics (`sdjobs_credits_charged_total`, `sdjobs_credits_refunded_total{reason}`); Prometheus
 * sums them. Counting is an addition in memory, after the statement that moved the credits.
 */
import { Counter, type Registry } from 'prom-client';

export type RefundReason = 'failed' | 'cancelled';

export interface CreditMeter {
  charged(credits: number): void;
  refunded(credits: number, reason: RefundReason): void;
}

/** The two counters, registered in `registry`. */
export function creditMeter(registry: Registry): CreditMeter {
  const charged = new Counter({ name: 'sdjobs_credits_charged_total', help: 'Photo credits charged for generations by this process.', registers: [registry] });
  const refunded = new Counter({
    name: 'sdjobs_credits_refunded_total',
    help: 'Photo credits given back by this process, by reason (failed, cancelled).',
    labelNames: ['reason'],
    registers: [registry],
  });
  // Both reasons exist from the start, so a rate() over them never starts from a missing series.
  refunded.inc({ reason: 'failed' }, 0);
  refunded.inc({ reason: 'cancelled' }, 0);
  return {
    charged: (credits) => charged.inc(credits),
    refunded: (credits, reason) => refunded.inc({ reason }, credits),
  };
}
