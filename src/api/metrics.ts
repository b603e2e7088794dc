/**
 * The API's Prometheus metrics at /metrics: GraphQL operation latency by operation name and type
 * (`sdjobs_graphql_operation_duration_seconds`, a histogram; subscriptions are counted by how long
 * their setup took, not how long they stay open), the progress streams open now
 * (`sdjobs_open_subscriptions`), the credits this process charges and refunds
 * (`sdjobs_credits_charged_total`, `sdjobs_credits_refunded_total{reason}`, src/credits/meter.ts),
 * and the process's own (`process_*`, `nodejs_*`).
 *
 * Operation names come from clients: a name that is not a plain identifier, or one past the first
 * MAX_OPERATION_NAMES seen, is counted as `other`, so no client can grow the label set without end.
 */
import { getOperationAST, type DocumentNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { creditMeter, type CreditMeter } from '../credits/meter';
import type { MetricsEndpoint } from '../health';

export const MAX_OPERATION_NAMES = 200;
const PLAIN_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
/** Seconds: a cached `me` takes a millisecond, a mutation a few, a slow resolver seconds. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function apiMetrics(openStreams: () => number): { plugin: Plugin; endpoint: MetricsEndpoint; credits: CreditMeter } {
  const registry = new Registry();
  const latency = new Histogram({
    name: 'sdjobs_graphql_operation_duration_seconds',
    help: 'GraphQL operations by name and type: execution time (a subscription: its setup).',
    labelNames: ['operation_name', 'operation_type'],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  new Gauge({
    name: 'sdjobs_open_subscriptions',
    help: 'Progress streams open on this API process.',
    registers: [registry],
    collect() {
      this.set(openStreams());
    },
  });
  const credits = creditMeter(registry);
  const names = new Set<string>();
  const labelOf = (name: string | undefined): string => {
    if (!name) return 'anonymous';
    if (!PLAIN_NAME.test(name)) return 'other';
    if (names.has(name)) return name;
    if (names.size >= MAX_OPERATION_NAMES) return 'other';
    names.add(name);
    return name;
  };
  const timed = (document: DocumentNode, operationName: string | null | undefined) => {
    const started = performance.now();
    const operation = getOperationAST(document, operationName ?? undefined);
    const labels = { operation_name: labelOf(operation?.name?.value), operation_type: operation?.operation ?? 'unknown' };
    return () => latency.observe(labels, (performance.now() - started) / 1000);
  };
  let defaults = false;

  const plugin: Plugin = {
    onExecute({ args }) {
      const done = timed(args.document, args.operationName);
      return { onExecuteDone: () => done() };
    },
    onSubscribe({ args }) {
      const done = timed(args.document, args.operationName);
      return { onSubscribeResult: () => done(), onSubscribeError: () => done() };
    },
  };
  return {
    plugin,
    credits,
    endpoint: {
      contentType: registry.contentType,
      async render() {
        // The process collectors start with the first scrape, not with every API built (tests build many).
        if (!defaults) {
          collectDefaultMetrics({ register: registry });
          defaults = true;
        }
        return registry.metrics();
      },
    },
  };
}
