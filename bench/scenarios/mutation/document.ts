/**
 * What the load sends: the request a client would send, and the check that a response is a success
 * (autocannon sees only the HTTP status; a GraphQL error arrives in a 200).
 */
export const GENERATE_DOCUMENT = 'mutation($input: GenerateImageInput!){ generateImage(input:$input){ id status } }';

/** A small valid input (the defaults fill in the rest, as for a real client). */
export const GENERATE_BODY = JSON.stringify({
  query: GENERATE_DOCUMENT,
  variables: { input: { prompt: 'a lighthouse at dusk', width: 512, height: 512, steps: 20 } },
});

/** Both servers answer `{"data":{"generateImage":{"id":…,"status":"QUEUED"}}}` and nothing else. */
export function isGenerated(body: unknown): boolean {
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : body;
  return (
    typeof text === 'string' &&
    text.startsWith('{"data":{"generateImage":{"id":"') &&
    text.includes('"status":"QUEUED"') &&
    !text.includes('"errors"')
  );
}
