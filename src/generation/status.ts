/** The states of a generation, in the order a successful one passes through them. */
export const GENERATION_STATUSES = [
  'QUEUED',
  'STARTED',
  'GENERATING',
  'POST_PROCESSING',
  'UPLOADING',
  'RETRYING',
  'SUCCEEDED',
  'FAILED',
  'CANCELLED',
] as const;
export type GenerationStatus = (typeof GENERATION_STATUSES)[number];

export const TERMINAL_STATUSES: ReadonlySet<GenerationStatus> = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);
export const isTerminal = (s: GenerationStatus): boolean => TERMINAL_STATUSES.has(s);
