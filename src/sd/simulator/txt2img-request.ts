/**
 * Validation of a simulated `POST /sdapi/v1/txt2img` body, answering the way A1111 does:
 * FastAPI's 422 `{detail: [{loc, msg, type}]}` for wrong types, A1111's 400
 * `{error, detail, body, errors}` for an unknown sampler.
 */

export interface Txt2ImgParams {
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  sampler: string;
  /** As sent: -1 means random. */
  seed: number;
  subseed: number;
  batchSize: number;
  nIter: number;
  forceTaskId: string | null;
  sendImages: boolean;
  /** override_settings.enable_pnginfo; A1111's default is on. */
  pngInfo: boolean;
  /** The body merged over the defaults: A1111 echoes it as `parameters`. */
  echo: Record<string, unknown>;
}

export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export type ParseResult =
  | { ok: true; params: Txt2ImgParams }
  | { ok: false; status: number; payload: Record<string, unknown> };

/** Defaults of A1111's StableDiffusionTxt2ImgProcessingAPI for the fields the simulator reads. */
const DEFAULTS = {
  prompt: '',
  negative_prompt: '',
  seed: -1,
  subseed: -1,
  subseed_strength: 0,
  sampler_name: 'Euler',
  batch_size: 1,
  n_iter: 1,
  steps: 50,
  cfg_scale: 7.0,
  width: 512,
  height: 512,
  restore_faces: null,
  tiling: null,
  override_settings: {},
  override_settings_restore_afterwards: true,
  send_images: true,
  save_images: false,
  force_task_id: null,
  alwayson_scripts: {},
} satisfies Record<string, unknown>;

/** Bounds that keep the simulator from allocating absurd buffers; the real server would OOM. */
const LIMITS = { minSide: 8, maxSide: 8192, maxSteps: 1000, maxBatch: 64, maxIter: 16 } as const;

export const sdError = (error: string, detail: string) => ({ error, detail, body: '', errors: '' });

export const validationError = (issues: ValidationIssue[]) => ({ detail: issues });

export function parseTxt2ImgBody(body: unknown, samplers: readonly string[]): ParseResult {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { ok: false, status: 422, payload: validationError([{ loc: ['body'], msg: 'value is not a valid dict', type: 'type_error.dict' }]) };
  }
  const input = body as Record<string, unknown>;
  const merged: Record<string, unknown> = { ...DEFAULTS, ...input };
  const issues: ValidationIssue[] = [];

  const str = (key: string): string => {
    const v = merged[key];
    if (typeof v === 'string') return v;
    issues.push({ loc: ['body', key], msg: 'str type expected', type: 'type_error.str' });
    return '';
  };
  const int = (key: string, min: number, max: number): number => {
    const v = merged[key];
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      issues.push({ loc: ['body', key], msg: 'value is not a valid integer', type: 'type_error.integer' });
      return min;
    }
    if (v < min || v > max) {
      issues.push({
        loc: ['body', key],
        msg: `ensure this value is between ${min} and ${max}`,
        type: 'value_error.number.not_in_range',
      });
      return min;
    }
    return v;
  };
  const float = (key: string): number => {
    const v = merged[key];
    if (typeof v === 'number' && Number.isFinite(v)) return v;
    issues.push({ loc: ['body', key], msg: 'value is not a valid float', type: 'type_error.float' });
    return 0;
  };
  const bool = (key: string): boolean => {
    const v = merged[key];
    if (typeof v === 'boolean') return v;
    issues.push({ loc: ['body', key], msg: 'value could not be parsed to a boolean', type: 'type_error.bool' });
    return false;
  };

  const prompt = str('prompt');
  const negativePrompt = str('negative_prompt');
  const width = int('width', LIMITS.minSide, LIMITS.maxSide);
  const height = int('height', LIMITS.minSide, LIMITS.maxSide);
  const steps = int('steps', 1, LIMITS.maxSteps);
  const cfgScale = float('cfg_scale');
  const seed = int('seed', -1, Number.MAX_SAFE_INTEGER);
  const subseed = int('subseed', -1, Number.MAX_SAFE_INTEGER);
  const batchSize = int('batch_size', 1, LIMITS.maxBatch);
  const nIter = int('n_iter', 1, LIMITS.maxIter);
  const sendImages = bool('send_images');
  const forceTaskId = merged.force_task_id;
  if (forceTaskId !== null && typeof forceTaskId !== 'string') {
    issues.push({ loc: ['body', 'force_task_id'], msg: 'str type expected', type: 'type_error.str' });
  }
  const overrides = merged.override_settings;
  if (typeof overrides !== 'object' || overrides === null || Array.isArray(overrides)) {
    issues.push({ loc: ['body', 'override_settings'], msg: 'value is not a valid dict', type: 'type_error.dict' });
  }
  // Legacy clients send sampler_index (a name, despite the field's name).
  const samplerValue = input.sampler_name ?? input.sampler_index ?? DEFAULTS.sampler_name;
  if (typeof samplerValue !== 'string') {
    issues.push({ loc: ['body', 'sampler_name'], msg: 'str type expected', type: 'type_error.str' });
  }
  if (issues.length > 0) return { ok: false, status: 422, payload: validationError(issues) };

  const sampler = String(samplerValue);
  if (!samplers.includes(sampler)) return { ok: false, status: 400, payload: sdError('HTTPException', 'Sampler not found') };

  const pngInfoSetting = (overrides as Record<string, unknown>).enable_pnginfo;
  return {
    ok: true,
    params: {
      prompt,
      negativePrompt,
      width,
      height,
      steps,
      cfgScale,
      sampler,
      seed,
      subseed,
      batchSize,
      nIter,
      forceTaskId: typeof forceTaskId === 'string' && forceTaskId !== '' ? forceTaskId : null,
      sendImages,
      pngInfo: pngInfoSetting !== false,
      echo: { ...merged, sampler_name: sampler },
    },
  };
}
