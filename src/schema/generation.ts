import { z } from 'zod';
import type { Config } from '../config';
import { WEBHOOK_EVENTS } from '../webhooks/events';
import type { GenerationInput, SamplerCheck } from '../generation/input';
import { generationInputSchema } from '../generation/input';
import { idempotencyKeySchema, startDeadlineSchema } from '../generation/idempotency';
import type { GenerationRow } from '../generation/repository';
import { notFound } from '../errors';
import type { ProgressEvent } from '../progress/event';
import type { Builder, SchemaContext } from './builder';
import { requireUser } from './builder';
import type { ConnectionTypes } from './connection';
import type { ProgressTypes } from './progress';
import type { addUserType } from './user';
import { parseWebhookUrl, type WebhookEventEnum } from './webhook';

export interface GenerationSchemaOptions {
  limits: Config['limits'];
  samplers: SamplerCheck;
}

/**
 * A generation's current state, read once per request however many fields ask for it; those of a
 * list are read together (the progress loader: one Redis call, and Postgres only for the misses).
 */
function current(row: GenerationRow, ctx: SchemaContext): Promise<ProgressEvent | null> {
  let memo = ctx.progressMemo.get(row.id);
  if (!memo) {
    memo = { state: ctx.loaders.progress.load(row.id) };
    ctx.progressMemo.set(row.id, memo);
  }
  return memo.state;
}

/** `current` for the `current` field: a just-created state gets its queue position (one Redis read). */
async function currentWithQueuePosition(row: GenerationRow, ctx: SchemaContext): Promise<ProgressEvent | null> {
  const c = await current(row, ctx);
  if (!c || !ctx.progressMemo.get(row.id)?.created) return c;
  const state = ctx.generations.withQueuePosition(c);
  ctx.progressMemo.set(row.id, { state });
  return state;
}

export function addGenerationTypes(
  builder: Builder,
  types: ProgressTypes,
  UserRef: ReturnType<typeof addUserType>,
  connections: ConnectionTypes,
  WebhookEvent: WebhookEventEnum,
  opts: GenerationSchemaOptions,
) {
  const { limits } = opts;

  const GenerationSettings = builder.objectRef<GenerationInput>('GenerationSettings').implement({
    description: 'The checked input a generation runs with.',
    fields: (t) => ({
      prompt: t.exposeString('prompt'),
      negativePrompt: t.exposeString('negativePrompt'),
      characterName: t.exposeString('characterName', { nullable: true }),
      width: t.exposeInt('width'),
      height: t.exposeInt('height'),
      steps: t.exposeInt('steps'),
      cfgScale: t.exposeFloat('cfgScale'),
      sampler: t.exposeString('sampler'),
      seed: t.expose('seed', { type: 'SafeInt', description: '-1 asks for a random seed; each image reports its real one.' }),
      batchSize: t.exposeInt('batchSize'),
    }),
  });

  const GenerateImageInput = builder
    .inputType('GenerateImageInput', {
      fields: (t) => ({
        prompt: t.string({ required: true, description: `At most ${limits.promptMaxLength} characters (PROMPT_MAX_LENGTH).` }),
        negativePrompt: t.string({ description: `At most ${limits.negativePromptMaxLength} characters.` }),
        characterName: t.string(),
        width: t.int({ defaultValue: 512, description: 'A multiple of 8 within IMAGE_MIN_SIZE..IMAGE_MAX_SIZE.' }),
        height: t.int({ defaultValue: 512, description: 'A multiple of 8 within IMAGE_MIN_SIZE..IMAGE_MAX_SIZE.' }),
        steps: t.int({ defaultValue: 20 }),
        cfgScale: t.float({ defaultValue: 7 }),
        sampler: t.string({ defaultValue: 'Euler a', description: "One of the Stable Diffusion server's samplers." }),
        seed: t.field({ type: 'SafeInt', defaultValue: -1, description: '-1 = random, else 0..4294967295.' }),
        batchSize: t.int({ defaultValue: 1, description: 'Images in one generation; each costs one photo credit.' }),
        idempotencyKey: t.string({
          description:
            'Makes the submit safe to retry: the same key from the same user within IDEMPOTENCY_TTL_S answers with the same generation, charged once; the same key with a different input is refused with IDEMPOTENCY_CONFLICT. 1 to 255 printable ASCII characters.',
        }),
        startDeadlineSeconds: t.int({
          description: `Not started by a worker this many seconds after the submit, the generation ends CANCELLED with error code DEADLINE_EXCEEDED and its credits back, without reaching the GPU. 1 to ${limits.startDeadlineMaxS} (START_DEADLINE_MAX_S).`,
        }),
        webhookUrl: t.string({
          description: 'Where to POST signed webhooks of this generation (http or https, a public address); else the default of updateWebhookSettings.',
        }),
        webhookEvents: t.field({ type: [WebhookEvent], description: 'With webhookUrl: STARTED too; the final state is always sent.' }),
      }),
    })
    // The webhook fields are not the generation's settings: kept beside them, checked by the service.
    .validate(
      generationInputSchema(limits, opts.samplers).safeExtend({
        webhookUrl: z.string().nullish(),
        webhookEvents: z.array(z.enum(WEBHOOK_EVENTS)).nullish(),
        idempotencyKey: idempotencyKeySchema.nullish(),
        startDeadlineSeconds: startDeadlineSchema(limits.startDeadlineMaxS).nullish(),
      }),
    );

  const Generation = builder.objectRef<GenerationRow>('Generation').implement({
    fields: (t) => ({
      id: t.exposeID('id'),
      status: t.field({
        type: types.GenerationStatus,
        resolve: async (g, _a, ctx) => (await current(g, ctx))?.status ?? g.status,
      }),
      progress: t.float({ resolve: async (g, _a, ctx) => (await current(g, ctx))?.progress ?? g.progress }),
      current: t.field({
        type: types.GenerationProgress,
        description: 'The live state: step, ETA, queue position, preview.',
        resolve: async (g, _a, ctx) => {
          const c = await currentWithQueuePosition(g, ctx);
          if (!c) throw new Error(`generation ${g.id} has no state`);
          return c;
        },
      }),
      error: t.field({
        type: types.GenerationError,
        nullable: true,
        resolve: async (g, _a, ctx) => (await current(g, ctx))?.error ?? null,
      }),
      images: t.field({
        type: [types.GeneratedImage],
        resolve: async (g, _a, ctx) => (await current(g, ctx))?.images ?? [],
      }),
      input: t.field({ type: GenerationSettings, resolve: (g) => g.input }),
      attempts: t.exposeInt('attempts'),
      creditsReserved: t.exposeInt('credits_reserved', { description: 'Photo credits taken; returned if it fails or is cancelled.' }),
      owner: t.field({
        type: UserRef,
        resolve: async (g, _a, ctx) => {
          const u = await ctx.loaders.profiles.load(g.user_id);
          if (!u) throw new Error(`owner of generation ${g.id} is missing`);
          return u;
        },
      }),
      createdAt: t.expose('created_at', { type: 'DateTime' }),
      startedAt: t.expose('started_at', { type: 'DateTime', nullable: true }),
      finishedAt: t.expose('finished_at', { type: 'DateTime', nullable: true }),
      startDeadlineAt: t.expose('start_deadline_at', {
        type: 'DateTime',
        nullable: true,
        description: 'With startDeadlineSeconds: not started by then, it ends CANCELLED with DEADLINE_EXCEEDED.',
      }),
      updatedAt: t.expose('updated_at', { type: 'DateTime' }),
    }),
  });

  builder.queryField('generation', (t) =>
    t.field({
      type: Generation,
      nullable: true,
      description: "One of the caller's generations with its current state; null if there is none with this id.",
      args: { id: t.arg.id({ required: true }) },
      resolve: (_r, args, ctx) => ctx.generations.findVisible(requireUser(ctx), String(args.id)),
    }),
  );

  const GenerationConnection = connections.connection('Generation', Generation);

  builder.queryField('generations', (t) =>
    t.field({
      type: GenerationConnection,
      description: "The caller's generations, newest first, a page at a time; `status` keeps those the database records in that status.",
      args: {
        ...connections.pageArgs(t.arg, 'generations'),
        status: t.arg({ type: types.GenerationStatus }),
      },
      resolve: (_r, args, ctx) => ctx.generations.list(requireUser(ctx), connections.page(args), args.status ?? null),
    }),
  );

  builder.mutationField('generateImage', (t) =>
    t.field({
      type: Generation,
      description: 'Reserves batchSize photo credits and queues the generation; watch it with generationProgress.',
      args: { input: t.arg({ type: GenerateImageInput, required: true }) },
      resolve: async (_r, args, ctx) => {
        const { webhookUrl, webhookEvents, idempotencyKey, startDeadlineSeconds, ...input } = args.input;
        const url = parseWebhookUrl(webhookUrl);
        const { row, replayed } = await ctx.generations.create(requireUser(ctx), input, url ? { url, events: webhookEvents ?? [] } : null, {
          idempotencyKey,
          startDeadlineSeconds,
        });
        // A generation an earlier request with the key created may have moved on: read as any other.
        if (replayed) return row;
        // Its state is known (QUEUED, seq 0): `status` and the other fields need not read Redis and
        // Postgres for it (three round trips); only `current` adds the queue position.
        ctx.progressMemo.set(row.id, { state: ctx.generations.createdProgress(row), created: true });
        return row;
      },
    }),
  );

  builder.mutationField('cancelGeneration', (t) =>
    t.field({
      type: Generation,
      description: 'Stops a generation that has not finished and returns its credits; a finished one is returned as it is.',
      args: { id: t.arg.id({ required: true }) },
      resolve: (_r, args, ctx) => ctx.generations.cancel(requireUser(ctx), String(args.id)),
    }),
  );

  builder.subscriptionField('generationProgress', (t) =>
    t.field({
      type: types.GenerationProgress,
      description:
        'The current state first, then every change in seq order; completes after SUCCEEDED, FAILED or CANCELLED.',
      args: { id: t.arg.id({ required: true }) },
      subscribe: async (_r, args, ctx) => {
        const user = requireUser(ctx);
        const row = await ctx.generations.findVisible(user, String(args.id));
        if (!row) throw notFound('Generation', String(args.id));
        // Before the stream starts: refused here, it never subscribes; taken, the stream gives it back when it ends.
        const stream = ctx.generations.stream(row.id, await ctx.streamSlots.acquire(user.id));
        // A client that went away while this was set up never reads the stream, so nothing else would
        // end it (and give its slot back): end it when the request is aborted.
        if (ctx.signal.aborted) void stream.return();
        else ctx.signal.addEventListener('abort', () => void stream.return(), { once: true });
        return stream;
      },
      resolve: (event) => event,
    }),
  );

  return { Generation };
}
