/** The operations the client sends, typed from the service's schema.graphql by graphql-codegen (src/gql/). */
import { graphql } from './gql/index.js';

export const GenerateDocument = graphql(`
  mutation ClientGenerate($input: GenerateImageInput!) {
    generateImage(input: $input) {
      id
      status
      creditsReserved
    }
  }
`);

export const WatchDocument = graphql(`
  subscription ClientWatch($id: ID!, $withPreview: Boolean!) {
    generationProgress(id: $id) {
      generationId
      seq
      status
      progress
      step
      totalSteps
      etaSeconds
      queuePosition
      attempt
      preview @include(if: $withPreview)
      error {
        code
        message
        retryable
      }
      images {
        url
        thumbnailUrl
        width
        height
        blurhash
        seed
      }
    }
  }
`);

export const CancelDocument = graphql(`
  mutation ClientCancel($id: ID!) {
    cancelGeneration(id: $id) {
      id
      status
    }
  }
`);
