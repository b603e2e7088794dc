import type { ProgressUpdate } from '../../src/progress/event';

/** A progress update for tests: GENERATING-like defaults, overridable. */
export const progressUpdate = (
  generationId: string,
  status: ProgressUpdate['status'],
  progress: number,
  extra: Partial<ProgressUpdate> = {},
): ProgressUpdate => ({
  generationId,
  status,
  progress,
  step: null,
  totalSteps: 20,
  etaSeconds: null,
  queuePosition: null,
  preview: null,
  attempt: 1,
  error: null,
  images: [],
  ...extra,
});
