/**
 * The dashboard's process, started by the API (./arenaProcess.ts) with an IPC channel: it receives
 * its settings as the first message, serves arena on a Unix socket in a private folder, says
 * `ready`, and ends when the API ends it or goes away. Whatever arena does wrong (a rejected
 * promise, an exception in a callback, a blocked event loop) ends or stalls this process only.
 */
import http from 'node:http';
import { createLogger } from '../logger';
import { createArenaApp, type ArenaSettings } from './arenaApp';

export interface ArenaProcessSettings extends ArenaSettings {
  socketPath: string;
  logLevel: string;
}

process.once('message', (message: ArenaProcessSettings) => {
  const log = createLogger(message.logLevel, 'dashboard');
  const arena = createArenaApp(message, log);
  const server = http.createServer(arena.app);
  server.listen(message.socketPath, () => process.send?.({ ready: true }));
  const stop = () => {
    server.close();
    server.closeAllConnections();
    void arena.close().finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  // The API is gone: so is the only way in.
  process.once('disconnect', stop);
});
