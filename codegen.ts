import type { CodegenConfig } from '@graphql-codegen/cli';

/**
 * Types the integration tests' GraphQL documents from the committed schema.graphql, so a schema
 * change that would break a client breaks `npm test` (which type-checks) first.
 */
const config: CodegenConfig = {
  schema: 'schema.graphql',
  documents: ['test/**/*.ts', '!test/gql/**'],
  ignoreNoDocuments: false,
  generates: {
    'test/gql/': {
      preset: 'client',
      config: {
        documentMode: 'string',
        useTypeImports: true,
        enumsAsTypes: true,
        strictScalars: true,
        scalars: { SafeInt: 'number', DateTime: 'string' },
      },
      presetConfig: { fragmentMasking: false },
    },
  },
  silent: true,
};

export default config;
