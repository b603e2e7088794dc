/**
 * The API side of progress pub/sub: ONE subscriber connection per API process, fanned out to any
 * number of open streams. A channel is subscribed while at least one stream listens to it.
 * Works across API replicas because every worker PUBLISHes to Redis, not to a process.
 *
 * Listeners are objects (an open stream), not closures: with thousands of open streams per process
 * every per-stream allocation counts, and a message is parsed once for all listeners of a channel.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import type { ProgressEvent } from './event';
import { progressChannel } from './event';

export interface ProgressListener {
  readonly generationId: string;
  /** Called with every event published for the generation (parsed once, shared: do not mutate). */
  onProgress(event: ProgressEvent): void;
}

interface Channel {
  listeners: Set<ProgressListener>;
  /** Until Redis has acknowledged the SUBSCRIBE (events after it cannot be missed); then null. */
  ready: Promise<unknown> | null;
}

export class ProgressHub {
  private readonly channels = new Map<string, Channel>();
  /** A PING callers of this same turn share (see flush). */
  private ping: Promise<void> | null = null;

  constructor(
    private readonly subscriber: Redis,
    private readonly prefix: string,
    private readonly log: Logger,
  ) {
    subscriber.on('message', (channel: string, message: string) => this.dispatch(channel, message));
  }

  get channelCount(): number {
    return this.channels.size;
  }

  /** Open streams (listeners) on all channels: counted when asked (a metrics scrape), not kept. */
  get listenerCount(): number {
    let n = 0;
    for (const channel of this.channels.values()) n += channel.listeners.size;
    return n;
  }

  /**
   * Adds a listener to its generation's channel at once and resolves once the channel is
   * subscribed; rejects if the SUBSCRIBE failed (the listener is then removed again).
   */
  async add(listener: ProgressListener): Promise<void> {
    const name = progressChannel(this.prefix, listener.generationId);
    let channel = this.channels.get(name);
    if (!channel) {
      const created: Channel = { listeners: new Set(), ready: null };
      created.ready = this.subscriber.subscribe(name).then(() => {
        created.ready = null;
      });
      // A failed SUBSCRIBE is reported to whoever awaits `ready`; keep it from being unhandled here.
      created.ready.catch(() => undefined);
      this.channels.set(name, created);
      channel = created;
    }
    channel.listeners.add(listener);
    if (!channel.ready) return;
    try {
      await channel.ready;
    } catch (err) {
      this.remove(listener);
      throw err;
    }
  }

  /** Removes a listener (a no-op when it is not there); the last one out unsubscribes the channel. */
  remove(listener: ProgressListener): void {
    const name = progressChannel(this.prefix, listener.generationId);
    const channel = this.channels.get(name);
    if (!channel || !channel.listeners.delete(listener) || channel.listeners.size > 0) return;
    this.channels.delete(name);
    // Commands on one connection run in order, so a later SUBSCRIBE to the same name still wins.
    this.subscriber.unsubscribe(name).catch((err: unknown) => this.log.warn({ err, name }, 'unsubscribe failed'));
  }

  /**
   * Resolves once every message Redis sent this process before now has been dispatched: Redis
   * answers a PING on the subscriber connection after the messages queued ahead of it. A stream
   * that re-read a newer snapshot waits for this before using it, so that in a busy process the
   * snapshot does not overtake messages still on their way (the stream would skip those states).
   * Never rejects; resolves after `maxWaitMs` at the latest (a lost message is what the re-read is
   * for, so a sick subscriber connection must not hold it back).
   */
  flush(maxWaitMs: number): Promise<void> {
    if (this.subscriber.status !== 'ready') return Promise.resolve();
    if (!this.ping) {
      const ping = this.subscriber.ping().then(
        () => undefined,
        () => undefined,
      );
      this.ping = ping;
      // Shared only by callers of this turn: their reads were answered before the PING is written.
      process.nextTick(() => {
        if (this.ping === ping) this.ping = null;
      });
    }
    const ping = this.ping;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, maxWaitMs);
      void ping.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private dispatch(channelName: string, message: string): void {
    const channel = this.channels.get(channelName);
    if (!channel) return;
    let event: ProgressEvent;
    try {
      event = JSON.parse(message) as ProgressEvent;
    } catch (err) {
      this.log.error({ err, channelName }, 'unreadable progress message');
      return;
    }
    for (const listener of channel.listeners) listener.onProgress(event);
  }
}
