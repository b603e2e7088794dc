/**
 * Idempotent submit: what a key may be, and what "the same input" means.
 *
 * A key is 1 to 255 printable ASCII characters (space to `~`), as an HTTP header value can carry it
 * unchanged. Two requests with one key are the same request when the hash below is equal: the
 * sha256 of the canonical JSON (keys sorted) of the input as checked and normalised by the rules
 * (defaults applied, text trimmed, `negativePrompt` null and empty alike), together with
 * `startDeadlineSeconds` and the webhook asked for (its URL and sorted events). So a retry that only
 * spells a default out, reorders fields or adds surrounding spaces is the same request; any change
 * to what would be generated, when it must start or where it is reported is a different one.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { GenerationInput } from './input';

export const IDEMPOTENCY_KEY_MAX_LENGTH = 255;

const KEY_MESSAGE = `idempotencyKey must be 1 to ${IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters (space to ~)`;

/** The key's rule, shared by GraphQL's input and REST's Idempotency-Key header. */
export const idempotencyKeySchema = z
  .string()
  .min(1, KEY_MESSAGE)
  .max(IDEMPOTENCY_KEY_MAX_LENGTH, KEY_MESSAGE)
  .regex(/^[\x20-\x7e]+$/, KEY_MESSAGE);

/** startDeadlineSeconds' rule: a whole number of seconds, 1 to START_DEADLINE_MAX_S. */
export const startDeadlineSchema = (maxS: number) =>
  z
    .number()
    .int('startDeadlineSeconds must be a whole number of seconds')
    .min(1, 'startDeadlineSeconds must be at least 1')
    .max(maxS, `startDeadlineSeconds must be at most ${maxS} (START_DEADLINE_MAX_S)`);

/** Everything a request asks for that the key stands for. */
export interface SubmittedRequest {
  input: GenerationInput;
  startDeadlineSeconds: number | null;
  webhook: { url: string; events: readonly string[] } | null;
}

export function requestHash(req: SubmittedRequest): string {
  const canonical = canonicalJson({
    input: req.input,
    startDeadlineSeconds: req.startDeadlineSeconds,
    webhook: req.webhook ? { url: req.webhook.url, events: [...new Set(req.webhook.events)].sort() } : null,
  });
  return createHash('sha256').update(canonical).digest('hex');
}

/** JSON with object keys sorted at every level and undefined as null: one text per value. */
function canonicalJson(v: unknown): string {
  if (v === undefined || v === null) return 'null';
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}
