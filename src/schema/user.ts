import { User } from '../db/models';
import { optionalUser, type Builder } from './builder';

export interface UserShape {
  id: string;
  email: string;
}

export function addUserType(builder: Builder) {
  const UserRef = builder.objectRef<UserShape>('User').implement({
    fields: (t) => ({
      id: t.exposeID('id'),
      email: t.exposeString('email'),
      photoCredits: t.int({
        description: 'Credits left; each image of a batch costs one.',
        resolve: async (u, _args, ctx) => {
          const row = await User.query(ctx.db).findById(u.id).select('photo_credits');
          return row?.photo_credits ?? 0;
        },
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
