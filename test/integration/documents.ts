/** The GraphQL documents the integration tests send, typed from schema.graphql by graphql-codegen. */
import { graphql } from '../gql';

export const GenerateDoc = graphql(`
  mutation Generate($input: GenerateImageInput!) {
    generateImage(input: $input) {
      id
      status
      creditsReserved
      input { prompt negativePrompt width height steps cfgScale sampler seed batchSize }
      owner { id email }
    }
  }
`);

export const ProgressDoc = graphql(`
  subscription Progress($id: ID!) {
    generationProgress(id: $id) {
      generationId seq status progress step totalSteps etaSeconds queuePosition preview attempt
      error { code message retryable }
      images { url thumbnailUrl width height blurhash seed }
    }
  }
`);

export const GenerationDoc = graphql(`
  query Generation($id: ID!) {
    generation(id: $id) {
      id status progress attempts creditsReserved createdAt finishedAt
      error { code message retryable }
      images { url seed }
      current { seq status queuePosition etaSeconds }
    }
  }
`);

export const CancelDoc = graphql(`
  mutation Cancel($id: ID!) {
    cancelGeneration(id: $id) { id status error { code } }
  }
`);

export const MeDoc = graphql(`
  query Me { me { id email photoCredits } }
`);

export const ChatHistoryDoc = graphql(`
  query ChatHistory($characterName: String!, $first: Int, $after: String) {
    chatHistory(characterName: $characterName, first: $first, after: $after) {
      edges {
        cursor
        node {
          id characterName prompt generationId createdAt
          images { url thumbnailUrl width height blurhash seed }
          generation { id status input { prompt characterName } }
        }
      }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
`);

export const CharactersDoc = graphql(`
  query Characters {
    characters { name lastExchange { id prompt generationId createdAt images { url } } }
  }
`);

export const GenerationsDoc = graphql(`
  query Generations($first: Int, $after: String, $status: GenerationStatus) {
    generations(first: $first, after: $after, status: $status) {
      edges { cursor node { id status createdAt input { prompt } } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
`);

export const OperatorsDoc = graphql(`
  query Operators {
    queues { name waiting active delayed succeeded failed succeededLastHour failedLastHour oldestWaitingSeconds }
    workers { id host queues slots busy startedAt lastSeenAt sdServer { url state lastCheckedAt error } sdServers { url state busy error } }
  }
`);
