/**
 * Live generations that lost their job (an API died between the insert and the enqueue, or a job's
 * record is gone) are found by the worker's sweep and finished: run again while attempts remain,
 * else FAILED with the credits back. Young rows and rows with a job are left alone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sweepStrandedGenerations, type StrandedSweep } from '../../src/generation/orphans';
import { failGeneration } from '../../src/generation/outcomes';
import { insertGenerationReservingCredits } from '../../src/db/statements';
import { JobProducer, jobsKey } from '../../src/jobs/queues';
import { createLogger } from '../../src/logger';
import { ProgressPublisher } from '../../src/progress/publisher';
import { startStack, type Stack } from '../helpers/stack';
import { events, expectWellFormedStream, testInput, watch } from './helpers';

const INPUT = testInput('left behind');

describe('stranded generations', () => {
  let stack: Stack;
  let producer: JobProducer;
  let sweep: () => ReturnType<typeof sweepStrandedGenerations>;
  beforeAll(async () => {
    stack = await startStack();
    producer = new JobProducer(stack.config, createLogger('silent'));
    const publisher = new ProgressPublisher(stack.redis, stack.config.redis.prefix, stack.config.progress.expiresS);
    const deps: StrandedSweep = {
      db: stack.tdb.db,
      redis: stack.redis,
      prefix: stack.config.redis.prefix,
      producer,
      maxAttempts: 3,
      minAgeS: stack.config.worker.strandedSweep.minAgeS,
      fail: (id, failure) => failGeneration(stack.tdb.db, publisher, id, failure, { db: stack.tdb.db, producer, log: createLogger('silent') }),
    };
    sweep = () => sweepStrandedGenerations(deps);
  });
  afterAll(async () => {
    await producer?.close();
    await stack?.close();
  });

  /** What a lost job leaves: the row (credits reserved) in `status`, untouched for two minutes. */
  async function stranded(userId: string, status: string, attempts: number) {
    const row = await insertGenerationReservingCredits(stack.tdb.db, { id: crypto.randomUUID(), userId, input: INPUT });
    await stack.tdb.db('generations')
      .where({ id: row!.id })
      .update({ status, attempts, updated_at: stack.tdb.db.raw("now() - interval '2 minutes'") });
    return row!.id;
  }

  it('a QUEUED row without a job is enqueued by the sweep and runs once; young rows and rows with a job are left alone', async () => {
    const user = await stack.createUser(2);
    const orphan = await stranded(user.userId, 'QUEUED', 0);
    const young = await insertGenerationReservingCredits(stack.tdb.db, { id: crypto.randomUUID(), userId: user.userId, input: INPUT });
    expect(await stack.credits(user.userId)).toBe(0);

    expect(await sweep()).toEqual({ requeued: [orphan], failed: [], discardedStaged: 0 });
    const list = events(await watch(stack.baseUrl, orphan, user.token).done);
    expectWellFormedStream(list, orphan);
    expect(list[list.length - 1]).toMatchObject({ status: 'SUCCEEDED', attempt: 1 });
    expect(await sweep()).toMatchObject({ requeued: [], failed: [] });
    expect((await stack.tdb.db('generations').where({ id: young!.id }).first()).status).toBe('QUEUED');
    expect(await stack.credits(user.userId)).toBe(0);
  });

  it('a STARTED generation whose job record is gone runs again while it has attempts, else ends FAILED with its credits back once', async () => {
    const user = await stack.createUser(3);
    const again = await stranded(user.userId, 'STARTED', 1);
    const spent = await stranded(user.userId, 'GENERATING', 3);
    // A live job of its own: left to it (and to the stall check if its worker died).
    const held = await stranded(user.userId, 'STARTED', 1);
    await stack.redis.hset(jobsKey(stack.config, 'high_priority'), held, JSON.stringify({ data: { kind: 'generateImage', payload: { generationId: held } }, options: {} }));

    const result = await sweep();
    expect(result).toMatchObject({ requeued: [again], failed: [spent] });
    const ran = events(await watch(stack.baseUrl, again, user.token).done);
    expect(ran.at(-1)).toMatchObject({ status: 'SUCCEEDED', attempt: 2 });
    const gaveUp = events(await watch(stack.baseUrl, spent, user.token).done);
    expect(gaveUp.at(-1)).toMatchObject({ status: 'FAILED', error: { code: 'TOO_MANY_ATTEMPTS', retryable: false } });
    // Three reserved: one spent (succeeded), one still held (live), one given back.
    expect(await stack.credits(user.userId)).toBe(1);
    expect((await stack.tdb.db('generations').where({ id: held }).first()).status).toBe('STARTED');
    await stack.redis.hdel(jobsKey(stack.config, 'high_priority'), held);
  });

  it('drops the staged images of a generation that ended without storing them, and keeps those of a live upload', async () => {
    const user = await stack.createUser(2);
    const db = stack.tdb.db;
    const stage = (id: string) =>
      db('staged_images').insert({ generation_id: id, index: 0, webp: Buffer.from('w'), thumbnail: Buffer.from('t'), width: 64, height: 64, blurhash: 'x', seed: 1, sha256: 'h' });
    // A cancel that committed while the staging transaction was still running leaves these behind.
    const cancelled = await stranded(user.userId, 'CANCELLED', 1);
    const uploading = await stranded(user.userId, 'UPLOADING', 1);
    await stack.redis.hset(jobsKey(stack.config, 'normal_priority'), `uploadToCloud:${uploading}`, '{}');
    await stage(cancelled);
    await stage(uploading);
    expect(await sweep()).toMatchObject({ discardedStaged: 1 });
    expect(await db('staged_images').where({ generation_id: cancelled }).count('* as n').first()).toMatchObject({ n: 0 });
    expect(await db('staged_images').where({ generation_id: uploading }).count('* as n').first()).toMatchObject({ n: 1 });
    await stack.redis.hdel(jobsKey(stack.config, 'normal_priority'), `uploadToCloud:${uploading}`);
    await db('staged_images').where({ generation_id: uploading }).delete();
  });
});
