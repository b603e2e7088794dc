/**
 * Start deadlines: a generation asked with startDeadlineSeconds that has not started by then is
 * ended CANCELLED with DEADLINE_EXCEEDED and its credits back, without reaching the GPU.
 *
 * Two things end such a generation, and they may race (with each other, with a worker's start and
 * with a cancel): the worker that takes its job checks before it starts it (workers/processors/
 * generateImage.ts), and every API process sweeps the overdue QUEUED rows now and then, so it ends
 * on time even with no worker running or every slot busy. Each end is one conditional statement
 * (the `expire` transition: QUEUED, deadline passed, not refunded), so exactly one of them writes it,
 * refunds it and tells its watchers; the others change nothing. The sweep looks at QUEUED rows only:
 * a generation whose first try failed before it started (RETRYING) has a worker that checks again
 * when it retries it.
 */
import type { Knex } from 'knex';
import type { CreditMeter } from '../credits/meter';
import type { Logger } from '../logger';
import type { JobProducer } from '../jobs/queues';
import type { ProgressPublisher } from '../progress/publisher';
import { queueWebhook } from '../webhooks/events';
import { findOverdueGenerationIds } from '../db/statements';
import { progressFromRow } from './progressOf';
import { endGenerationWithRefund, type GenerationRow } from './repository';

export const DEADLINE_EXCEEDED = {
  code: 'DEADLINE_EXCEEDED',
  message: 'The generation did not start within its startDeadlineSeconds; it was cancelled and its credits returned.',
  // Nothing was wrong with the request: sent again later (a shorter queue), it may well run.
  retryable: true,
} as const;

/** Overdue generations one sweep ends at most; the next sweep takes the rest. */
const SWEEP_LIMIT = 500;

export interface DeadlineDeps {
  db: Knex;
  publisher: ProgressPublisher;
  producer: JobProducer;
  log: Logger;
  credits?: CreditMeter;
}

/**
 * Ends the generation if it never started and is past its start deadline: refunded, its webhook queued and
 * its final state published (progress subscribers get CANCELLED with DEADLINE_EXCEEDED). Returns the
 * ended row, or null when it was not overdue or something else ended or started it first.
 */
export async function expireIfOverdue(deps: DeadlineDeps, id: string): Promise<GenerationRow | null> {
  const ended = await endGenerationWithRefund(deps.db, id, 'expire', DEADLINE_EXCEEDED, deps.credits);
  if (!ended) return null;
  await queueWebhook(deps, id, 'CANCELLED');
  await deps.publisher.publish(await progressFromRow(deps.db, ended));
  return ended;
}

/** Ends every QUEUED generation past its start deadline (up to SWEEP_LIMIT, oldest deadline first); returns their ids. */
export async function sweepOverdueGenerations(deps: DeadlineDeps): Promise<string[]> {
  const ended: string[] = [];
  for (const id of await findOverdueGenerationIds(deps.db, SWEEP_LIMIT)) {
    if (await expireIfOverdue(deps, id)) ended.push(id);
  }
  return ended;
}

/**
 * Runs the sweep every `intervalMs` (START_DEADLINE_SWEEP_MS) until closed; one sweep at a time,
 * and close() waits for the one under way. Any number of processes may run it at once.
 */
export function startDeadlineSweeper(deps: DeadlineDeps, intervalMs: number): { close(): Promise<void> } {
  let running: Promise<void> | null = null;
  const timer = setInterval(() => {
    if (running) return;
    running = sweepOverdueGenerations(deps)
      .then(
        (ended) => {
          if (ended.length > 0) deps.log.info({ generations: ended }, 'generations past their start deadline were cancelled and refunded');
        },
        (err: unknown) => deps.log.warn({ err }, 'start-deadline sweep failed'),
      )
      .finally(() => (running = null));
  }, intervalMs);
  timer.unref();
  return {
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}
