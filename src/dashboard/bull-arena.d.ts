/** The part of bull-arena 4.6.0 this service uses (the package ships no types). */
declare module 'bull-arena' {
  import type { Express } from 'express';

  export interface ArenaQueue {
    type: 'bee';
    name: string;
    hostId: string;
    prefix: string;
    redis: { url: string };
  }

  export interface ArenaConfig {
    queues: ArenaQueue[];
    /** The Bee-Queue class arena builds its queues with. */
    Bee: unknown;
  }

  export interface ArenaListenOptions {
    basePath: string;
    disableListen: true;
    /** false: the pages load their scripts and styles from arena itself, not from a CDN. */
    useCdn: boolean;
  }

  function Arena(config: ArenaConfig, listenOptions: ArenaListenOptions): Express;
  export default Arena;
}
