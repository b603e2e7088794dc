import type { Scenario } from '../lib/types';

/** Every scenario, in the order `npm run bench` runs them. Each lives in its own file. */
export const SCENARIOS: Scenario[] = [];
