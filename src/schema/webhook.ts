import { DomainError, notFound } from '../errors';
import { WEBHOOK_EVENTS, type WebhookEventChoice } from '../webhooks/events';
import { webhookUrlSchema } from '../webhooks/receiver';
import type { WebhookDelivery, WebhookSettings } from '../webhooks/service';
import { ownAccount } from './account';
import type { Builder } from './builder';
import { requireUser } from './builder';
import type { addUserType } from './user';

/** The enum of events a client may ask webhooks for; made first, generateImage's input uses it too. */
export function addWebhookEventEnum(builder: Builder) {
  return builder.enumType('WebhookEvent', {
    description: 'What a webhook is sent for. COMPLETED (SUCCEEDED, FAILED or CANCELLED) is always sent; STARTED when asked for.',
    values: Object.fromEntries(WEBHOOK_EVENTS.map((e) => [e, { value: e }])) as { [K in WebhookEventChoice]: { value: K } },
  });
}

export type WebhookEventEnum = ReturnType<typeof addWebhookEventEnum>;

/** A client's receiver URL, syntax only (the address is checked by the service, after DNS). */
export function parseWebhookUrl(raw: string | null | undefined): string | null {
  if (raw == null || raw.trim() === '') return null;
  const parsed = webhookUrlSchema.safeParse(raw);
  if (!parsed.success) throw new DomainError('BAD_USER_INPUT', parsed.error.issues.map((i) => i.message).join('; '), { field: 'webhookUrl' });
  return parsed.data;
}

export function addWebhookTypes(builder: Builder, UserRef: ReturnType<typeof addUserType>, WebhookEvent: WebhookEventEnum) {
  const Settings = builder.objectRef<WebhookSettings>('WebhookSettings').implement({
    description: "The default receiver of the user's generations (a generateImage request may name its own).",
    fields: (t) => ({
      url: t.exposeString('url', { nullable: true }),
      events: t.field({ type: [WebhookEvent], resolve: (s) => s.events }),
      secretSet: t.exposeBoolean('secretSet', { description: 'Whether a signing secret exists (rotateWebhookSecret makes one); without it no webhook is sent.' }),
    }),
  });
  const Delivery = builder.objectRef<WebhookDelivery>('WebhookDelivery').implement({
    description: 'One try of a webhook.',
    fields: (t) => ({
      id: t.exposeID('id'),
      event: t.exposeString('event', { description: 'STARTED, SUCCEEDED, FAILED or CANCELLED.' }),
      webhookId: t.exposeString('webhookId', { description: 'The webhook-id header: the same on every try of one event.' }),
      attempt: t.exposeInt('attempt'),
      statusCode: t.exposeInt('statusCode', { nullable: true, description: "The receiver's HTTP status; null when it gave none (see error)." }),
      error: t.exposeString('error', { nullable: true }),
      latencyMs: t.exposeInt('latencyMs'),
      createdAt: t.expose('createdAt', { type: 'DateTime' }),
    }),
  });

  builder.objectFields(UserRef, (t) => ({
    webhookSettings: t.field({
      type: Settings,
      resolve: async (u, _a, ctx) => {
        const id = ownAccount(u, ctx);
        const settings = await ctx.loaders.webhookSettings.load(id);
        if (!settings) throw new Error(`user ${id} is missing`);
        return settings;
      },
    }),
  }));

  builder.queryField('webhookDeliveries', (t) =>
    t.field({
      type: [Delivery],
      description: "Every try of the webhooks of one of the caller's generations, oldest first.",
      args: { generationId: t.arg.id({ required: true }) },
      resolve: async (_r, args, ctx) => {
        requireUser(ctx);
        const found = await ctx.loaders.webhookDeliveries.load(String(args.generationId));
        if (!found) throw notFound('Generation', String(args.generationId));
        return found;
      },
    }),
  );

  builder.mutationFields((t) => ({
    updateWebhookSettings: t.field({
      type: Settings,
      description: 'Sets the default receiver (null clears it) and its events; needs a signing secret (rotateWebhookSecret).',
      args: { url: t.arg.string(), events: t.arg({ type: [WebhookEvent] }) },
      resolve: (_r, args, ctx) => ctx.webhooks.updateSettings(requireUser(ctx).id, parseWebhookUrl(args.url), args.events),
    }),
    rotateWebhookSecret: t.string({
      description: 'Makes a new whsec_ signing secret, replacing the old one from the next try of every webhook. Shown only now: keep it.',
      resolve: (_r, _a, ctx) => ctx.webhooks.rotateSecret(requireUser(ctx).id),
    }),
  }));
}
