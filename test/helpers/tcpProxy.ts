/**
 * A TCP proxy in front of a server (Postgres, for the fault tests), for outages that start and end
 * on the test's word: `drop()` cuts every open connection and refuses new ones (the listening socket
 * is closed, so a connect gets ECONNREFUSED at once); `hang()` cuts them too but then accepts new
 * connections and never answers on them (a server that is there and silent); `restore()` passes
 * connections through again, on the same port. Processes given `urlThrough(url)` reach the server
 * only through it.
 */
import net from 'node:net';

export interface TcpProxy {
  readonly port: number;
  /** `url` with its host and port replaced by the proxy's. */
  urlThrough(url: string): string;
  /** Connections passed through since the start (both ends open or not). */
  readonly accepted: number;
  /** Cuts every connection and refuses new ones; resolves once the port is closed. */
  drop(): Promise<void>;
  /** Cuts every connection, then accepts new ones and says nothing on them. */
  hang(): Promise<void>;
  /** Accepts connections again, on the same port. */
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const open = new Set<net.Socket>();
  let accepted = 0;
  let server: net.Server | null = null;
  let silent = false;

  const listen = (port: number) =>
    new Promise<net.Server>((resolve, reject) => {
      const s = net.createServer((client) => {
        accepted++;
        if (silent) {
          // Held open, never answered; cut by restore() or close().
          open.add(client);
          client.on('error', () => client.destroy());
          client.on('close', () => open.delete(client));
          return;
        }
        const upstream = net.connect(target.port, target.host);
        open.add(client).add(upstream);
        const end = () => {
          client.destroy();
          upstream.destroy();
          open.delete(client);
          open.delete(upstream);
        };
        for (const socket of [client, upstream]) {
          socket.on('error', end);
          socket.on('close', end);
        }
        client.pipe(upstream);
        upstream.pipe(client);
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => resolve(s));
    });

  const closeServer = async () => {
    const s = server;
    server = null;
    if (!s) return;
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    for (const socket of open) socket.destroy();
    open.clear();
    await closed;
  };

  server = await listen(0);
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    urlThrough(url) {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    get accepted() {
      return accepted;
    },
    drop: closeServer,
    async hang() {
      await closeServer();
      silent = true;
      server = await listen(port);
    },
    async restore() {
      if (silent) await closeServer();
      silent = false;
      server ??= await listen(port);
    },
    close: closeServer,
  };
}
