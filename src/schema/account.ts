import type { ApiTokenInfo, NotificationSettings, Session, SignUpAnswer } from '../accounts/service';
import type { IssuedToken } from '../auth/tokens';
import type { UserProfile } from '../auth/users';
import type { CreditEntry } from '../credits/ledger';
import { DomainError, unauthenticated } from '../errors';
import type { Builder, SchemaContext } from './builder';
import { requireUser } from './builder';
import type { ConnectionTypes } from './connection';
import type { addUserType } from './user';

/** Only the caller's own account details are readable, whichever way the User was reached. */
export function ownAccount(u: UserProfile, ctx: SchemaContext): string {
  if (u.viewer) return u.id;
  const user = requireUser(ctx);
  if (user.id !== u.id) throw new DomainError('FORBIDDEN', "Only the user may read their own account's details.");
  return user.id;
}

export function addAccountTypes(builder: Builder, UserRef: ReturnType<typeof addUserType>, connections: ConnectionTypes) {
  const CreditKind = builder.enumType('CreditEntryKind', {
    values: {
      CHARGE: { value: 'charge', description: 'A generation took its credits.' },
      REFUND: { value: 'refund', description: 'A generation that failed or was cancelled gave them back.' },
      GRANT: { value: 'grant', description: 'Given (or taken) by an admin or an operator, or at sign-up.' },
    } as const,
  });
  const CreditEntryRef = builder.objectRef<CreditEntry>('CreditEntry').implement({
    description: 'One change of the photo credits; the balance is the sum of them all.',
    fields: (t) => ({
      id: t.exposeID('id'),
      kind: t.field({ type: CreditKind, resolve: (e) => e.kind }),
      amount: t.exposeInt('amount', { description: 'Negative for a charge.' }),
      generationId: t.exposeID('generationId', { nullable: true }),
      reason: t.exposeString('reason', { nullable: true }),
      createdAt: t.expose('createdAt', { type: 'DateTime' }),
    }),
  });
  const CreditConnection = connections.connection('CreditEntry', CreditEntryRef);
  const ApiToken = builder.objectRef<ApiTokenInfo>('ApiToken').implement({
    description: 'An API token for programs; the token itself is shown once, when it is made.',
    fields: (t) => ({
      id: t.exposeID('id'),
      name: t.exposeString('name'),
      createdAt: t.expose('createdAt', { type: 'DateTime' }),
      lastUsedAt: t.expose('lastUsedAt', { type: 'DateTime', nullable: true, description: 'When it last authenticated a request, to the minute; null if never.' }),
    }),
  });
  const NewApiToken = builder.objectRef<IssuedToken>('NewApiToken').implement({
    fields: (t) => ({
      token: t.exposeString('token', { description: 'Send as "Authorization: Bearer <token>". Shown only now: keep it.' }),
      apiToken: t.field({ type: ApiToken, resolve: (i) => ({ id: i.id, name: i.name, createdAt: i.createdAt, lastUsedAt: null }) }),
    }),
  });
  const Notifications = builder.objectRef<NotificationSettings>('NotificationSettings').implement({
    fields: (t) => ({ imagesReady: t.exposeBoolean('imagesReady', { description: 'A mail when a generation succeeds.' }) }),
  });
  const SignUpResult = builder.objectRef<SignUpAnswer>('SignUpResult').implement({
    description: 'The same whether the address was new or already had an account: the mail tells its owner which.',
    fields: (t) => ({ email: t.exposeString('email'), message: t.exposeString('message') }),
  });
  const SessionRef = builder.objectRef<Session>('Session').implement({
    fields: (t) => ({
      token: t.exposeString('token', { description: 'Send as "Authorization: Bearer <token>"; signOut ends it.' }),
      expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
      user: t.field({ type: UserRef, resolve: (s) => s.user }),
    }),
  });

  builder.objectFields(UserRef, (t) => ({
    emailVerified: t.boolean({ resolve: (u, _a, ctx) => ctx.loaders.emailVerified.load(ownAccount(u, ctx)) }),
    apiTokens: t.field({ type: [ApiToken], description: 'Live API tokens (sessions are not listed).', resolve: (u, _a, ctx) => ctx.loaders.apiTokens.load(ownAccount(u, ctx)) }),
    notificationSettings: t.field({ type: Notifications, resolve: (u, _a, ctx) => ctx.loaders.notificationSettings.load(ownAccount(u, ctx)) }),
    creditHistory: t.field({
      type: CreditConnection,
      description: 'Every charge, refund and grant, newest first.',
      args: connections.pageArgs(t.arg, 'credits'),
      resolve: (u, args, ctx) => ctx.users.creditHistory(ownAccount(u, ctx), connections.page(args)),
    }),
  }));

  builder.mutationFields((t) => ({
    signUp: t.field({
      type: SignUpResult,
      description: 'Makes an account and mails a link that verifies the address; sign in afterwards.',
      args: { email: t.arg.string({ required: true }), password: t.arg.string({ required: true }) },
      resolve: (_r, args, ctx) => ctx.accounts.signUp(args.email, args.password, ctx.clientIp),
    }),
    verifyEmail: t.field({
      type: UserRef,
      description: 'Uses the token from the verification mail (once).',
      args: { token: t.arg.string({ required: true }) },
      resolve: (_r, args, ctx) => ctx.accounts.verifyEmail(args.token),
    }),
    signIn: t.field({
      type: SessionRef,
      args: { email: t.arg.string({ required: true }), password: t.arg.string({ required: true }) },
      resolve: (_r, args, ctx) => ctx.accounts.signIn(args.email, args.password, ctx.clientIp),
    }),
    signOut: t.boolean({
      description: 'Revokes the token this request was sent with.',
      resolve: async (_r, _a, ctx) => {
        requireUser(ctx);
        if (!ctx.token) throw unauthenticated();
        await ctx.accounts.signOut(ctx.token);
        return true;
      },
    }),
    revokeAllSessions: t.int({
      description:
        'Ends every session of the signed-in user, this one included (sign in again afterwards), and with includeApiTokens every API token too. ' +
        'Returns how many ended. Other API processes may accept them for up to AUTH_CACHE_TTL_MS more.',
      args: { includeApiTokens: t.arg.boolean({ defaultValue: false }) },
      resolve: (_r, args, ctx) => ctx.accounts.revokeAllSessions(requireUser(ctx).id, args.includeApiTokens ?? false),
    }),
    requestPasswordReset: t.boolean({
      description: 'Mails a reset link if the address has an account; answers true either way.',
      args: { email: t.arg.string({ required: true }) },
      resolve: async (_r, args, ctx) => {
        await ctx.accounts.requestPasswordReset(args.email, ctx.clientIp);
        return true;
      },
    }),
    resetPassword: t.boolean({
      description: "Sets a new password with the reset mail's token (once); every session of the account ends.",
      args: { token: t.arg.string({ required: true }), password: t.arg.string({ required: true }) },
      resolve: async (_r, args, ctx) => {
        await ctx.accounts.resetPassword(args.token, args.password);
        return true;
      },
    }),
    createApiToken: t.field({
      type: NewApiToken,
      args: { name: t.arg.string({ required: true }) },
      resolve: (_r, args, ctx) => ctx.accounts.createApiToken(requireUser(ctx).id, args.name),
    }),
    revokeApiToken: t.boolean({
      description: "True if it was one of the caller's live API tokens.",
      args: { id: t.arg.id({ required: true }) },
      resolve: (_r, args, ctx) => ctx.accounts.revokeApiToken(requireUser(ctx).id, String(args.id)),
    }),
    updateNotificationSettings: t.field({
      type: Notifications,
      args: { imagesReady: t.arg.boolean() },
      resolve: (_r, args, ctx) => ctx.accounts.updateNotificationSettings(requireUser(ctx).id, { imagesReady: args.imagesReady ?? undefined }),
    }),
    grantPhotoCredits: t.field({
      type: UserRef,
      description: 'Admins only: adds (or, negative, takes) photo credits, booked in the ledger with the reason.',
      args: { userId: t.arg.id({ required: true }), amount: t.arg.int({ required: true }), reason: t.arg.string({ required: true }) },
      resolve: (_r, args, ctx) => ctx.users.grantCredits(requireUser(ctx), String(args.userId), args.amount, args.reason),
    }),
  }));
}
