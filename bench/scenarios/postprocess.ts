import type { Scenario } from '../lib/types';

// Placeholder until the scenario is written.
export const scenario: Scenario = {
  id: 'postprocess',
  title: 'postprocess (not written yet)',
  run: async () => ({ rows: [], targets: [], notes: ['not measured yet'] }),
};
