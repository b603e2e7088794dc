import { GraphQLError, Kind } from 'graphql';
import type { Builder } from './builder';

const badSafeInt = (v: unknown) =>
  new GraphQLError(`SafeInt must be an integer between ±${Number.MAX_SAFE_INTEGER}; got ${JSON.stringify(v)}`, {
    extensions: { code: 'BAD_USER_INPUT' },
  });

function toSafeInt(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw badSafeInt(v);
  return v;
}

export function addScalars(builder: Builder) {
  // A1111 seeds reach 4294967295, past GraphQL's 32-bit Int.
  builder.scalarType('SafeInt', {
    description: 'An integer within ±(2^53 − 1), exact in JSON and JavaScript.',
    serialize: (v) => toSafeInt(v),
    parseValue: (v) => toSafeInt(v),
    parseLiteral: (ast) => {
      if (ast.kind !== Kind.INT) throw badSafeInt(ast.kind);
      return toSafeInt(Number(ast.value));
    },
  });
  builder.scalarType('DateTime', {
    description: 'An ISO-8601 timestamp in UTC.',
    serialize: (v) => (v instanceof Date ? v : new Date(v)).toISOString(),
    parseValue: (v) => {
      const d = new Date(String(v));
      if (Number.isNaN(d.getTime())) throw new GraphQLError('DateTime must be an ISO-8601 string');
      return d;
    },
  });
}
