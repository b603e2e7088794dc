import type { Scenario } from '../lib/types';
import { scenario as jobs } from './jobs';
import { scenario as mutation } from './mutation';
import { scenario as progress } from './progress';
import { scenario as fanout } from './fanout';
import { scenario as postprocess } from './postprocess';
import { scenario as e2e } from './e2e';
import { scenario as fleet } from './fleet';

/** Every scenario, in the order `npm run bench` runs them. Each lives in its own file. */
export const SCENARIOS: Scenario[] = [jobs, mutation, progress, fanout, postprocess, e2e, fleet];
