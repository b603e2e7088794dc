/**
 * Reading A1111's two progress endpoints into one `SdProgress` shape. Pure functions: the polling
 * loop in `client.ts` owns timing and state (last preview id / image) and passes it in.
 *
 * Glossary: "internal" = `POST /internal/progress`, per task id, registered only with the web UI
 * and not behind --api-auth; "global" = `GET /sdapi/v1/progress`, whatever job runs right now.
 */
import { isRecord } from './errors';

export interface SdProgress {
  phase: 'queued' | 'active';
  /** From "In queue: i/n" (i), null if unknown. */
  queuePosition: number | null;
  /** 0..1 of this task. */
  progress: number;
  step: number | null;
  totalSteps: number | null;
  etaSeconds: number | null;
  /** Only when a NEW live preview arrived. */
  preview: { id: number; dataUri: string } | null;
}

/** What one poll of /internal/progress tells about our task. */
export type InternalReading =
  | { kind: 'progress'; progress: SdProgress; previewId: number | null }
  /** The server remembers the task as finished. */
  | { kind: 'completed' }
  /** The server does not know the id (not registered yet, or forgotten). */
  | { kind: 'unknown' };

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const clamp01 = (v: number) => Math.min(1, Math.max(0, v));

/** Parses "In queue: 2/5" → 2. */
export function parseQueuePosition(textinfo: unknown): number | null {
  if (typeof textinfo !== 'string') return null;
  const m = /In queue:\s*(\d+)\s*\/\s*\d+/i.exec(textinfo);
  return m ? Number(m[1]) : null;
}

/**
 * @param steps the request's steps: the internal endpoint has no step fields, and A1111's
 *   `textinfo` there is not a reliable step counter, so step = round(progress × steps).
 * @param lastPreviewId the id we sent; a preview only counts when the server's id differs.
 */
export function readInternalProgress(body: unknown, steps: number, lastPreviewId: number): InternalReading | null {
  if (!isRecord(body)) return null;
  // Order matters: a retried task id can be both pending again and remembered as finished.
  if (body.active === true) {
    const progress = clamp01(num(body.progress) ?? 0);
    const previewId = num(body.id_live_preview);
    const fresh =
      typeof body.live_preview === 'string' && previewId !== null && previewId !== lastPreviewId
        ? { id: previewId, dataUri: body.live_preview }
        : null;
    return {
      kind: 'progress',
      previewId: fresh ? fresh.id : null,
      progress: {
        phase: 'active',
        queuePosition: null,
        progress,
        step: Math.min(steps, Math.max(0, Math.round(progress * steps))),
        totalSteps: steps,
        etaSeconds: progress > 0 ? nonNegative(num(body.eta)) : null,
        preview: fresh,
      },
    };
  }
  if (body.queued === true) {
    return { kind: 'progress', previewId: null, progress: queued(parseQueuePosition(body.textinfo)) };
  }
  if (body.completed === true) return { kind: 'completed' };
  return { kind: 'unknown' };
}

/**
 * Reads `GET /sdapi/v1/progress`. LIMITATION: this endpoint is global; it cannot tell whose job
 * runs. Whatever job is active is taken to be ours, so while another client's job runs ahead of
 * ours we report its progress. Idle (job_count 0) reads as queued at an unknown position.
 *
 * @param lastImage the raw base64 of the last preview reported, to report only new ones.
 */
export function readGlobalProgress(
  body: unknown,
  steps: number,
  lastImage: string | null,
): { progress: SdProgress; image: string | null } | null {
  if (!isRecord(body)) return null;
  const state = isRecord(body.state) ? body.state : {};
  if ((num(state.job_count) ?? 0) <= 0) return { progress: queued(null), image: null };
  const progress = clamp01(num(body.progress) ?? 0);
  const totalSteps = num(state.sampling_steps) || steps;
  const step = num(state.sampling_step);
  const image = typeof body.current_image === 'string' && body.current_image !== '' ? body.current_image : null;
  const fresh = image !== null && image !== lastImage;
  return {
    image: fresh ? image : null,
    progress: {
      phase: 'active',
      queuePosition: null,
      progress,
      step: step === null ? null : Math.min(totalSteps, Math.max(0, step)),
      totalSteps,
      etaSeconds: progress > 0 ? nonNegative(num(body.eta_relative)) : null,
      // The id is assigned by the caller, which counts previews for this call.
      preview: fresh ? { id: 0, dataUri: toDataUri(image) } : null,
    },
  };
}

/** A1111 sends `current_image` as raw base64 in its samples format (PNG by default). */
export function toDataUri(base64: string): string {
  if (base64.startsWith('data:')) return base64;
  const mime = base64.startsWith('/9j/') ? 'image/jpeg' : base64.startsWith('UklGR') ? 'image/webp' : 'image/png';
  return `data:${mime};base64,${base64}`;
}

function queued(queuePosition: number | null): SdProgress {
  return { phase: 'queued', queuePosition, progress: 0, step: null, totalSteps: null, etaSeconds: null, preview: null };
}

function nonNegative(v: number | null): number | null {
  return v === null ? null : Math.max(0, v);
}
