/**
 * The operations GraphiQL opens with: one tab each for Generate, Watch, Me and Stop (the README's
 * GraphQL section, ready to run), with the token in every tab's headers.
 *
 * How yoga's GraphiQL 4.5 page uses these options:
 * - `defaultTabs` are GraphiQL's tabs only while the browser has none stored (localStorage), i.e.
 *   on a person's first visit; after that their own tabs come back.
 * - The query editor starts with `query` (yoga prefers it even to the URL's `?query=`), else
 *   `?query=`, else yoga's welcome text, whatever the tabs hold. So `query` must be the first tab's
 *   text, or the first tab ("Generate") shows the welcome text and becomes it at the first keystroke.
 * - `headers` fills the header editor of every tab whose own headers are empty, and of new tabs.
 *   The example tabs leave theirs empty on purpose: GraphiQL compares the editors' stored contents
 *   (none yet on a first visit) with each tab's to find the open tab after a reload, and a tab with
 *   its own headers would not match, so a reload before any edit would add a second Generate tab.
 * - The page (renderLocalGraphiQL) keeps `query` for a first visit only: later visits get the
 *   URL's query or the one they last had open, as plain GraphiQL does.
 */
import type { GraphiQLOptions } from 'graphql-yoga';

/** GraphiQLOptions plus `query`, which yoga's page reads (see above) but its type does not list. */
export type GraphiQLExampleOptions = GraphiQLOptions & { query: string };

export interface ExampleTab {
  title: string;
  query: string;
  variables: string | null;
}

const ID_VARIABLES = '{"id": "PASTE-THE-ID-HERE"}';

/** The example tabs; their titles are what GraphiQL derives from the operation names. */
export function graphiqlExampleTabs(token: string | null): ExampleTab[] {
  // GraphiQL titles a tab after its first line that does not start with `#` and names an operation.
  const tokenHint = token
    ? '# Your token is already in Headers (below).'
    : '# Needs a token: put {"Authorization": "Bearer <token>"} in Headers (npm run user:create prints one).';
  return [
    {
      title: 'Generate',
      query: `# Run this (the ▶ button or Ctrl-Enter): it takes one photo credit and answers at once with
# the generation's id. Copy the id, then open the Watch tab to see the generation run.
${tokenHint}
mutation Generate {
  generateImage(input: { prompt: "a lighthouse at dusk, oil painting", steps: 20 }) {
    id status creditsReserved
  }
}
`,
      variables: null,
    },
    {
      title: 'Watch',
      query: `# Paste the id from Generate into Variables (below) in place of PASTE-THE-ID-HERE, then run
# this: the states stream in live, QUEUED → … → SUCCEEDED with the image URLs, or FAILED.
subscription Watch($id: ID!) {
  generationProgress(id: $id) {
    seq status progress step totalSteps etaSeconds queuePosition attempt
    error { code message retryable }
    images { url thumbnailUrl width height blurhash seed }
  }
}
`,
      variables: ID_VARIABLES,
    },
    {
      title: 'Me',
      query: `# Run this to see whose token is in Headers and how many photo credits are left.
query Me { me { email photoCredits } }
`,
      variables: null,
    },
    {
      title: 'Stop',
      query: `# Paste the id of a running generation into Variables (below), then run this to cancel it:
# its photo credits come back.
mutation Stop($id: ID!) { cancelGeneration(id: $id) { id status } }
`,
      variables: ID_VARIABLES,
    },
  ];
}

/** The GraphiQL options that open the example tabs, with `token` (if any) in their headers. */
export function graphiqlExamples(token: string | null): GraphiQLExampleOptions {
  const all = graphiqlExampleTabs(token);
  return {
    query: all[0]?.query ?? '',
    ...(token ? { headers: JSON.stringify({ Authorization: `Bearer ${token}` }) } : {}),
    // Headers null: each tab shows `headers` (see above).
    defaultTabs: all.map((t) => ({ query: t.query, variables: t.variables, headers: null })),
  };
}
