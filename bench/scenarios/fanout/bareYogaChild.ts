/**
 * The comparison for the fan-out scenario: bare graphql-yoga, `createYoga` + `createSchema`, whose
 * `generationProgress` subscription yields straight from yoga's in-memory `createPubSub`, nothing
 * else (no auth, no database, no snapshot). Same types and fields as the project's, same SSE
 * transport, same Node HTTP server. Reports `{ ready: url }`, then answers control requests:
 * `memory`, `connections`, `listeners` (subscriptions attached to the pubsub), and
 * `publish` ({ topics, events }: publishes `events` states to each topic, i.e. generation id).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createPubSub, createSchema, createYoga } from 'graphql-yoga';
import { report } from '../../lib/processes';
import { connectionCount, serveControl } from '../progress/control';

const typeDefs = /* GraphQL */ `
  enum GenerationStatus { QUEUED STARTED GENERATING POST_PROCESSING UPLOADING RETRYING SUCCEEDED FAILED CANCELLED }
  type GenerationError { code: String! message: String! retryable: Boolean! }
  type GeneratedImage { url: String! thumbnailUrl: String! width: Int! height: Int! blurhash: String! seed: Float }
  type GenerationProgress {
    generationId: ID! seq: Int! status: GenerationStatus! progress: Float! step: Int totalSteps: Int etaSeconds: Float
    queuePosition: Int preview: String attempt: Int! error: GenerationError images: [GeneratedImage!]!
  }
  type Query { ok: Boolean! }
  type Subscription { generationProgress(id: ID!): GenerationProgress! }
`;

interface State {
  generationId: string;
  seq: number;
  status: 'GENERATING';
  progress: number;
  step: number;
  totalSteps: number;
  etaSeconds: number;
  queuePosition: null;
  preview: null;
  attempt: number;
  error: null;
  images: [];
}

/** Counts listeners so the bench knows when every lazy pubsub subscription is attached. */
class CountingEventTarget extends EventTarget {
  listeners = 0;
  override addEventListener(...args: Parameters<EventTarget['addEventListener']>): void {
    this.listeners++;
    super.addEventListener(...args);
  }
  override removeEventListener(...args: Parameters<EventTarget['removeEventListener']>): void {
    this.listeners--;
    super.removeEventListener(...args);
  }
}

function main() {
  const eventTarget = new CountingEventTarget();
  const pubSub = createPubSub<{ progress: [generationId: string, state: State] }>({ eventTarget });
  const seqs = new Map<string, number>();
  const yoga = createYoga({
    schema: createSchema({
      typeDefs,
      resolvers: {
        Query: { ok: () => true },
        Subscription: {
          generationProgress: {
            subscribe: (_root: unknown, args: { id: string }) => pubSub.subscribe('progress', args.id),
            resolve: (state: State) => state,
          },
        },
      },
    }),
    graphqlEndpoint: '/graphql',
    landingPage: false,
    graphiql: false,
    logging: false,
  });
  const server = http.createServer(yoga);
  serveControl({
    connections: () => connectionCount(server),
    listeners: () => eventTarget.listeners,
    publish: (args) => {
      const { topics, events } = args as { topics: string[]; events: number };
      for (let e = 0; e < events; e++) {
        for (const id of topics) {
          const seq = (seqs.get(id) ?? 1) + 1;
          seqs.set(id, seq);
          const step = Math.min(19, seq);
          pubSub.publish('progress', id, {
            generationId: id,
            seq,
            status: 'GENERATING',
            progress: (0.9 * step) / 20,
            step,
            totalSteps: 20,
            etaSeconds: 20 - step,
            queuePosition: null,
            preview: null,
            attempt: 1,
            error: null,
            images: [],
          });
        }
      }
      return events * topics.length;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
  server.listen(0, '127.0.0.1', () => {
    const addr = server.address() as AddressInfo;
    report({ ready: `http://127.0.0.1:${addr.port}` });
  });
}

main();
