import SchemaBuilder from '@pothos/core';
import ValidationPlugin from '@pothos/plugin-validation';
import type { AccountService } from '../accounts/service';
import type { AuthUser } from '../auth/tokens';
import type { UserService } from '../auth/users';
import type { ChatService } from '../chat/service';
import { DomainError, unauthenticated } from '../errors';
import type { GenerationService } from '../generation/service';
import type { StreamSlots } from '../limits/streamSlots';
import type { Logger } from '../logger';
import type { OperatorService } from '../operators/service';
import type { ProgressEvent } from '../progress/event';
import type { ImageUrls } from '../storage/storage';
import type { RequestLoaders } from './loaders';
import type { WebhookService } from '../webhooks/service';

/** What every resolver gets: the caller (null when anonymous) and the services. */
export interface SchemaContext {
  user: AuthUser | null;
  /** A token was sent but is unknown or revoked: `me` says so instead of answering null. */
  tokenRejected: boolean;
  /** Aborted when the client goes away (its connection closed). */
  signal: AbortSignal;
  /** The bearer token the request came with (signOut revokes it). */
  token: string | null;
  /** The client's address (src/limits/clientIp.ts: the peer, or X-Forwarded-For behind TRUST_PROXY). */
  clientIp: string;
  /** Open progress streams per user and per process: a stream takes a slot before it starts. */
  streamSlots: Pick<StreamSlots, 'acquire'>;
  generations: GenerationService;
  accounts: AccountService;
  webhooks: WebhookService;
  users: UserService;
  /** Makes the image URLs of this answer from their storage keys. */
  imageUrls: ImageUrls;
  chat: ChatService;
  /** Admins' view of the queues and workers. */
  operators: OperatorService;
  log: Logger;
  /**
   * Per-request memo of generations' current state, so several fields read it once. `created`
   * marks a state generateImage knew without reading it (QUEUED, seq 0, no queue position yet).
   */
  progressMemo: Map<string, { state: Promise<ProgressEvent | null>; created?: boolean }>;
  /** This request's batched lookups by id (./loaders.ts); resolvers read through these, not the services' single lookups. */
  loaders: RequestLoaders;
}

export function createBuilder() {
  return new SchemaBuilder<{
    Context: SchemaContext;
    DefaultFieldNullability: false;
    Scalars: {
      SafeInt: { Input: number; Output: number };
      DateTime: { Input: Date; Output: Date | string };
    };
  }>({
    defaultFieldNullability: false,
    plugins: [ValidationPlugin],
    validation: {
      // Every validation failure reaches the client as BAD_USER_INPUT with each problem listed.
      validationError: (result) => {
        const issues = result.issues.map((i) => ({
          path: (i.path ?? []).map((p) => (typeof p === 'object' ? p.key : p)).join('.'),
          message: i.message,
        }));
        return new DomainError('BAD_USER_INPUT', issues.map((i) => i.message).join('; '), { issues });
      },
    },
  });
}

export type Builder = ReturnType<typeof createBuilder>;
/** The builder's schema types, for code that takes refs made elsewhere (`ObjectRef<BuilderTypes, Shape>`). */
export type BuilderTypes = Builder extends PothosSchemaTypes.SchemaBuilder<infer T> ? T : never;

/** The caller, or null without a token; a token that was sent but is not valid is an error, not anonymity. */
export function optionalUser(ctx: SchemaContext): AuthUser | null {
  if (ctx.tokenRejected) throw unauthenticated();
  return ctx.user;
}

export function requireUser(ctx: SchemaContext): AuthUser {
  if (!ctx.user) throw unauthenticated();
  return ctx.user;
}
