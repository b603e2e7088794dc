/**
 * An API process that dies between inserting a generation (credits reserved) and enqueuing its job
 * leaves a QUEUED row with no job. Workers find such rows and enqueue them; nothing is lost.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requeueOrphanedGenerations } from '../../src/generation/orphans';
import { insertGenerationReservingCredits } from '../../src/generation/repository';
import { JobProducer, jobsKey } from '../../src/jobs/queues';
import { createLogger } from '../../src/logger';
import { startStack, type Stack } from '../helpers/stack';
import { events, expectWellFormedStream, watch } from './helpers';

describe('orphaned generations', () => {
  let stack: Stack;
  let producer: JobProducer;
  beforeAll(async () => {
    stack = await startStack();
    producer = new JobProducer(stack.config, createLogger('silent'));
  });
  afterAll(async () => {
    await producer?.close();
    await stack?.close();
  });

  it('a QUEUED row without a job is enqueued by the sweep and runs once; young rows and rows with a job are left alone', async () => {
    const user = await stack.createUser(2);
    const input = { prompt: 'left behind', negativePrompt: '', characterName: null, width: 64, height: 64, steps: 3, cfgScale: 7, sampler: 'Euler a', seed: 5, batchSize: 1 };
    // What a crashed API leaves: the row and the reservation, no job.
    const orphan = await insertGenerationReservingCredits(stack.tdb.db, { id: crypto.randomUUID(), userId: user.userId, input });
    const young = await insertGenerationReservingCredits(stack.tdb.db, { id: crypto.randomUUID(), userId: user.userId, input });
    expect(orphan && young).toBeTruthy();
    await stack.tdb.db('generations').where({ id: orphan!.id }).update({ created_at: stack.tdb.db.raw("now() - interval '2 minutes'") });
    expect(await stack.credits(user.userId)).toBe(0);

    const key = jobsKey(stack.config, 'high_priority');
    const requeued = await requeueOrphanedGenerations(stack.tdb.db, stack.redis, key, producer);
    expect(requeued).toEqual([orphan!.id]);

    const list = events(await watch(stack.baseUrl, orphan!.id, user.token).done);
    expectWellFormedStream(list, orphan!.id);
    expect(list[list.length - 1]).toMatchObject({ status: 'SUCCEEDED', attempt: 1 });
    expect(await requeueOrphanedGenerations(stack.tdb.db, stack.redis, key, producer)).toEqual([]);
    expect((await stack.tdb.db('generations').where({ id: young!.id }).first()).status).toBe('QUEUED');
    expect(await stack.credits(user.userId)).toBe(0);
  });
});
