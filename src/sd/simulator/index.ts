/** The A1111-compatible simulator: build it with `createSdSimulator`, run it with `main.ts`. */
export { DEFAULT_STEP_MS } from './defaults';
export { createSdSimulator, DEFAULT_SAMPLERS, FAILURE_MODES } from './simulator';
export type { FailureMode, SdSimulator, SimulatorOptions, SimulatorStats, TaskTiming } from './simulator';
