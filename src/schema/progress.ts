import { GENERATION_STATUSES } from '../generation/lifecycle';
import type { ProgressEvent, ProgressImage } from '../progress/event';
import type { Builder } from './builder';

type ErrorShape = NonNullable<ProgressEvent['error']>;

const URL_LIFETIME =
  'Made for this answer: it stops working IMAGE_URL_TTL_S seconds later (ask again for a fresh one), unless the server serves images from a public base URL.';

export function addProgressTypes(builder: Builder) {
  const GenerationStatus = builder.enumType('GenerationStatus', {
    values: GENERATION_STATUSES,
    description: 'QUEUED → STARTED → GENERATING → POST_PROCESSING → UPLOADING → SUCCEEDED; or RETRYING, FAILED, CANCELLED.',
  });

  const GeneratedImage = builder.objectRef<ProgressImage>('GeneratedImage').implement({
    fields: (t) => ({
      // Made from the storage key for each answer: a signed URL expires IMAGE_URL_TTL_S after it.
      url: t.string({
        description: `The full image, WebP, all metadata stripped. ${URL_LIFETIME}`,
        resolve: (image, _a, ctx) => ctx.imageUrls.url(image.key),
      }),
      thumbnailUrl: t.string({ description: URL_LIFETIME, resolve: (image, _a, ctx) => ctx.imageUrls.url(image.thumbnailKey) }),
      width: t.exposeInt('width'),
      height: t.exposeInt('height'),
      blurhash: t.exposeString('blurhash', { description: 'A tiny placeholder to show while the image loads.' }),
      seed: t.expose('seed', { type: 'SafeInt', nullable: true }),
    }),
  });

  const GenerationError = builder.objectRef<ErrorShape>('GenerationError').implement({
    fields: (t) => ({
      code: t.exposeString('code'),
      message: t.exposeString('message'),
      retryable: t.exposeBoolean('retryable', { description: 'Whether sending the same request again may succeed.' }),
    }),
  });

  const GenerationProgress = builder.objectRef<ProgressEvent>('GenerationProgress').implement({
    description: 'One state of a generation, as streamed by generationProgress.',
    fields: (t) => ({
      generationId: t.exposeID('generationId'),
      seq: t.exposeInt('seq', { description: 'Grows with every state of this generation; 0 for a state read from the database.' }),
      status: t.field({ type: GenerationStatus, resolve: (p) => p.status }),
      progress: t.exposeFloat('progress', { description: '0..1 over the whole generation; never goes back.' }),
      step: t.exposeInt('step', { nullable: true, description: 'The sampling step being run, while GENERATING.' }),
      totalSteps: t.exposeInt('totalSteps', { nullable: true }),
      etaSeconds: t.exposeFloat('etaSeconds', { nullable: true, description: 'Estimated seconds until the images are ready.' }),
      queuePosition: t.exposeInt('queuePosition', {
        nullable: true,
        description: 'While waiting: 1 = next to start (in the job queue while QUEUED, at the Stable Diffusion server while STARTED).',
      }),
      preview: t.exposeString('preview', { nullable: true, description: 'A small live preview as a data: URI, while GENERATING.' }),
      attempt: t.exposeInt('attempt', { description: 'How many times a worker has started this generation.' }),
      error: t.field({ type: GenerationError, nullable: true, resolve: (p) => p.error }),
      images: t.field({ type: [GeneratedImage], resolve: (p) => p.images }),
    }),
  });

  return { GenerationStatus, GeneratedImage, GenerationError, GenerationProgress };
}

export type ProgressTypes = ReturnType<typeof addProgressTypes>;
