import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    // Vite would resolve `graphql` in our sources to its ESM build while graphql-yoga (loaded by Node)
    // gets the CommonJS one: two GraphQLError classes, and yoga would mask our public errors.
    // Node itself resolves `graphql` to the CommonJS build, so the tests do the same.
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }],
  },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // expect.poll waits for a state, not for a time: vitest's default gives up after 1 s, which a
    // busy machine can take to finish a generation's post-processing. The test's own timeout bounds it.
    expect: { poll: { timeout: 25_000, interval: 50 } },
    pool: 'forks',
    // Two cores: more parallel files only fight over them.
    maxWorkers: 2,
  },
});
