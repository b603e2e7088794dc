import { lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
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
  return builder.toSchema();
}

/** The SDL committed as schema.graphql. */
export const printSchemaSDL = (schema: GraphQLSchema): string => `${printSchema(lexicographicSortSchema(schema))}\n`;
