/**
 * What the API does with webhooks: a user's default receiver and events, the signing secret (made
 * and replaced by rotateWebhookSecret, shown only then), a generation's own receiver, and the list
 * of a generation's delivery tries.
 *
 * The secret is stored as it is: signing needs it (an HMAC key cannot be kept as a hash), and it is
 * worth no more than the webhooks it signs. It is never readable through the API after it was
 * made; whoever reads the database could forge webhooks to that user's receiver, and rotating
 * ends that.
 */
import type { Knex } from 'knex';
import { groupedInOrderOf, inOrderOf } from '../db/inOrderOf';
import { DomainError, notFound } from '../errors';
import { parseUuid } from '../ids';
import type { AuthUser } from '../auth/tokens';
import type { WebhookEventChoice } from './events';
import { checkReceiverUrl } from './receiver';
import { newWebhookSecret } from './signing';

export interface WebhookTarget {
  url: string;
  events: readonly WebhookEventChoice[];
}

export interface WebhookSettings {
  url: string | null;
  events: WebhookEventChoice[];
  /** Whether rotateWebhookSecret has made a secret: without one no webhook is sent. */
  secretSet: boolean;
}

export interface WebhookDelivery {
  id: string;
  event: string;
  webhookId: string;
  attempt: number;
  statusCode: number | null;
  error: string | null;
  latencyMs: number;
  createdAt: Date;
}

/** Only the terminal event is implied; STARTED is stored when asked for. */
const storedEvents = (events: readonly WebhookEventChoice[] | null | undefined) => [...new Set(['COMPLETED', ...(events ?? [])])] as WebhookEventChoice[];

const noSecret = () =>
  new DomainError('BAD_USER_INPUT', 'Make a webhook signing secret first with rotateWebhookSecret: every webhook is signed with it.', { field: 'webhookUrl' });

export class WebhookService {
  constructor(private readonly deps: { db: Knex; allowPrivate: boolean }) {}

  async settings(userId: string): Promise<WebhookSettings> {
    const [settings] = await this.settingsOf([userId]);
    if (!settings) throw notFound('User', userId);
    return settings;
  }

  /** `settings` of each user (null for a user that is gone), in one query however many. */
  async settingsOf(userIds: readonly string[]): Promise<Array<WebhookSettings | null>> {
    const rows = (await this.deps.db('users')
      .whereIn('id', [...userIds])
      .select('id', 'webhook_url', 'webhook_events', this.deps.db.raw('webhook_secret IS NOT NULL AS secret_set'))) as Array<{
      id: string;
      webhook_url: string | null;
      webhook_events: WebhookEventChoice[];
      secret_set: boolean;
    }>;
    return inOrderOf(
      userIds,
      rows,
      (r) => r.id,
      (r): WebhookSettings | null => ({ url: r.webhook_url, events: r.webhook_url ? storedEvents(r.webhook_events) : [], secretSet: r.secret_set }),
      null,
    );
  }

  /** Sets (or, with url null, clears) the default receiver of the user's generations. */
  async updateSettings(userId: string, url: string | null, events: readonly WebhookEventChoice[] | null | undefined): Promise<WebhookSettings> {
    if (url) {
      if (!(await this.settings(userId)).secretSet) throw noSecret();
      await checkReceiverUrl(url, this.deps.allowPrivate);
    }
    await this.deps.db('users')
      .where({ id: userId })
      .update({ webhook_url: url, webhook_events: url ? storedEvents(events) : [], updated_at: this.deps.db.fn.now() });
    return this.settings(userId);
  }

  /** Makes a new secret, replacing the old one from the next try of any delivery; returned only here. */
  async rotateSecret(userId: string): Promise<string> {
    const secret = newWebhookSecret();
    await this.deps.db('users').where({ id: userId }).update({ webhook_secret: secret, updated_at: this.deps.db.fn.now() });
    return secret;
  }

  /** Checks a generateImage request's receiver before anything is reserved. */
  async checkTarget(userId: string, target: WebhookTarget): Promise<void> {
    if (!(await this.settings(userId)).secretSet) throw noSecret();
    await checkReceiverUrl(target.url, this.deps.allowPrivate);
  }

  /** Stores a generation's own receiver (its events always include the terminal one). */
  async saveTarget(generationId: string, target: WebhookTarget): Promise<void> {
    await this.deps.db('generation_webhooks').insert({ generation_id: generationId, url: target.url, events: storedEvents(target.events) });
  }

  /**
   * Every try of every webhook of each of the caller's generations, oldest first; null for one the
   * caller may not see (or a malformed id): others' look missing. Two queries however many: the
   * owners, then the tries.
   */
  async deliveriesOf(user: AuthUser, rawIds: readonly string[]): Promise<Array<WebhookDelivery[] | null>> {
    const ids = rawIds.map((raw) => parseUuid(raw));
    const wanted = [...new Set(ids.filter((id) => id !== null))];
    if (wanted.length === 0) return ids.map(() => null);
    const owners = (await this.deps.db('generations').whereIn('id', wanted).select('id', 'user_id')) as Array<{ id: string; user_id: string }>;
    const visible = owners.filter((o) => o.user_id === user.id || user.isAdmin).map((o) => o.id);
    const rows: Array<Record<string, unknown>> = visible.length > 0 ? await this.deps.db('webhook_deliveries').whereIn('generation_id', visible).orderBy('id') : [];
    const tries = groupedInOrderOf(visible, rows, (r) => r.generation_id as string, (r): WebhookDelivery => ({
      id: String(r.id),
      event: r.event as string,
      webhookId: r.webhook_id as string,
      attempt: r.attempt as number,
      statusCode: (r.status_code as number | null) ?? null,
      error: (r.error as string | null) ?? null,
      latencyMs: r.latency_ms as number,
      createdAt: r.created_at as Date,
    }));
    const byId = new Map(visible.map((id, i) => [id, tries[i]!]));
    return ids.map((id) => (id ? (byId.get(id) ?? null) : null));
  }
}
