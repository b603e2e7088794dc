/** The REST edge's tables: generation statuses → Celery states, and the old body's defaults → GraphQL's. */
import { GraphQLInputObjectType } from 'graphql';
import { describe, expect, it } from 'vitest';
import { CELERY_STATE_OF, CELERY_STATES, taskStatus } from '../../src/api/celeryState';
import { BODY_FIELDS } from '../../src/api/restSchema';
import { loadConfig } from '../../src/config';
import { GENERATION_STATUSES } from '../../src/generation/lifecycle';
import { DEFAULT_SAMPLERS } from '../../src/generation/samplers';
import type { ProgressEvent } from '../../src/progress/event';
import { buildSchema } from '../../src/schema/index';

const event = (over: Partial<ProgressEvent>): ProgressEvent => ({
  generationId: '00000000-0000-4000-8000-000000000001',
  seq: 3,
  status: 'GENERATING',
  progress: 0.45,
  step: 10,
  totalSteps: 20,
  etaSeconds: 4.5,
  queuePosition: null,
  preview: 'data:image/webp;base64,AAAA',
  attempt: 1,
  error: null,
  images: [],
  ...over,
});

const imageUrls = { url: async (key: string) => `https://files.example/${key}?signature=s` };

describe('generation statuses as Celery states', () => {
  it('gives every status one state, and uses every state', () => {
    expect(Object.keys(CELERY_STATE_OF).sort()).toEqual([...GENERATION_STATUSES].sort());
    expect(new Set(Object.values(CELERY_STATE_OF))).toEqual(new Set(CELERY_STATES));
  });

  it('answers a running generation with its progress meta, and no preview', async () => {
    expect(await taskStatus(event({}), imageUrls)).toEqual({
      task_id: '00000000-0000-4000-8000-000000000001',
      status: 'PROGRESS',
      progress: { step: 10, total_steps: 20, progress: 0.45, eta: 4.5, queue_position: null },
      result: null,
      error: null,
    });
  });

  it('answers RETRY with the error being retried, and a later state without it', async () => {
    const error = { code: 'SD_SERVER_ERROR', message: 'Stable Diffusion failed txt2img (HTTP 500)', retryable: true };
    const retry = await taskStatus(event({ status: 'RETRYING', step: null, error }), imageUrls);
    expect(retry).toMatchObject({ status: 'RETRY', error: error.message, progress: { progress: 0.45 } });
    expect((await taskStatus(event({ status: 'GENERATING', attempt: 2, error }), imageUrls)).error).toBeNull();
  });

  it('answers SUCCESS with URLs made from the keys for this answer, and no meta', async () => {
    const images = [{ key: 'generations/g/0.webp', thumbnailKey: 'generations/g/0.thumb.webp', width: 64, height: 64, blurhash: 'LEHV6n', seed: 7 }];
    expect(await taskStatus(event({ status: 'SUCCEEDED', progress: 1, images }), imageUrls)).toMatchObject({
      status: 'SUCCESS',
      progress: null,
      error: null,
      result: {
        images: [
          {
            url: 'https://files.example/generations/g/0.webp?signature=s',
            thumbnail_url: 'https://files.example/generations/g/0.thumb.webp?signature=s',
            width: 64,
            height: 64,
            seed: 7,
            blurhash: 'LEHV6n',
          },
        ],
      },
    });
  });
});

describe('the old request body', () => {
  it("has GraphQL's defaults", () => {
    const samplers = { has: (s: string) => DEFAULT_SAMPLERS.includes(s), list: () => DEFAULT_SAMPLERS };
    const input = buildSchema({ limits: loadConfig({}).limits, samplers }).getType('GenerateImageInput');
    if (!(input instanceof GraphQLInputObjectType)) throw new Error('GenerateImageInput is missing');
    const fields = input.getFields();
    for (const [name, field] of Object.entries(BODY_FIELDS)) {
      const graphqlDefault = fields[field.input]?.defaultValue ?? null;
      expect(`${name}=${String('default' in field ? field.default : 'required')}`).toBe(
        `${name}=${String(fields[field.input]?.type.toString().endsWith('!') ? 'required' : graphqlDefault)}`,
      );
    }
  });
});
