import type { GenerationStatus } from '../generation/lifecycle';

/** One state of a generation as clients see it (the GraphQL `GenerationProgress`). */
export interface ProgressEvent {
  generationId: string;
  /** Increases by one with every published state of this generation; 0 for a state read from Postgres. */
  seq: number;
  status: GenerationStatus;
  /** 0..1, never goes back. */
  progress: number;
  step: number | null;
  totalSteps: number | null;
  etaSeconds: number | null;
  queuePosition: number | null;
  preview: string | null;
  attempt: number;
  error: { code: string; message: string; retryable: boolean } | null;
  images: ProgressImage[];
}

/**
 * An image as events and snapshots carry it: storage keys, never URLs. URLs expire, so the API makes
 * them from the keys for each answer it sends (GraphQL `GeneratedImage.url`, `thumbnailUrl`).
 */
export interface ProgressImage {
  key: string;
  thumbnailKey: string;
  width: number;
  height: number;
  blurhash: string;
  seed: number | null;
}

/** What a publisher sends; `seq` is assigned and `progress` clamped by Redis, atomically. */
export type ProgressUpdate = Omit<ProgressEvent, 'seq'>;

export const progressKey = (prefix: string, generationId: string) => `${prefix}:progress:${generationId}`;
/** The pub/sub channel has the same name as the snapshot key; they live in different namespaces. */
export const progressChannel = progressKey;
