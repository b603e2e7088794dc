/**
 * The OpenAPI 3.1 document of the old service's two endpoints, served at GET /api/v1/openapi.json.
 * Written by hand from the same tables the endpoints use (the body fields, the Celery states), with
 * the configured limits, so it cannot list a field or a state the endpoints do not have.
 */
import type { Config } from '../config';
import { SEED_MAX } from '../generation/input';
import { CELERY_STATE_OF, CELERY_STATES } from './celeryState';
import { BODY_FIELDS, type BodyFieldName } from './restSchema';

export const REST_BASE = '/api/v1';
export const GENERATE_PATH = `${REST_BASE}/generate-image/`;
export const STATUS_PATH = `${REST_BASE}/generation-status/{task_id}`;
export const OPENAPI_PATH = `${REST_BASE}/openapi.json`;

type Schema = Record<string, unknown>;

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: Schema, description: string) => ({ description, content: { 'application/json': { schema } } });
const problem = (description: string) => json(ref('HTTPError'), description);

/** What each body field must satisfy beyond its type (the generation rules, with the configured limits). */
function constraints(limits: Config['limits']): Record<BodyFieldName, Schema> {
  const side = { minimum: limits.imageMinSize, maximum: limits.imageMaxSize, multipleOf: 8, description: 'A multiple of 8.' };
  return {
    prompt: { minLength: 1, maxLength: limits.promptMaxLength, description: 'Trimmed; must not be empty.' },
    negative_prompt: { maxLength: limits.negativePromptMaxLength },
    steps: { minimum: 1, maximum: limits.stepsMax },
    width: side,
    height: side,
    cfg_scale: { minimum: 1, maximum: limits.cfgScaleMax },
    sampler_name: { description: "One of the Stable Diffusion server's samplers (A1111's standard list until a worker has reported)." },
    seed: { minimum: -1, maximum: SEED_MAX, description: '-1 asks for a random seed.' },
    batch_size: {
      minimum: 1,
      maximum: limits.batchSizeMax,
      description: `Images in one generation; each costs one photo credit. width × height × batch_size must be at most ${limits.imageMaxPixels}.`,
    },
    character_name: {
      maxLength: limits.characterNameMaxLength,
      description: 'A generation with a character name becomes an exchange of the chat with that character.',
    },
  };
}

function requestSchema(limits: Config['limits']): Schema {
  const more = constraints(limits);
  const properties: Record<string, Schema> = {};
  const required: string[] = [];
  for (const [name, field] of Object.entries(BODY_FIELDS) as Array<[BodyFieldName, (typeof BODY_FIELDS)[BodyFieldName]]>) {
    const nullable = 'nullable' in field && field.nullable;
    properties[name] = { type: nullable ? [field.type, 'null'] : field.type, ...('default' in field ? { default: field.default } : {}), ...more[name] };
    if (!('default' in field)) required.push(name);
  }
  return { type: 'object', properties, required, description: 'Other fields are ignored.' };
}

export function openApiDocument(limits: Config['limits']) {
  const stateMapping = Object.entries(CELERY_STATE_OF)
    .map(([status, state]) => `${status} → ${state}`)
    .join(', ');
  return {
    openapi: '3.1.0',
    info: {
      title: 'Stable Diffusion jobs: the Celery service’s REST endpoints',
      version: '1.0.0',
      description:
        'The two endpoints of the FastAPI + Celery service this one replaces, answering as it did. ' +
        'GraphQL at /graphql offers more: live progress pushed over Server-Sent Events, cancelling, lists.',
    },
    paths: {
      [GENERATE_PATH]: {
        post: {
          operationId: 'generateImage',
          summary: 'Queue a generation (also without the trailing slash)',
          security: [{ bearer: [] }],
          parameters: [
            {
              name: 'Idempotency-Key',
              in: 'header',
              required: false,
              schema: { type: 'string', minLength: 1, maxLength: 255, pattern: '^[\\x20-\\x7e]+$' },
              description:
                'Makes the request safe to retry: the same key from the same user within IDEMPOTENCY_TTL_S answers with the same task_id, charged once; with a different body, 409.',
            },
          ],
          requestBody: { required: true, content: { 'application/json': { schema: ref('GenerateImageRequest') } } },
          responses: {
            '200': json(ref('TaskCreated'), 'Queued: batch_size photo credits are reserved (given back if it fails or is cancelled). With an Idempotency-Key sent before: that request\'s task, nothing charged again.'),
            '401': problem('No token, or one that is unknown, revoked or expired (with WWW-Authenticate: Bearer).'),
            '402': problem('Not enough photo credits.'),
            '403': problem('The account’s email address is not confirmed yet.'),
            '413': problem('The body is larger than the endpoint accepts.'),
            '409': problem('The Idempotency-Key was already used with a different body; nothing is charged.'),
            '422': json(ref('HTTPValidationError'), 'A malformed body, a field that breaks a rule or a malformed Idempotency-Key; nothing is written.'),
            '429': problem('Too many generations a minute, or too many unfinished; nothing is charged. Try again after Retry-After seconds.'),
            '503': problem('The job queue is unavailable; nothing is charged. Try again after Retry-After seconds.'),
          },
        },
      },
      [STATUS_PATH]: {
        get: {
          operationId: 'generationStatus',
          summary: 'The state of a generation, as Celery named it',
          security: [{ bearer: [] }],
          parameters: [{ name: 'task_id', in: 'path', required: true, schema: { type: 'string' }, description: 'The task_id the POST answered.' }],
          responses: {
            '200': json(ref('TaskStatus'), `The current state. Generation statuses map as: ${stateMapping}.`),
            '401': problem('No token, or one that is unknown, revoked or expired (with WWW-Authenticate: Bearer).'),
            '404': problem('No such task among the caller’s (another user’s task and a malformed id look the same).'),
          },
        },
      },
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'An API token or a session token.' } },
      schemas: {
        GenerateImageRequest: requestSchema(limits),
        TaskCreated: {
          type: 'object',
          properties: { task_id: { type: 'string', format: 'uuid', description: 'The generation id (GraphQL `Generation.id`).' } },
          required: ['task_id'],
        },
        TaskStatus: {
          type: 'object',
          properties: {
            task_id: { type: 'string', format: 'uuid' },
            status: { type: 'string', enum: [...CELERY_STATES] },
            progress: {
              oneOf: [ref('TaskProgress'), { type: 'null' }],
              description: 'Set while the task is not ready: PENDING, STARTED, PROGRESS, RETRY.',
            },
            result: {
              oneOf: [
                { type: 'object', properties: { images: { type: 'array', items: ref('TaskImage') } }, required: ['images'] },
                { type: 'null' },
              ],
              description: 'Set on SUCCESS.',
            },
            error: { type: ['string', 'null'], description: 'Set on FAILURE, RETRY (the error being retried) and REVOKED.' },
          },
          required: ['task_id', 'status', 'progress', 'result', 'error'],
        },
        TaskProgress: {
          type: 'object',
          properties: {
            step: { type: ['integer', 'null'], description: 'The sampling step being run.' },
            total_steps: { type: ['integer', 'null'] },
            progress: { type: 'number', minimum: 0, maximum: 1, description: '0..1 over the whole generation; never goes back.' },
            eta: { type: ['number', 'null'], description: 'Estimated seconds until the images are ready.' },
            queue_position: { type: ['integer', 'null'], description: 'While PENDING: 1 = next to start.' },
          },
          required: ['step', 'total_steps', 'progress', 'eta', 'queue_position'],
        },
        TaskImage: {
          type: 'object',
          properties: {
            url: { type: 'string', format: 'uri', description: 'WebP, metadata stripped; made for this answer, it expires IMAGE_URL_TTL_S later.' },
            thumbnail_url: { type: 'string', format: 'uri' },
            width: { type: 'integer' },
            height: { type: 'integer' },
            seed: { type: ['integer', 'null'] },
            blurhash: { type: 'string' },
          },
          required: ['url', 'thumbnail_url', 'width', 'height', 'seed', 'blurhash'],
        },
        HTTPError: { type: 'object', properties: { detail: { type: 'string' } }, required: ['detail'] },
        HTTPValidationError: {
          type: 'object',
          properties: { detail: { type: 'array', items: ref('ValidationError') } },
          required: ['detail'],
        },
        ValidationError: {
          type: 'object',
          properties: {
            loc: { type: 'array', items: { anyOf: [{ type: 'string' }, { type: 'integer' }] } },
            msg: { type: 'string' },
            type: { type: 'string' },
          },
          required: ['loc', 'msg', 'type'],
        },
      },
    },
  } as const;
}
