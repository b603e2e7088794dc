/**
 * The job wrapper's verdicts (src/jobs/runner.ts) for the cases a processor cannot tell apart by
 * itself: overtaken by another delivery (done, quietly), a final failure whose recording fails at
 * first (saved with the job, tried until it lands), and a run that ends as a limit fires.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { IllegalTransitionError } from '../../src/generation/lifecycle';
import type { QueuedJob } from '../../src/jobs/consumer';
import { JobError } from '../../src/jobs/errors';
import { createJobHandler, LANDING_TRIES_PER_DELIVERY, type Processor, type RunnerLimits } from '../../src/jobs/runner';
import { createLogger } from '../../src/logger';

const log = createLogger('silent');

function job(opts: { retries?: number; saves?: Array<QueuedJob['options']> } = {}): QueuedJob {
  const j: QueuedJob = { id: randomUUID(), data: { kind: 'generateImage', payload: { generationId: 'g' } }, options: { retries: opts.retries ?? 2, stacktraces: [] } };
  j.saveOptions = async () => {
    opts.saves?.push(structuredClone(j.options));
    return true;
  };
  return j;
}

function handler(processor: Processor<'generateImage'>, limits: RunnerLimits = { timeLimitMs: 10_000, softTimeLimitMs: 9_000 }) {
  return createJobHandler({ generateImage: processor }, limits, log);
}

describe('the job wrapper', () => {
  it('ends a job overtaken by another delivery as done: no retry, no final failure recorded', async () => {
    let finals = 0;
    const h = handler({
      run: async () => {
        throw new IllegalTransitionError('g', 'UPLOADING', 'postProcess');
      },
      onFinalFailure: async () => void finals++,
    });
    expect(await h.handle(job())).toBeUndefined();
    expect(finals).toBe(0);
    expect(h.counters).toMatchObject({ succeeded: 1, failed: 0, retried: 0 });
  });

  it('saves a final failure with the job before recording it, and records it until it lands', async () => {
    const saves: Array<QueuedJob['options']> = [];
    let tries = 0;
    const h = handler({
      run: async () => {
        throw new JobError('SD_BAD_REQUEST', 'refused');
      },
      onFinalFailure: async () => {
        tries++;
        if (tries === 1) throw new Error('the database went away');
      },
    });
    const verdict = await h.handle(job({ saves }));
    expect(verdict).toMatchObject({ end: 'failed', error: { code: 'SD_BAD_REQUEST' } });
    expect(tries).toBe(2);
    expect(saves).toHaveLength(1);
    expect(saves[0]!.finalFailure).toMatchObject({ code: 'SD_BAD_REQUEST', retryable: false });
  });

  it('keeps the work of a run that finished as its hard limit fired', async () => {
    let finals = 0;
    const h = handler(
      {
        // Finishes well after the 20 ms hard limit, without looking at the abort.
        run: () => new Promise((resolve) => setTimeout(resolve, 200)),
        onFinalFailure: async () => void finals++,
      },
      { timeLimitMs: 20, softTimeLimitMs: 10 },
    );
    expect(await h.handle(job())).toBeUndefined();
    expect(finals).toBe(0);
  });
});

describe('a processor that ignores its abort', () => {
  const limits = { timeLimitMs: 40, softTimeLimitMs: 20, abortGraceMs: 40 };

  it('is given up once the grace past the hard limit is over: its final failure is recorded while it still runs', async () => {
    let release!: () => void;
    const recorded: string[] = [];
    const verdict = await handler(
      {
        run: () => new Promise<void>((resolve) => (release = resolve)), // never looks at ctx.signal
        onFinalFailure: async (_ctx, failure) => void recorded.push(failure.code),
      },
      limits,
    ).handle(job({ retries: 3 }));
    expect(verdict).toMatchObject({ end: 'failed', error: { code: 'TIME_LIMIT_EXCEEDED' } });
    expect(recorded).toEqual(['TIME_LIMIT_EXCEEDED']);
    // The work that goes on is handed to the consumer, which keeps the slot until it settles.
    const stillRunning = (verdict as { stillRunning?: Promise<unknown> }).stillRunning;
    expect(stillRunning).toBeInstanceOf(Promise);
    let settled = false;
    void stillRunning!.then(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(settled).toBe(false);
    release();
    await expect.poll(() => settled).toBe(true);
  });

  it('is not given up when it stops within the grace: it fails with the limit, and nothing is left running', async () => {
    const verdict = await handler(
      {
        run: (ctx) =>
          new Promise<void>((_resolve, reject) => ctx.signal.addEventListener('abort', () => setTimeout(() => reject(new Error('stopped')), 5), { once: true })),
        onFinalFailure: async () => {},
      },
      { ...limits, abortGraceMs: 60_000 },
    ).handle(job());
    expect(verdict).toMatchObject({ end: 'failed', error: { code: 'TIME_LIMIT_EXCEEDED' } });
    expect((verdict as { stillRunning?: unknown }).stillRunning).toBeUndefined();
  });
});

describe('recording a final failure that keeps failing', () => {
  const refused = (): Processor<'generateImage'> & { tries: number } => {
    const p = {
      tries: 0,
      run: async () => {
        throw new JobError('SD_BAD_REQUEST', 'refused');
      },
      onFinalFailure: async () => {
        p.tries++;
        throw new Error('the database is still away');
      },
    };
    return p;
  };
  const fast = { timeLimitMs: 10_000, softTimeLimitMs: 9_000, landingDelayMs: () => 1 };

  it(`lets the job go after ${LANDING_TRIES_PER_DELIVERY} tries once its verdict is saved, for a re-delivery to record`, async () => {
    const p = refused();
    const saves: Array<QueuedJob['options']> = [];
    const verdict = await handler(p, fast).handle(job({ saves }));
    expect(verdict).toMatchObject({ end: 'abandon', error: { code: 'SD_BAD_REQUEST' } });
    expect(p.tries).toBe(LANDING_TRIES_PER_DELIVERY);
    expect(saves[0]!.finalFailure).toMatchObject({ code: 'SD_BAD_REQUEST' });
  });

  it('keeps trying past that while the verdict could not be saved (a re-delivery would run the job again)', async () => {
    let tries = 0;
    const j = job();
    j.saveOptions = async () => false;
    const verdict = await handler(
      {
        run: async () => {
          throw new JobError('SD_BAD_REQUEST', 'refused');
        },
        onFinalFailure: async () => {
          if (++tries <= LANDING_TRIES_PER_DELIVERY + 2) throw new Error('the database is still away');
        },
      },
      fast,
    ).handle(j);
    expect(verdict).toMatchObject({ end: 'failed' });
    expect(tries).toBe(LANDING_TRIES_PER_DELIVERY + 3);
  });

  it('stops at once when the worker stops waiting for its jobs', async () => {
    const p = refused();
    const stopping = new AbortController();
    const j = job();
    j.stopping = stopping.signal;
    // A long wait between tries, cut short by the abort.
    const pending = handler(p, { ...fast, landingDelayMs: () => 600_000 }).handle(j);
    await expect.poll(() => p.tries).toBe(1);
    stopping.abort();
    expect(await pending).toMatchObject({ end: 'abandon' });
    expect(p.tries).toBe(1);
  });
});
