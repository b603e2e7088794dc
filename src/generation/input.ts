/**
 * The checked input of a generation. The zod schema is built from the configured limits, which
 * exist to protect the GPU: every request that passes can run on the server without surprises.
 */
import { z } from 'zod';
import type { Config } from '../config';

export const SEED_MAX = 4294967295;

export interface GenerationInput {
  prompt: string;
  negativePrompt: string;
  characterName: string | null;
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  sampler: string;
  /** -1 asks the server for a random seed. */
  seed: number;
  batchSize: number;
}

/** Answers whether the Stable Diffusion server offers a sampler (see SamplerCatalog). */
export interface SamplerCheck {
  has(name: string): boolean;
  list(): readonly string[];
}

export function generationInputSchema(limits: Config['limits'], samplers: SamplerCheck) {
  const side = (name: string) =>
    z
      .number()
      .int()
      .min(limits.imageMinSize, `${name} must be at least ${limits.imageMinSize}`)
      .max(limits.imageMaxSize, `${name} must be at most ${limits.imageMaxSize}`)
      .refine((v) => v % 8 === 0, `${name} must be a multiple of 8`);
  return z
    .object({
      prompt: z
        .string()
        .trim()
        .min(1, 'prompt must not be empty')
        .max(limits.promptMaxLength, `prompt must be at most ${limits.promptMaxLength} characters`),
      negativePrompt: z
        .string()
        .trim()
        .max(limits.negativePromptMaxLength, `negativePrompt must be at most ${limits.negativePromptMaxLength} characters`)
        .nullish()
        .transform((v) => v ?? ''),
      characterName: z
        .string()
        .trim()
        .max(limits.characterNameMaxLength, `characterName must be at most ${limits.characterNameMaxLength} characters`)
        .nullish()
        .transform((v) => (v ? v : null)),
      width: side('width'),
      height: side('height'),
      steps: z.number().int().min(1, 'steps must be at least 1').max(limits.stepsMax, `steps must be at most ${limits.stepsMax}`),
      cfgScale: z
        .number()
        .min(1, 'cfgScale must be at least 1')
        .max(limits.cfgScaleMax, `cfgScale must be at most ${limits.cfgScaleMax}`),
      sampler: z
        .string()
        .trim()
        .refine((s) => samplers.has(s), {
          error: (issue) =>
            `sampler "${String(issue.input)}" is not offered by the Stable Diffusion server; choose one of: ${samplers.list().join(', ')}`,
        }),
      seed: z
        .number()
        .int()
        .min(-1, 'seed must be -1 (random) or between 0 and 4294967295')
        .max(SEED_MAX, 'seed must be -1 (random) or between 0 and 4294967295'),
      batchSize: z
        .number()
        .int()
        .min(1, 'batchSize must be at least 1')
        .max(limits.batchSizeMax, `batchSize must be at most ${limits.batchSizeMax}`),
    })
    .refine((i) => i.width * i.height * i.batchSize <= limits.imageMaxPixels, {
      message: `width × height × batchSize must be at most ${limits.imageMaxPixels} pixels`,
      path: ['width'],
    }) satisfies z.ZodType<GenerationInput, unknown>;
}
