import type { CodegenConfig } from '@graphql-codegen/cli';

/**
 * Types the integration tests' GraphQL documents and the client library's (client/) from the
 * committed schema.graphql, so a schema change that would break a client breaks `npm test` (which
 * type-checks and builds the client) first.
 */
const presetOptions = {
  preset: 'client',
  config: {
    documentMode: 'string',
    useTypeImports: true,
    enumsAsTypes: true,
    strictScalars: true,
    scalars: { SafeInt: 'number', DateTime: 'string' },
  },
  presetConfig: { fragmentMasking: false },
} as const;

const config: CodegenConfig = {
  schema: 'schema.graphql',
  ignoreNoDocuments: false,
  generates: {
    'test/gql/': { documents: ['test/**/*.ts', '!test/gql/**'], ...presetOptions },
    // The client library's own operations (client/src/documents.ts), typed the same way.
    // With `.js` in its relative imports, so that the built package loads in Node as ES modules.
    'client/src/gql/': {
      documents: ['client/src/**/*.ts', '!client/src/gql/**'],
      ...presetOptions,
      config: { ...presetOptions.config, emitLegacyCommonJSImports: false },
    },
  },
  silent: true,
};

export default config;
