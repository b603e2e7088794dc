/**
 * The API side of progress pub/sub: ONE subscriber connection per API process, fanned out to any
 * number of open streams. A channel is subscribed while at least one stream listens to it.
 * Works across API replicas because every worker PUBLISHes to Redis, not to a process.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import type { ProgressEvent } from './event';
import { progressChannel } from './event';

type Listener = (event: ProgressEvent) => void;

interface Channel {
  listeners: Set<Listener>;
  /** Resolves once Redis has acknowledged the SUBSCRIBE: events after it cannot be missed. */
  ready: Promise<unknown>;
}

export class ProgressHub {
  private readonly channels = new Map<string, Channel>();

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

  /** Listens to one generation's events; resolves, once subscribed, to the function that stops listening. */
  async listen(generationId: string, listener: Listener): Promise<() => void> {
    const name = progressChannel(this.prefix, generationId);
    let channel = this.channels.get(name);
    if (!channel) {
      channel = { listeners: new Set(), ready: this.subscriber.subscribe(name) };
      this.channels.set(name, channel);
      // A failed SUBSCRIBE is reported to whoever awaits `ready`; keep it from being unhandled here.
      channel.ready.catch(() => undefined);
    }
    channel.listeners.add(listener);
    const entry = channel;
    const stop = () => {
      if (!entry.listeners.delete(listener) || entry.listeners.size > 0) return;
      if (this.channels.get(name) === entry) this.channels.delete(name);
      // Commands on one connection run in order, so a later SUBSCRIBE to the same name still wins.
      this.subscriber.unsubscribe(name).catch((err: unknown) => this.log.warn({ err, name }, 'unsubscribe failed'));
    };
    try {
      await entry.ready;
    } catch (err) {
      stop();
      throw err;
    }
    return stop;
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
    for (const listener of channel.listeners) listener(event);
  }
}
