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
  // Each batch function returns one value per key, in the keys' order, as DataLoader requires.
  const loaders = {
    profiles: new DataLoader((ids: readonly string[]) => s.users.profiles(ids)),
    credits: new DataLoader((ids: readonly string[]) => s.users.creditsOf(ids)),
    emailVerified: new DataLoader((ids: readonly string[]) => s.accounts.emailVerifiedOf(ids)),
    apiTokens: new DataLoader((ids: readonly string[]) => s.accounts.apiTokensOf(ids)),
    notificationSettings: new DataLoader((ids: readonly string[]) => s.accounts.notificationSettingsOf(ids)),
    webhookSettings: new DataLoader((ids: readonly string[]) => s.webhooks.settingsOf(ids)),
    progress: new DataLoader((ids: readonly string[]) => s.generations.currentProgressOf(ids)),
    visibleGenerations: new DataLoader((ids: readonly string[]) => (user ? s.generations.findVisibleMany(user, ids) : Promise.resolve(ids.map(() => null)))),
    webhookDeliveries: new DataLoader((ids: readonly string[]) => (user ? s.webhooks.deliveriesOf(user, ids) : Promise.resolve(ids.map(() => null)))),
  };
  return {
    ...loaders,
    clearAll() {
      for (const loader of Object.values(loaders)) loader.clearAll();
    },
  };
}
