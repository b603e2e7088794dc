/**
 * One retry decision: a job judged failed for good is never run again, even when recording its end
 * (the refund and the final state) fails at first. Postgres refuses the refund once here, through a
 * trigger (a real error from the real server); the worker keeps trying to record the end until it
 * lands, and the GPU is not called a second time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WAIT_MS } from '../helpers/budgets';
import { startStack, type Stack } from '../helpers/stack';
import { storedState } from '../helpers/storedJobs';
import { until } from '../helpers/wait';
import { events, expectWellFormedStream, generate, watch } from './helpers';

describe('a final failure whose recording fails at first', () => {
  let stack: Stack;
  beforeAll(async () => {
    // Retries left and no delay: a job wrongly retried would call SD again at once.
    stack = await startStack({ env: { TASK_MAX_RETRIES: '3', TASK_RETRY_DELAY_S: '0' } });
  });
  afterAll(async () => stack?.close());

  it('ends FAILED with the credits back exactly once, and calls SD once', async () => {
    const db = stack.tdb.db;
    // The first refund of any generation fails (a sequence is not rolled back with the statement).
    await db.raw('CREATE SEQUENCE refund_fault');
    await db.raw(`CREATE FUNCTION refund_fault() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF nextval('refund_fault') = 1 THEN RAISE EXCEPTION 'injected: the database went away for a moment'; END IF;
        RETURN NEW;
      END $$`);
    await db.raw(`CREATE TRIGGER refund_fault BEFORE UPDATE OF refunded_at ON generations FOR EACH ROW
      WHEN (OLD.refunded_at IS NULL AND NEW.refunded_at IS NOT NULL) EXECUTE FUNCTION refund_fault()`);
    try {
      const user = await stack.createUser(2);
      // SD refuses the request: a permanent failure, no retry.
      stack.sim.failNext('bad-request');
      const callsBefore = stack.sim.stats.txt2imgCalls;
      const { id } = await generate(stack, user.token, { steps: 3, width: 64, height: 64 });
      const list = events(await watch(stack.baseUrl, id, user.token).done);
      expectWellFormedStream(list, id);
      expect(list.at(-1)).toMatchObject({ status: 'FAILED', error: { code: 'SD_BAD_REQUEST', retryable: false } });
      expect(list.map((e) => e.status)).not.toContain('RETRYING');
      // The refund did fail once, and then landed.
      expect(Number((await db.raw<{ rows: Array<{ last_value: string }> }>('SELECT last_value FROM refund_fault')).rows[0]!.last_value)).toBe(2);
      expect(await stack.credits(user.userId)).toBe(2);
      expect(stack.sim.stats.txt2imgCalls - callsBefore).toBe(1);
      const row = await db('generations').where({ id }).first();
      expect(row).toMatchObject({ status: 'FAILED', attempts: 1 });
      expect(row.refunded_at).not.toBeNull();
      // Nothing left in the queue: the job ended as failed, once (kept for the dashboard as failed).
      await until(async () => (await storedState(stack, 'high_priority', id)) === 'failed', 'the job to be kept as failed');
      expect(await stack.redis.hlen(`${stack.config.redis.prefix}:high_priority:jobs`)).toBe(1);
    } finally {
      await db.raw('DROP TRIGGER refund_fault ON generations');
      await db.raw('DROP FUNCTION refund_fault()');
      await db.raw('DROP SEQUENCE refund_fault');
    }
  });
});

describe('a job re-delivered after its worker died while recording its final failure', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(async () => stack?.close());

  it('only records the failure: no new attempt, no SD call, the credits back once', async () => {
    const user = await stack.createUser(1);
    const { id } = await generate(stack, user.token, { steps: 3, width: 64, height: 64 });
    // What the dead worker left: the generation started, its job back in the queue with the verdict.
    await stack.tdb.db('generations').where({ id }).update({ status: 'STARTED', attempts: 1 });
    const key = `${stack.config.redis.prefix}:high_priority:jobs`;
    const record = JSON.parse((await stack.redis.hget(key, id))!) as { options: Record<string, unknown> };
    record.options.finalFailure = { code: 'SD_BAD_REQUEST', message: 'Stable Diffusion refused the request.', retryable: false };
    await stack.redis.hset(key, id, JSON.stringify(record));

    await stack.startWorker();
    const list = events(await watch(stack.baseUrl, id, user.token).done);
    expect(list.at(-1)).toMatchObject({ status: 'FAILED', attempt: 1, error: { code: 'SD_BAD_REQUEST' } });
    expect(stack.sim.stats.txt2imgCalls).toBe(0);
    expect(await stack.credits(user.userId)).toBe(1);
    // The job ends (kept as failed) when the consumer finishes it, just after the handler published
    // FAILED: wait for that state rather than race it (with a worker consuming more queues it can lag).
    await until(async () => (await storedState(stack, 'high_priority', id)) === 'failed', 'the job to be kept as failed', WAIT_MS);
    expect(await stack.redis.hlen(key)).toBe(1);
  });
});
