import { defaultFieldResolver, lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { addAccountTypes } from './account';
import { createBuilder } from './builder';
import { addChatTypes } from './chat';
import { addConnectionTypes } from './connection';
import type { GenerationSchemaOptions } from './generation';
import { addGenerationTypes } from './generation';
import { addOperatorTypes } from './operators';
import { addProgressTypes } from './progress';
import { addScalars } from './scalars';
import { addUserType } from './user';
import { addWebhookEventEnum, addWebhookTypes } from './webhook';
import type { SchemaContext } from './builder';

export type { SchemaContext } from './builder';

/** Builds the schema. Validation limits come from the config; nothing here does I/O. */
export function buildSchema(opts: GenerationSchemaOptions): GraphQLSchema {
  const builder = createBuilder();
  builder.queryType({});
  builder.mutationType({});
  builder.subscriptionType({});
  addScalars(builder);
  const progress = addProgressTypes(builder);
  const user = addUserType(builder);
  const connections = addConnectionTypes(builder, opts.limits.pageSizeMax);
  const webhookEvent = addWebhookEventEnum(builder);
  const { Generation } = addGenerationTypes(builder, progress, user, connections, webhookEvent, opts);
  addChatTypes(builder, progress, connections, Generation, opts.limits);
  addAccountTypes(builder, user, connections);
  addWebhookTypes(builder, user, webhookEvent);
  addOperatorTypes(builder);
  return withFreshReadsPerMutation(builder.toSchema());
}

/**
 * Every mutation field starts by forgetting what the request has read so far (its loaders and
 * progress memo): a mutation changes it, and the fields selected under it must show the change
 * (`generateImage { owner { photoCredits } }` after a charge, a second aliased mutation after the
 * first). Mutation fields run one after another, each with its selection, so this is enough.
 */
function withFreshReadsPerMutation(schema: GraphQLSchema): GraphQLSchema {
  for (const field of Object.values(schema.getMutationType()?.getFields() ?? {})) {
    const resolve = field.resolve ?? defaultFieldResolver;
    field.resolve = (source, args, ctx: SchemaContext, info) => {
      ctx.loaders.clearAll();
      ctx.progressMemo.clear();
      return resolve(source, args, ctx, info);
    };
  }
  return schema;
}

/** The SDL committed as schema.graphql. */
export const printSchemaSDL = (schema: GraphQLSchema): string => `${printSchema(lexicographicSortSchema(schema))}\n`;
