/**
 * Time budgets of the tests that start processes or browsers. They bound a hang; they are never
 * what a test checks, so they are generous multiples of what was measured on the 2-core CI machine
 * (December 2026), idle and with four busy loops beside it (`npm run test:busy -- --hogs=4`):
 * - an entry loading the API's modules (`node --import tsx src/main/api.ts --help`): 1.6–1.8 s idle,
 *   3.7–4.3 s busy, and 7 s once with other test files also running;
 * - `npm run dev` from an empty folder to its token (PGlite's first migration): 6 s idle, 14 s busy;
 * - the whole suite: about 160 s idle, 247–271 s busy.
 */

/** One process, from spawn to ready (its log line, its health answer, or its exit). */
export const PROCESS_START_MS = 120_000;
/** A test that starts several processes one after the other. */
export const PROCESSES_TEST_MS = 360_000;
/** A browser page, from navigation to a usable UI element. */
export const BROWSER_UI_MS = 60_000;
/**
 * `npm run bench -- --quick` inside the suite: about 30 s idle; 70 s at a load average of 10 on
 * 2 cores alone, and past 240 s beside the other test files on a machine loaded to 15.
 */
export const BENCH_QUICK_MS = 900_000;
/** Waiting for a state that should come within moments (a job active, a counter reached). */
export const WAIT_MS = 30_000;
