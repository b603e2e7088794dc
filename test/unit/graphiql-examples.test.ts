/**
 * The operations GraphiQL opens with are valid against the printed schema, titled as GraphiQL will
 * title them, and carry the token when there is one.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { buildSchema, parse, validate } from 'graphql';
import { describe, expect, it } from 'vitest';
import { graphiqlExamples, graphiqlExampleTabs } from '../../src/api/graphiqlExamples';

const schema = buildSchema(readFileSync(path.resolve(import.meta.dirname, '../../schema.graphql'), 'utf8'));

/** GraphiQL 4.5's tab title: the operation named on the first line that is not a comment. */
function graphiqlTitle(query: string): string | null {
  return /^(?!#).*(query|subscription|mutation)\s+([a-zA-Z0-9_]+)/m.exec(query)?.[2] ?? null;
}

describe('graphiqlExamples', () => {
  it.each(graphiqlExampleTabs('sdk_x'))('$title is valid against schema.graphql and titled $title', (tab) => {
    expect(validate(schema, parse(tab.query))).toEqual([]);
    expect(graphiqlTitle(tab.query)).toBe(tab.title);
    expect(tab.query.split('\n')[0]).toMatch(/^# /);
    if (tab.variables) expect(JSON.parse(tab.variables)).toEqual({ id: 'PASTE-THE-ID-HERE' });
  });

  it('opens Generate, Watch (without the preview data URI), Me and Stop', () => {
    const tabs = graphiqlExampleTabs(null);
    expect(tabs.map((t) => t.title)).toEqual(['Generate', 'Watch', 'Me', 'Stop']);
    expect(tabs[1]?.query).not.toMatch(/\bpreview\b/);
    expect(tabs.map((t) => t.variables !== null)).toEqual([false, true, false, true]);
  });

  it('puts the first tab in the editor and the token in the headers', () => {
    const opts = graphiqlExamples('sdk_token');
    expect(opts.query).toBe(graphiqlExampleTabs('sdk_token')[0]?.query);
    expect(JSON.parse(opts.headers ?? '')).toEqual({ Authorization: 'Bearer sdk_token' });
    expect(opts.defaultTabs?.map((t) => t.query)).toEqual(graphiqlExampleTabs('sdk_token').map((t) => t.query));
  });

  it('without a token, says where one goes and sets no headers', () => {
    const opts = graphiqlExamples(null);
    expect(opts.headers).toBeUndefined();
    expect(opts.query).toMatch(/Needs a token/);
  });
});

describe("the README's GraphQL examples", () => {
  const readme = readFileSync(path.resolve(import.meta.dirname, '../../README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```graphql\n([\s\S]*?)```/g)].map((m) => m[1]!);

  it('are valid against schema.graphql, and the tabs run what the README shows', () => {
    expect(blocks.length).toBeGreaterThan(0);
    for (const block of blocks) expect(validate(schema, parse(block)), block).toEqual([]);
    // The Watch, Me and Stop tabs are the README's operations to the letter (Generate is its short form).
    const readmeOps = blocks.join('\n');
    for (const tab of graphiqlExampleTabs(null).slice(1)) {
      const operation = tab.query.split('\n').filter((l) => !l.startsWith('#')).join('\n').trim();
      expect(readmeOps, tab.title).toContain(operation);
    }
  });
});
