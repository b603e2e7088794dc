import { expect } from 'vitest';
import type { GenerationInput } from '../../src/generation/input';
import type { ProgressSubscription } from '../gql/graphql';
import { gql, subscribe, type GqlResult } from '../helpers/graphql';
import type { Stack } from '../helpers/stack';
import { GenerateDoc, ProgressDoc } from './documents';

export type ProgressEvent = ProgressSubscription['generationProgress'];

export const TERMINAL = ['SUCCEEDED', 'FAILED', 'CANCELLED'];

/** A small, valid generation input for tests that write generations directly. */
export const testInput = (prompt: string, overrides: Partial<GenerationInput> = {}): GenerationInput => ({
  prompt,
  negativePrompt: '',
  characterName: null,
  width: 64,
  height: 64,
  steps: 3,
  cfgScale: 7,
  sampler: 'Euler a',
  seed: 5,
  batchSize: 1,
  ...overrides,
});

/** The statuses a successful generation passes through, in order. */
export const HAPPY_ORDER = ['QUEUED', 'STARTED', 'GENERATING', 'POST_PROCESSING', 'UPLOADING', 'SUCCEEDED'];

export async function generate(stack: Stack, token: string, input: Record<string, unknown> = {}) {
  const res = await gql(stack.baseUrl, GenerateDoc, { input: { prompt: 'a red fox in snow', steps: 20, ...input } }, token);
  expect(res.errors).toBeUndefined();
  const id = res.data?.generateImage.id;
  if (!id) throw new Error(`no id: ${JSON.stringify(res)}`);
  return { id, result: res };
}

export function watch(baseUrl: string, id: string, token: string) {
  return subscribe(baseUrl, ProgressDoc, { id }, token);
}

export function events(results: Array<GqlResult<ProgressSubscription>>): ProgressEvent[] {
  for (const r of results) expect(r.errors, JSON.stringify(r.errors)).toBeUndefined();
  return results.map((r) => {
    const e = r.data?.generationProgress;
    if (!e) throw new Error(`missing payload: ${JSON.stringify(r)}`);
    return e;
  });
}

/** The contract's promises for one stream: seq grows, progress never falls, one terminal state last. */
export function expectWellFormedStream(list: ProgressEvent[], id: string) {
  expect(list.length).toBeGreaterThan(0);
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    expect(e.generationId).toBe(id);
    if (i > 0) {
      expect(e.seq).toBeGreaterThan(list[i - 1]!.seq);
      expect(e.progress).toBeGreaterThanOrEqual(list[i - 1]!.progress);
    }
    expect(e.progress).toBeGreaterThanOrEqual(0);
    expect(e.progress).toBeLessThanOrEqual(1);
  }
  const terminal = list.filter((e) => TERMINAL.includes(e.status));
  expect(terminal).toHaveLength(1);
  expect(TERMINAL).toContain(list[list.length - 1]!.status);
}

/** Statuses with consecutive repeats folded: QUEUED, STARTED, GENERATING, ... */
export const statusPath = (list: ProgressEvent[]) =>
  list.map((e) => e.status).filter((s, i, all) => i === 0 || all[i - 1] !== s);
