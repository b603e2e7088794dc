/**
 * The old service's request body for `POST /api/v1/generate-image/`: its snake_case fields, their
 * JSON types and defaults, and how a body becomes a checked GenerationInput. The types are checked
 * here, the way the Python service's pydantic model did; the rules (limits, samplers) are the very
 * zod schema GraphQL uses (generationInputSchema), and every problem is answered the way FastAPI
 * answered a bad body: `422 {"detail": [{"loc": ["body", field], "msg", "type"}]}`.
 */
import type { z } from 'zod';
import type { GenerationInput, generationInputSchema } from '../generation/input';
import { unstorableReason } from '../text';

type JsonType = 'string' | 'integer' | 'number';

interface BodyField {
  /** The GenerationInput key it fills. */
  input: keyof GenerationInput;
  type: JsonType;
  /** Absent: the field is required. */
  default?: string | number | null;
  /** null is accepted (as the old model's Optional fields) and means "none". */
  nullable?: boolean;
}

/**
 * The old fields, in the old model's order. The defaults are GenerateImageInput's in the GraphQL
 * schema (a test holds them equal). Fields not listed here are ignored, as pydantic ignored them.
 */
export const BODY_FIELDS = {
  prompt: { input: 'prompt', type: 'string' },
  negative_prompt: { input: 'negativePrompt', type: 'string', default: null, nullable: true },
  steps: { input: 'steps', type: 'integer', default: 20 },
  width: { input: 'width', type: 'integer', default: 512 },
  height: { input: 'height', type: 'integer', default: 512 },
  cfg_scale: { input: 'cfgScale', type: 'number', default: 7 },
  sampler_name: { input: 'sampler', type: 'string', default: 'Euler a' },
  seed: { input: 'seed', type: 'integer', default: -1 },
  batch_size: { input: 'batchSize', type: 'integer', default: 1 },
  character_name: { input: 'characterName', type: 'string', default: null, nullable: true },
} as const satisfies Record<string, BodyField>;

export type BodyFieldName = keyof typeof BODY_FIELDS;

/** One entry of FastAPI's `detail` list; `type` uses pydantic's error type names. */
export interface ValidationIssue {
  loc: Array<string | number>;
  msg: string;
  type: string;
}

export type ParsedBody = { ok: true; input: GenerationInput } | { ok: false; detail: ValidationIssue[] };

const FIELD_OF_INPUT = new Map<string, BodyFieldName>(
  Object.entries(BODY_FIELDS).map(([name, f]) => [f.input, name as BodyFieldName]),
);

/** The rules' messages name GraphQL's camelCase fields; said to a REST client, they name its own. */
const CAMEL_NAMES = new RegExp(`\\b(${[...FIELD_OF_INPUT.keys()].filter((k) => FIELD_OF_INPUT.get(k) !== k).join('|')})\\b`, 'g');
const inRestTerms = (message: string) => message.replace(CAMEL_NAMES, (m) => FIELD_OF_INPUT.get(m) ?? m);

/** The raw body text of a request: parsed, type-checked, defaulted, then checked by the generation rules. */
export function parseGenerateBody(text: string, rules: ReturnType<typeof generationInputSchema>): ParsedBody {
  if (text.trim() === '') return { ok: false, detail: [{ loc: ['body'], msg: 'Field required', type: 'missing' }] };
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    const at = /position (\d+)/.exec(String(err))?.[1];
    return { ok: false, detail: [{ loc: at === undefined ? ['body'] : ['body', Number(at)], msg: 'JSON decode error', type: 'json_invalid' }] };
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return {
      ok: false,
      detail: [{ loc: ['body'], msg: 'Input should be a valid dictionary or object to extract fields from', type: 'model_attributes_type' }],
    };
  }
  const fields = body as Record<string, unknown>;
  const detail: ValidationIssue[] = [];
  const candidate: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(BODY_FIELDS) as Array<[BodyFieldName, BodyField]>) {
    const value = Object.hasOwn(fields, name) ? fields[name] : undefined;
    if (value === undefined) {
      if (!('default' in field)) detail.push({ loc: ['body', name], msg: 'Field required', type: 'missing' });
      candidate[field.input] = field.default;
      continue;
    }
    const problem = value === null && field.nullable ? null : typeProblem(field.type, value);
    if (problem) detail.push({ loc: ['body', name], ...problem });
    candidate[field.input] = value;
  }
  if (detail.length > 0) return { ok: false, detail };
  const checked = rules.safeParse(candidate);
  if (checked.success) return { ok: true, input: checked.data };
  return {
    ok: false,
    detail: checked.error.issues.map((issue) => {
      const key = issue.path[0];
      const name = typeof key === 'string' ? FIELD_OF_INPUT.get(key) : undefined;
      return { loc: name ? ['body', name] : ['body'], msg: inRestTerms(issue.message), type: issueType(issue) };
    }),
  };
}

/** Pydantic's strict view of a JSON value of the wrong type (no coercion of strings or booleans). */
function typeProblem(type: JsonType, value: unknown): Omit<ValidationIssue, 'loc'> | null {
  switch (type) {
    case 'string': {
      if (typeof value !== 'string') return { msg: 'Input should be a valid string', type: 'string_type' };
      const reason = unstorableReason(value);
      return reason ? { msg: `Value ${reason}`, type: 'string_unicode' } : null;
    }
    case 'number':
      return typeof value === 'number' && Number.isFinite(value) ? null : { msg: 'Input should be a valid number', type: 'float_type' };
    case 'integer':
      if (typeof value !== 'number' || !Number.isFinite(value)) return { msg: 'Input should be a valid integer', type: 'int_type' };
      return Number.isInteger(value)
        ? null
        : { msg: 'Input should be a valid integer, got a number with a fractional part', type: 'int_from_float' };
  }
}

/** The pydantic error type closest to a rule's failure. */
function issueType(issue: z.core.$ZodIssue): string {
  if (issue.code === 'too_small') return issue.origin === 'string' ? 'string_too_short' : 'greater_than_equal';
  if (issue.code === 'too_big') return issue.origin === 'string' ? 'string_too_long' : 'less_than_equal';
  return 'value_error';
}
