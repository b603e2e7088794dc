import type { UserProfile } from '../auth/users';
import { optionalUser, type Builder } from './builder';

export function addUserType(builder: Builder) {
  const UserRef = builder.objectRef<UserProfile>('User').implement({
    fields: (t) => ({
      id: t.exposeID('id'),
      email: t.exposeString('email'),
      photoCredits: t.int({
        description: 'Credits left; each image of a batch costs one.',
        resolve: (u, _args, ctx) => ctx.loaders.credits.load(u.id),
      }),
    }),
  });

  builder.queryField('me', (t) =>
    t.field({
      type: UserRef,
      nullable: true,
      description: 'The caller; null without a token; UNAUTHENTICATED for an unknown or revoked token.',
      resolve: (_r, _a, ctx) => optionalUser(ctx),
    }),
  );
  return UserRef;
}
