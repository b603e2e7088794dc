/**
 * What stands between /graphql and a hostile client, as yoga plugins, in the order a request meets
 * them:
 * - yoga's CSRF prevention: a request a browser could send cross-site without a preflight (a GET,
 *   or a form's content type) must carry `x-graphql-yoga-csrf`; JSON POSTs always pass.
 * - graphql-armor: the parser stops after GRAPHQL_MAX_TOKENS tokens (so no document nests deep
 *   enough to overflow the stack), then depth, cost, aliases and directives are validated, for
 *   subscriptions as for queries. Field suggestions are left out when introspection is off.
 * - introspection off unless GraphiQL is on (GRAPHIQL; off by default in production).
 * - text Postgres cannot store (NUL, lone surrogates) in a variable or a literal is refused before
 *   anything runs, naming where it was.
 * - every answer's errors are shaped last: each carries a code, messages are cut at
 *   MAX_MESSAGE_LENGTH, and past GRAPHQL_MAX_ERRORS one error says how many were left out.
 * - the body size cap, MAX_BODY_BYTES: a body that says it is longer is refused before yoga (server.ts);
 *   inside yoga, capRequestBodies does the same for any path yoga serves and counts a chunked
 *   body, which says nothing, as it streams.
 *   Its error is shaped here like the others.
 */
import { EnvelopArmor } from '@escape.tech/graphql-armor';
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { useDisableIntrospection } from '@graphql-yoga/plugin-disable-introspection';
import { GraphQLError, visit, type DocumentNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Config } from '../config';
import { SERVICE_UNAVAILABLE_RETRY_AFTER_S } from '../errors';
import { findUnstorableText, unstorableReason, type UnstorableText } from '../text';

/** What yoga's CSRF prevention asks of a request a browser could send cross-site without a preflight. */
export const CSRF_HEADER = 'x-graphql-yoga-csrf';

/** Longer error messages are cut: graphql-js prints a whole bad variable value into its message. */
export const MAX_MESSAGE_LENGTH = 1000;

/** The plugins read no context of ours, so they fit a yoga of any context. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyPlugin = Plugin<any>;

export function hardeningPlugins(settings: Config['graphql']): AnyPlugin[] {
  const armor = new EnvelopArmor({
    maxTokens: { n: settings.maxTokens },
    maxDepth: { n: settings.maxDepth, flattenFragments: true },
    costLimit: { maxCost: settings.maxCost },
    maxAliases: { n: settings.maxAliases },
    maxDirectives: { n: settings.maxDirectives },
    // "Did you mean …?" names fields of a schema that introspection would otherwise hide.
    blockFieldSuggestion: { enabled: !settings.graphiql },
  });
  return [
    useCSRFPrevention({ requestHeaders: [CSRF_HEADER] }),
    shallowDocumentsOnly,
    ...(armor.protect().plugins as AnyPlugin[]),
    ...(settings.graphiql ? [] : [useDisableIntrospection()]),
    storableTextOnly,
    shapeErrors(settings),
    // Last: after the request parsers (yoga's and any plugin's), whose choice it wraps.
    capRequestBodies(settings.maxBodyBytes),
  ];
}

/**
 * The body cap inside yoga, for every request it parses (server.ts refuses a /graphql body that says
 * it is too long before yoga; yoga also serves any path ending in /graphql, which this covers): a
 * Content-Length over `limit` is refused at once, and a body without one (chunked) is counted as yoga
 * reads it, the read failing past `limit` bytes. Both are REQUEST_ENTITY_TOO_LARGE (413, shaped below).
 *
 * A body with a Content-Length within the cap is not counted: Node's HTTP parser delivers exactly
 * that many bytes. yoga's own limiter (maxRequestBodySize, turned off in server.ts) streams every
 * body through a counting TransformStream, and that pipe (a stream pipeline, an AbortController
 * aborted when it ends, and the DOMException that abort makes) cost about a tenth of
 * generateImage's CPU under load for bodies that cannot be over the cap anyway.
 */
export function capRequestBodies(limit: number): AnyPlugin {
  const tooLarge = () => new GraphQLError('Request body too large', { extensions: { code: 'REQUEST_ENTITY_TOO_LARGE', http: { status: 413 } } });
  return {
    onRequestParse({ request, requestParser, setRequestParser, fetchAPI }) {
      const length = request.headers.get('content-length');
      if (length !== null) {
        // Node's parser has already refused a Content-Length that is not a number.
        if (Number(length) > limit) throw tooLarge();
        return;
      }
      if (requestParser == null || request.body == null) return;
      setRequestParser((req) => {
        const body = req.body;
        if (!body) return requestParser(req);
        // A native ReadableStream needs the native TransformStream, the ponyfill's its own (as yoga does it).
        const Transform = body instanceof ReadableStream ? globalThis.TransformStream : fetchAPI.TransformStream;
        let read = 0;
        const counted = body.pipeThrough(
          new Transform<Uint8Array, Uint8Array>({
            transform(chunk, controller) {
              read += chunk.byteLength;
              if (read > limit) {
                controller.error(tooLarge());
                return;
              }
              controller.enqueue(chunk);
            },
          }),
        );
        // duplex is what a streamed request body needs; lib.dom's RequestInit does not know it yet.
        return requestParser(new fetchAPI.Request(req.url, { method: req.method, headers: req.headers, signal: req.signal, body: counted, duplex: 'half' } as RequestInit));
      });
    },
  };
}

/**
 * Brackets, braces and parentheses a document may nest: far beyond any real operation (the input
 * types nest 3 deep, GRAPHQL_MAX_DEPTH bounds selections), far below what overflows the parser's
 * stack. armor's token limit alone does not stop 2,000 nested list literals (measured: the parser
 * overflows first).
 */
export const MAX_DOCUMENT_NESTING = 64;

/** Refuses, before parsing, a document that nests deeper than MAX_DOCUMENT_NESTING. */
const shallowDocumentsOnly: AnyPlugin = {
  onParams({ params }) {
    if (typeof params.query === 'string' && documentNesting(params.query, MAX_DOCUMENT_NESTING) > MAX_DOCUMENT_NESTING) {
      throw new GraphQLError(`The document nests brackets deeper than ${MAX_DOCUMENT_NESTING} levels.`, {
        extensions: { code: 'GRAPHQL_VALIDATION_FAILED' },
      });
    }
  },
};

/**
 * How deep `{`, `[` and `(` nest in a GraphQL document, outside strings and comments; stops
 * counting once past `stopAbove`. A linear scan with no recursion.
 */
export function documentNesting(doc: string, stopAbove = Infinity): number {
  let depth = 0;
  let deepest = 0;
  for (let i = 0; i < doc.length; i++) {
    const c = doc[i];
    if (c === '#') {
      while (i < doc.length && doc[i] !== '\n' && doc[i] !== '\r') i++;
    } else if (c === '"') {
      if (doc.startsWith('"""', i)) {
        // A block string ends at the first triple quote not escaped as \""".
        let end = doc.indexOf('"""', i + 3);
        while (end !== -1 && doc[end - 1] === '\\') end = doc.indexOf('"""', end + 1);
        if (end === -1) break;
        i = end + 2;
      } else {
        for (i++; i < doc.length && doc[i] !== '"' && doc[i] !== '\n'; i++) if (doc[i] === '\\') i++;
      }
    } else if (c === '{' || c === '[' || c === '(') {
      deepest = Math.max(deepest, ++depth);
      if (deepest > stopAbove) return deepest;
    } else if (c === '}' || c === ']' || c === ')') {
      depth = Math.max(0, depth - 1);
    }
  }
  return deepest;
}

/** Refuses an operation whose variables or string literals hold text Postgres cannot store. */
const storableTextOnly: AnyPlugin = {
  onExecute({ args, setResultAndStopExecution }) {
    const bad = unstorableTextIn(args.document, args.variableValues);
    if (bad) setResultAndStopExecution({ errors: [unstorableTextError(bad)] });
  },
  onSubscribe({ args, setResultAndStopExecution }) {
    const bad = unstorableTextIn(args.document, args.variableValues);
    if (bad) setResultAndStopExecution({ errors: [unstorableTextError(bad)] });
  },
};

function unstorableTextError(bad: UnstorableText): GraphQLError {
  return new GraphQLError(`${bad.path} ${bad.reason}.`, { extensions: { code: 'BAD_USER_INPUT', field: bad.path } });
}

/**
 * The first unstorable string: in the variables (`$input.prompt`), else in the document's string
 * literals (`generateImage(input).prompt`, by argument and input-object field names).
 */
export function unstorableTextIn(document: DocumentNode, variables: unknown): UnstorableText | null {
  if (variables && typeof variables === 'object') {
    for (const [name, value] of Object.entries(variables)) {
      const found = findUnstorableText(value, `$${name}`);
      if (found) return found;
    }
  }
  return literalsChecked.has(document) ? literalsChecked.get(document)! : checkLiterals(document);
}

/** Each document's literals are checked once: yoga hands the same parsed document to every request that sends its text. */
const literalsChecked = new WeakMap<DocumentNode, UnstorableText | null>();

function checkLiterals(document: DocumentNode): UnstorableText | null {
  let found: UnstorableText | null = null;
  const names: string[] = [];
  visit(document, {
    Field: { enter: (node) => void names.push(`.${node.name.value}`), leave: () => void names.pop() },
    Argument: { enter: (node) => void names.push(`(${node.name.value})`), leave: () => void names.pop() },
    ObjectField: { enter: (node) => void names.push(`.${node.name.value}`), leave: () => void names.pop() },
    StringValue(node) {
      const reason = found ? null : unstorableReason(node.value);
      if (reason) found = { path: names.join('').replace(/^\./, '') || 'a string', reason };
    },
  });
  literalsChecked.set(document, found);
  return found;
}

/** The code of an error that has none, from what raised it (graphql-js, armor and yoga set none). */
function codeFor(error: GraphQLError): string {
  if (error.message.startsWith('Syntax Error')) return 'GRAPHQL_PARSE_FAILED';
  if (/^Variable "\$[^"]*" /.test(error.message)) return 'BAD_USER_INPUT';
  if (error.path) return 'INTERNAL_SERVER_ERROR';
  return 'GRAPHQL_VALIDATION_FAILED';
}

/**
 * An answer whose every error is SERVICE_UNAVAILABLE (a dependency is down: nothing was done) tells
 * when to try again, as a REST 503 does: `Retry-After` on the HTTP answer (the GraphQL status stays
 * yoga's, 200, so every GraphQL client still reads the errors, and graphql-sse does not take the
 * stream's answer for a network failure), and `extensions.retryAfterSeconds` in each error.
 */
export function markUnavailable(errors: GraphQLError[]): void {
  const codeOf = (e: GraphQLError) => (e.extensions as { code?: unknown } | undefined)?.code;
  if (errors.length === 0 || !errors.every((e) => e instanceof GraphQLError && codeOf(e) === 'SERVICE_UNAVAILABLE')) return;
  for (const error of errors) {
    const extensions = { retryAfterSeconds: SERVICE_UNAVAILABLE_RETRY_AFTER_S, ...error.extensions } as Record<string, unknown>;
    // yoga sets the answer's headers from this and leaves it out of the JSON.
    extensions.http = { headers: { 'retry-after': String(extensions.retryAfterSeconds) } };
    (error as { extensions: unknown }).extensions = extensions;
  }
}

/** Gives every error a code and a bounded message, and bounds how many errors an answer lists. */
function shapeErrors({ maxErrors, maxBodyBytes }: Pick<Config['graphql'], 'maxErrors' | 'maxBodyBytes'>): AnyPlugin {
  const shape = <R extends { errors?: ReadonlyArray<GraphQLError> }>(result: R): R => {
    if (!result.errors?.length) return result;
    const kept = result.errors.slice(0, maxErrors);
    for (const error of kept) {
      if (!(error instanceof GraphQLError)) continue;
      const { originalError: _hidden, ...extensions } = error.extensions as Record<string, unknown>;
      const limit = /^Syntax Error: (.*\blimit of \d+.*)$/.exec(error.message);
      if (limit) {
        // armor reports its limits as syntax errors; they are not, and the request is refused whole.
        error.message = limit[1]!;
        extensions.code = 'GRAPHQL_VALIDATION_FAILED';
      } else if (error.message.startsWith('Required CSRF header')) {
        error.message = `A GET or a form-encoded POST must carry the ${CSRF_HEADER} header (any value); a JSON POST needs none.`;
        extensions.code = 'CSRF_HEADER_MISSING';
      } else if (error.message.startsWith('Can only perform a mutation operation from a POST request')) {
        extensions.http = { status: 405, headers: { allow: 'POST' } };
      } else if (extensions.code === 'REQUEST_ENTITY_TOO_LARGE') {
        // The body cap inside yoga (capRequestBodies), said as the other answers say it.
        error.message = `The request body is larger than ${maxBodyBytes} bytes.`;
        extensions.code = 'PAYLOAD_TOO_LARGE';
        // The rest of the body is not read: the connection closes after this answer.
        extensions.http = { status: 413, headers: { connection: 'close' } };
      } else if (extensions.code === 'BAD_REQUEST') {
        // A request that is not GraphQL over HTTP at all (bad JSON, no query) is a 400 whatever the client accepts.
        extensions.http = { status: 400 };
      } else if (typeof extensions.code !== 'string') {
        extensions.code = codeFor(error);
      }
      (error as { extensions: unknown }).extensions = extensions;
      if (error.message.length > MAX_MESSAGE_LENGTH) error.message = `${error.message.slice(0, MAX_MESSAGE_LENGTH)}… (cut)`;
    }
    markUnavailable(kept);
    const left = result.errors.length - kept.length;
    if (left > 0) {
      const last = kept[kept.length - 1]!;
      kept.push(
        new GraphQLError(`…and ${left} more error${left === 1 ? '' : 's'} like these, not listed.`, {
          extensions: { code: (last.extensions as { code?: unknown }).code ?? 'BAD_USER_INPUT', omitted: left },
        }),
      );
    }
    // The same object: yoga keeps facts about the answer (its HTTP status) on it.
    (result as { errors?: ReadonlyArray<GraphQLError> }).errors = kept;
    return result;
  };
  return {
    onResultProcess({ result }) {
      if (Array.isArray(result)) result.forEach(shape);
      else if (!(Symbol.asyncIterator in result)) shape(result);
    },
  };
}
