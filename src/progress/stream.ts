/**
 * One client's progress stream, keeping the promises of the contract:
 * - subscribe to the channel FIRST (awaiting Redis' acknowledgement), THEN read the current state, so
 *   nothing published in between is lost; the first event is always the current state;
 * - events leave in `seq` order without duplicates (older or equal seq is dropped), and `progress`
 *   never goes below what this stream already sent;
 * - the snapshot is re-read every `resyncMs`, so a lost pub/sub message (Bee-Queue#189 shows they
 *   happen) cannot leave a stream without its terminal state;
 * - the stream completes right after a terminal state.
 * Built on a Repeater rather than an async generator: a generator awaiting a pub/sub iterator can
 * deadlock on return() (graphql-yoga pitfall), a Repeater's stop() always runs the cleanup.
 */
import { Repeater } from 'graphql-yoga';
import { isTerminal } from '../generation/status';
import type { ProgressEvent } from './event';
import type { ProgressHub } from './hub';

export interface ProgressStreamSource {
  hub: ProgressHub;
  /** The current state: the Redis snapshot, else the Postgres row. */
  readCurrent(): Promise<ProgressEvent | null>;
  /** Called on each tick while the latest state is QUEUED (publishes the queue position). */
  onQueuedTick?(latest: ProgressEvent): Promise<void>;
  resyncMs: number;
  queuedTickMs: number;
  onError(err: unknown): void;
}

export function progressStream(generationId: string, source: ProgressStreamSource): Repeater<ProgressEvent> {
  return new Repeater<ProgressEvent>(async (push, stop) => {
    let last = null as ProgressEvent | null;
    let finished = false;

    const emit = (event: ProgressEvent | null) => {
      if (!event || finished) return;
      if (last && event.seq <= last.seq) return;
      const out = last && event.progress < last.progress ? { ...event, progress: last.progress } : event;
      last = out;
      void push(out);
      if (isTerminal(out.status)) {
        finished = true;
        stop();
      }
    };

    const unlisten = await source.hub.listen(generationId, emit);
    const timers: NodeJS.Timeout[] = [];
    try {
      emit(await source.readCurrent());
      if (!finished) {
        const resync = () => source.readCurrent().then(emit, source.onError);
        timers.push(setInterval(resync, source.resyncMs));
        if (source.onQueuedTick) {
          const tick = source.onQueuedTick;
          timers.push(
            setInterval(() => {
              if (last?.status === 'QUEUED') tick(last).catch(source.onError);
            }, source.queuedTickMs),
          );
          if (last?.status === 'QUEUED') await tick(last).catch(source.onError);
        }
      }
      await stop;
    } catch (err) {
      stop(err);
    } finally {
      for (const t of timers) clearInterval(t);
      unlisten();
    }
  });
}
