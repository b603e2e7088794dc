/**
 * The comparison: a bare graphql-yoga server whose `generateImage` does nothing but return a
 * constant. It accepts the same document and variables as the real API (the same input type, with
 * the same defaults) and runs in its own process, served the same way (node:http, one yoga handler).
 * Reports `{ type: 'ready', url }`; SIGTERM closes it. BENCH_CPU_PROFILE=<file> profiles it.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createSchema, createYoga } from 'graphql-yoga';
import { report } from '../../lib/processes';
import { startCpuProfile } from '../../lib/profile';

const typeDefs = /* GraphQL */ `
  input GenerateImageInput {
    prompt: String!
    negativePrompt: String
    characterName: String
    width: Int = 512
    height: Int = 512
    steps: Int = 20
    cfgScale: Float = 7
    sampler: String = "Euler a"
    seed: Float = -1
    batchSize: Int = 1
    idempotencyKey: String
    startDeadlineSeconds: Int
  }
  enum GenerationStatus { QUEUED }
  type Generation { id: ID! status: GenerationStatus! }
  type Query { ok: Boolean! }
  type Mutation { generateImage(input: GenerateImageInput!): Generation! }
`;

const CONSTANT = { id: '00000000-0000-4000-8000-000000000000', status: 'QUEUED' } as const;

const stopProfile = await startCpuProfile(process.env.BENCH_CPU_PROFILE);

const yoga = createYoga({
  schema: createSchema({
    typeDefs,
    resolvers: { Query: { ok: () => true }, Mutation: { generateImage: () => CONSTANT } },
  }),
  graphqlEndpoint: '/graphql',
  landingPage: false,
  logging: false,
});

const server = http.createServer((req, res) => void yoga(req, res));
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  report({ type: 'ready', url: `http://127.0.0.1:${port}/graphql` });
});

// The bench asks for the CPU time used so far, to compute CPU per request around a run.
process.on('message', (m: unknown) => {
  if ((m as { type?: unknown } | null)?.type === 'cpu') report({ type: 'cpu', usage: process.cpuUsage() });
});

const stop = () => {
  server.closeAllConnections();
  server.close(() => {
    void Promise.resolve(stopProfile?.()).finally(() => process.exit(0));
  });
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
