/**
 * Time per sampling step when none is given: a 20-step 512×512 image takes 10 s, the pace of a
 * mid-range consumer GPU (2 it/s), so a person who runs Generate in GraphiQL and pastes the id into
 * Watch still sees it sample step by step. Tests pass their own.
 * (Its own module so that config.ts can name it without loading the simulator.)
 */
export const DEFAULT_STEP_MS = 500;
