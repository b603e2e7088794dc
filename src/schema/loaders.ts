/**
 * Per-request DataLoaders: every lookup a resolver makes by id goes through one of these, so the
 * aliases and list items of one operation cost one query (or one Redis call) per kind, not one per
 * field. They are made afresh for each request, with its caller, and never shared across requests
 * or users. Each one caches what it read for the rest of the request; a mutation starts with all
 * of them cleared (buildSchema wraps every mutation field), so nothing read before a change is
 * served after it.
 */
import DataLoader from 'dataloader';
import type { AccountService, ApiTokenInfo, NotificationSettings } from '../accounts/service';
import type { AuthUser } from '../auth/tokens';
import type { UserProfile, UserService } from '../auth/users';
import type { GenerationRow } from '../generation/repository';
import type { GenerationService } from '../generation/service';
import type { ProgressEvent } from '../progress/event';
import type { WebhookDelivery, WebhookService, WebhookSettings } from '../webhooks/service';

export interface LoaderServices {
  users: Pick<UserService, 'profiles' | 'creditsOf'>;
  accounts: Pick<AccountService, 'emailVerifiedOf' | 'apiTokensOf' | 'notificationSettingsOf'>;
  webhooks: Pick<WebhookService, 'settingsOf' | 'deliveriesOf'>;
  generations: Pick<GenerationService, 'currentProgressOf' | 'findVisibleMany'>;
}

export interface RequestLoaders {
  /** Users' profiles by id (null: gone). */
  profiles: DataLoader<string, UserProfile | null>;
  /** Users' photo credits by id. */
  credits: DataLoader<string, number>;
  emailVerified: DataLoader<string, boolean>;
  apiTokens: DataLoader<string, ApiTokenInfo[]>;
  notificationSettings: DataLoader<string, NotificationSettings>;
  webhookSettings: DataLoader<string, WebhookSettings | null>;
  /** Generations' current state by id: the Redis snapshot, else Postgres (see currentProgressOf). */
  progress: DataLoader<string, ProgressEvent | null>;
  /** The caller's generations by (raw) id; null where there is none the caller may see. */
  visibleGenerations: DataLoader<string, GenerationRow | null>;
  /** The webhook tries of the caller's generations by (raw) id; null where the caller may see none. */
  webhookDeliveries: DataLoader<string, WebhookDelivery[] | null>;
  /** Forgets everything read so far (before a mutation changes it). */
  clearAll(): void;
}

/** The loaders of one request made by `user` (null: anonymous; the caller-scoped ones then find nothing). */
export function createRequestLoaders(s: LoaderServices, user: AuthUser | null): RequestLoaders {
  return new LazyLoaders(s, user);
}

type LoaderName = Exclude<keyof RequestLoaders, 'clearAll'>;

/**
 * Each loader is made when a resolver first asks for it: most requests use one or two of them (a
 * mutation none), and a progress stream keeps its context, loaders included, for as long as it is
 * open.
 */
class LazyLoaders implements RequestLoaders {
  private readonly made: Partial<Record<LoaderName, DataLoader<string, unknown>>> = {};

  constructor(
    private readonly s: LoaderServices,
    private readonly user: AuthUser | null,
  ) {}

  // Each batch function returns one value per key, in the keys' order, as DataLoader requires.
  get profiles() { return this.once('profiles', (ids) => this.s.users.profiles(ids)); }
  get credits() { return this.once('credits', (ids) => this.s.users.creditsOf(ids)); }
  get emailVerified() { return this.once('emailVerified', (ids) => this.s.accounts.emailVerifiedOf(ids)); }
  get apiTokens() { return this.once('apiTokens', (ids) => this.s.accounts.apiTokensOf(ids)); }
  get notificationSettings() { return this.once('notificationSettings', (ids) => this.s.accounts.notificationSettingsOf(ids)); }
  get webhookSettings() { return this.once('webhookSettings', (ids) => this.s.webhooks.settingsOf(ids)); }
  get progress() { return this.once('progress', (ids) => this.s.generations.currentProgressOf(ids)); }
  get visibleGenerations() {
    const user = this.user;
    return this.once('visibleGenerations', (ids) => (user ? this.s.generations.findVisibleMany(user, ids) : Promise.resolve(ids.map(() => null))));
  }
  get webhookDeliveries() {
    const user = this.user;
    return this.once('webhookDeliveries', (ids) => (user ? this.s.webhooks.deliveriesOf(user, ids) : Promise.resolve(ids.map(() => null))));
  }

  clearAll(): void {
    for (const loader of Object.values(this.made)) loader.clearAll();
  }

  private once<V>(name: LoaderName, batch: (ids: readonly string[]) => Promise<ReadonlyArray<V | Error>>): DataLoader<string, V> {
    const loader = (this.made[name] ??= new DataLoader<string, V>(batch) as DataLoader<string, unknown>);
    return loader as DataLoader<string, V>;
  }
}
