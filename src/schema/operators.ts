import type { QueueStats } from '../jobs/queueStats';
import type { SdServerStatus, WorkerAnnouncement } from '../jobs/presence';
import { requireUser, type Builder } from './builder';

/** Admins' view of the queues and the workers: `queues` and `workers`; FORBIDDEN for anyone else. */
export function addOperatorTypes(builder: Builder) {
  const SdServerState = builder.enumType('SdServerState', {
    description: "UP: the SD server answered the worker's last check; DOWN: it did not (see error).",
    values: { UP: { value: 'up' }, DOWN: { value: 'down' } } as const,
  });
  const SdServer = builder.objectRef<SdServerStatus>('SdServer').implement({
    description: 'A Stable Diffusion server a worker generates with, as that worker last saw it.',
    fields: (t) => ({
      url: t.exposeString('url', { description: 'Without credentials.' }),
      state: t.field({ type: SdServerState, resolve: (s) => s.state }),
      lastCheckedAt: t.field({ type: 'DateTime', resolve: (s) => new Date(s.lastCheckedAt) }),
      error: t.exposeString('error', { nullable: true, description: 'Why it counts as down.' }),
      busy: t.exposeBoolean('busy', { description: 'The worker ran a job on it at its last heartbeat (it holds its lease).' }),
    }),
  });
  const Queue = builder.objectRef<QueueStats>('Queue').implement({
    description: 'A job queue, as Redis has it now. Succeeded and failed count every worker\'s jobs.',
    fields: (t) => ({
      name: t.exposeString('name'),
      waiting: t.exposeInt('waiting'),
      active: t.exposeInt('active'),
      delayed: t.exposeInt('delayed', { description: 'Retries waiting for their time.' }),
      succeeded: t.exposeInt('succeeded', { description: 'Jobs that succeeded, since the counts began.' }),
      failed: t.exposeInt('failed', { description: 'Jobs that failed for good (a try that is retried is not one), since the counts began.' }),
      succeededLastHour: t.exposeInt('succeededLastHour', { description: 'In the last 60 minutes.' }),
      failedLastHour: t.exposeInt('failedLastHour', { description: 'In the last 60 minutes.' }),
      oldestWaitingSeconds: t.exposeFloat('oldestWaitingSeconds', {
        description: 'Seconds since the job next in line was first enqueued (a retry counts from its first enqueue); 0 with nothing waiting.',
      }),
    }),
  });
  const Worker = builder.objectRef<WorkerAnnouncement>('Worker').implement({
    description: 'A worker process that is alive: its heartbeat in Redis has not expired.',
    fields: (t) => ({
      id: t.exposeID('id', { description: 'host:pid:random.' }),
      host: t.exposeString('host'),
      queues: t.exposeStringList('queues'),
      slots: t.exposeInt('slots', { description: 'Jobs it may run at once, all its queues together.' }),
      busy: t.exposeInt('busy', { description: 'Jobs it ran at its last heartbeat.' }),
      startedAt: t.field({ type: 'DateTime', resolve: (w) => new Date(w.startedAt) }),
      lastSeenAt: t.field({ type: 'DateTime', resolve: (w) => new Date(w.lastSeenAt) }),
      sdServer: t.field({
        type: SdServer,
        nullable: true,
        description: 'The first of its SD servers (see sdServers); null for a worker that does not generate.',
        resolve: (w) => w.sdServer,
      }),
      sdServers: t.field({
        type: [SdServer],
        description: 'Every SD server it generates with (APP_SD_API_URL may list several), in its list\'s order; empty for a worker that does not generate.',
        resolve: (w) => w.sdServers,
      }),
    }),
  });

  builder.queryField('queues', (t) =>
    t.field({
      type: [Queue],
      description: 'Admins only: every job queue.',
      resolve: (_r, _a, ctx) => ctx.operators.queues(requireUser(ctx)),
    }),
  );
  builder.queryField('workers', (t) =>
    t.field({
      type: [Worker],
      description: 'Admins only: the workers alive now, the longest running first.',
      resolve: (_r, _a, ctx) => ctx.operators.workers(requireUser(ctx)),
    }),
  );
}
