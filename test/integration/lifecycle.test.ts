/**
 * Every transition of a generation's life (src/generation/lifecycle.ts) from every status, against
 * Postgres through the functions that write them: an allowed one is written, one from a final status
 * is a quiet no-op (null), and any other is refused with IllegalTransitionError and nothing written.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserWithToken } from '../../src/auth/tokens';
import { completeGeneration, stageImagesForUpload } from '../../src/generation/images';
import {
  canTransition,
  GENERATION_STATUSES,
  IllegalTransitionError,
  isTerminal,
  TRANSITIONS,
  type GenerationStatus,
  type Transition,
} from '../../src/generation/lifecycle';
import { endGenerationWithRefund, findGeneration, transitionGeneration, type GenerationRow } from '../../src/generation/repository';
import { createTestDatabase, type TestDatabase } from '../helpers/database';
import { testInput } from './helpers';

const INPUT = testInput('a transition', { steps: 2, seed: 1 });
const FAILURE = { code: 'TEST', message: 'a test failure', retryable: false };
const IMAGE = { index: 0, webp: Buffer.from('w'), thumbnail: Buffer.from('t'), width: 64, height: 64, blurhash: 'L00000fQfQfQfQfQfQfQfQfQfQfQ', seed: 1, sha256: 'x' };

/** Takes `transition` with the function the code uses for it. */
function take(tdb: TestDatabase, id: string, transition: Transition): Promise<GenerationRow | boolean | null> {
  switch (transition) {
    case 'stage':
      return stageImagesForUpload(tdb.db, id, [IMAGE]);
    case 'succeed':
      return completeGeneration(tdb.db, id, [{ ...IMAGE, storageKey: 'k', thumbnailKey: 'tk', bytes: 1 }]);
    case 'fail':
    case 'cancel':
      return endGenerationWithRefund(tdb.db, id, transition, FAILURE);
    case 'expire':
      // Its deadline has passed: only the status decides.
      return tdb.db('generations').where({ id }).update({ start_deadline_at: tdb.db.raw("now() - interval '1 second'") })
        .then(() => endGenerationWithRefund(tdb.db, id, 'expire', FAILURE));
    default:
      return transitionGeneration(tdb.db, id, transition);
  }
}

const CASES = (Object.keys(TRANSITIONS) as Transition[]).flatMap((t) => GENERATION_STATUSES.map((from) => [t, from] as [Transition, GenerationStatus]));

describe('the generation state machine', () => {
  let tdb: TestDatabase;
  let userId: string;
  beforeAll(async () => {
    tdb = await createTestDatabase();
    ({ userId } = await createUserWithToken(tdb.db, { email: 'sm@example.com', credits: 0 }));
  });
  afterAll(async () => tdb?.drop());

  it('knows every status and never leaves a final one', () => {
    for (const t of Object.values(TRANSITIONS)) {
      for (const from of t.from) expect(isTerminal(from), `${from} → ${t.to}`).toBe(false);
    }
    // Every live status can reach an end.
    for (const s of GENERATION_STATUSES.filter((x) => !isTerminal(x))) {
      expect(canTransition(s, 'fail') && canTransition(s, 'cancel'), s).toBe(true);
    }
  });

  it.each(CASES)('%s from %s', async (transition, from) => {
    const id = randomUUID();
    await tdb.db('generations').insert({ id, user_id: userId, status: from, input: JSON.stringify(INPUT), credits_reserved: 1 });
    const before = await findGeneration(tdb.db, id);
    const result = take(tdb, id, transition);
    const after = async () => findGeneration(tdb.db, id);
    if (canTransition(from, transition)) {
      expect(await result).toBeTruthy();
      expect((await after())?.status).toBe(TRANSITIONS[transition].to);
    } else if (isTerminal(from) || transition === 'expire') {
      // An end (like fail and cancel where they do not apply) writes nothing and answers null; expire
      // is not an error where a worker started the generation first (it raced the start).
      expect(await result).toBeFalsy();
      expect({ ...(await after()), start_deadline_at: null }).toEqual({ ...before, start_deadline_at: null });
    } else {
      await expect(result).rejects.toThrow(IllegalTransitionError);
      expect(await after()).toEqual(before);
    }
  });

  /** A generation in `status`, for the flows below. */
  async function at(status: GenerationStatus): Promise<string> {
    const id = randomUUID();
    await tdb.db('generations').insert({ id, user_id: userId, status, input: JSON.stringify(INPUT), credits_reserved: 1 });
    return id;
  }
  const status = async (id: string) => (await findGeneration(tdb.db, id))?.status;

  it('lets the flows the workers really take through', async () => {
    // The happy path.
    const happy = await at('QUEUED');
    for (const t of ['start', 'generate', 'postProcess', 'stage', 'succeed'] as Transition[]) expect(await take(tdb, happy, t), t).toBeTruthy();
    expect(await status(happy)).toBe('SUCCEEDED');
    // A worker died mid-sampling: the re-delivered job starts a new attempt.
    const redelivered = await at('GENERATING');
    expect(await take(tdb, redelivered, 'start')).toBeTruthy();
    // Queuing the upload failed after staging (RETRYING), but the upload it queued ran first.
    const uploadFirst = await at('UPLOADING');
    expect(await take(tdb, uploadFirst, 'retry')).toBeTruthy();
    expect(await take(tdb, uploadFirst, 'succeed')).toBeTruthy();
    // The retry that follows meets SUCCEEDED: a quiet no-op.
    expect(await take(tdb, uploadFirst, 'start')).toBeNull();
    // A second copy of a job that another delivery has taken past it is refused (and stops quietly).
    const overtaken = await at('UPLOADING');
    await expect(take(tdb, overtaken, 'postProcess')).rejects.toThrow(IllegalTransitionError);
    expect(await status(overtaken)).toBe('UPLOADING');
  });

  it('expires only a generation that never started, once its deadline has passed by the database clock', async () => {
    const withDeadline = async (status: GenerationStatus, deadline: string, started: boolean) => {
      const id = await at(status);
      await tdb.db('generations').where({ id }).update({ start_deadline_at: tdb.db.raw(deadline), started_at: started ? tdb.db.fn.now() : null });
      return id;
    };
    const notYet = await withDeadline('QUEUED', "now() + interval '1 hour'", false);
    const none = await at('QUEUED');
    const retriedAfterStart = await withDeadline('RETRYING', "now() - interval '1 second'", true);
    for (const id of [notYet, none, retriedAfterStart]) {
      expect(await endGenerationWithRefund(tdb.db, id, 'expire', FAILURE)).toBeNull();
    }
    expect([await status(notYet), await status(none), await status(retriedAfterStart)]).toEqual(['QUEUED', 'QUEUED', 'RETRYING']);
    const overdue = await withDeadline('QUEUED', "now() - interval '1 second'", false);
    expect(await endGenerationWithRefund(tdb.db, overdue, 'expire', FAILURE)).toMatchObject({ status: 'CANCELLED', error_code: 'TEST' });
    // A second expire (another process's sweep, the worker) changes nothing.
    expect(await endGenerationWithRefund(tdb.db, overdue, 'expire', FAILURE)).toBeNull();
  });
});
