/**
 * The abuse limits (src/limits/) raised past what a bench sends as one user, but left on, so that
 * their Redis calls stay in what is measured: the rate counter of every generateImage, the slot
 * of every progress stream.
 */
export const BENCH_LIMITS_ENV = {
  RATE_LIMIT_GENERATIONS_PER_MINUTE: '1000000000',
  MAX_UNFINISHED_GENERATIONS_PER_USER: '1000000',
  MAX_SUBSCRIPTIONS_PER_USER: '1000000',
  MAX_SUBSCRIPTIONS_PER_PROCESS: '0',
} as const satisfies Record<string, string>;
