/**
 * Private redis-servers on ports of the test's own, for tests that stop Redis and start it again
 * (the shared one must stay up for every other test file): a plain one (nothing on disk), one with
 * the append-only file on (what it acknowledged survives a kill and a restart), a replica of
 * another, and sentinels watching a primary.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PROCESS_START_MS } from './budgets';

export interface RedisServerOptions {
  /** Keep an append-only file in this folder, written before each write is acknowledged (fsync always); a restart on the same folder reloads it. */
  appendOnlyDir?: string;
  /** Start as a replica of the server on this loopback port; resolves once its first sync is done. */
  replicaOf?: number;
}

/**
 * Spawns `redis-server args` and resolves once its log has shown `ready`; rejects with the log if it
 * exits first or has not within PROCESS_START_MS (and kills it).
 */
function spawnRedis(args: string[], ready: RegExp): Promise<ChildProcess> {
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`redis-server ${args.join(' ')} was not ready within ${PROCESS_START_MS} ms: ${out}`));
    }, PROCESS_START_MS);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server ${args.join(' ')} exited (${code}): ${out}`));
    });
  });
}

/** Starts redis-server on `port` (nothing kept on disk unless asked); resolves once it accepts connections. */
export function startRedis(port: number, opts: RedisServerOptions = {}): Promise<ChildProcess> {
  // Replication streams its snapshot over the socket, at once, and the replica loads it from there:
  // nothing is written to disk but the append-only file asked for.
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0', '--repl-diskless-load', 'on-empty-db'];
  if (opts.appendOnlyDir) args.push('--dir', opts.appendOnlyDir, '--appendonly', 'yes', '--appendfsync', 'always');
  else args.push('--dir', os.tmpdir(), '--appendonly', 'no');
  if (opts.replicaOf === undefined) return spawnRedis(args, /Ready to accept connections/);
  args.push('--replicaof', '127.0.0.1', String(opts.replicaOf));
  return spawnRedis(args, /MASTER <-> REPLICA sync: Finished with success/);
}

export interface SentinelOptions {
  /** The primary's name (REDIS_SENTINEL_NAME). */
  name: string;
  /** Loopback port of the primary to watch. */
  primaryPort: number;
  /** Sentinels that must agree the primary is down. */
  quorum: number;
  /** No answer for this long: the primary is down (the failover starts). */
  downAfterMs: number;
  /** A folder for the sentinel's configuration file, which it rewrites as it learns. */
  dir: string;
}

/** Starts a sentinel on `port` (redis-server --sentinel); resolves once it watches the primary. */
export async function startSentinel(port: number, opts: SentinelOptions): Promise<ChildProcess> {
  const file = path.join(opts.dir, `sentinel-${port}.conf`);
  await writeFile(
    file,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${opts.dir}`,
      `sentinel monitor ${opts.name} 127.0.0.1 ${opts.primaryPort} ${opts.quorum}`,
      `sentinel down-after-milliseconds ${opts.name} ${opts.downAfterMs}`,
      `sentinel failover-timeout ${opts.name} ${Math.max(3000, opts.downAfterMs * 3)}`,
      `sentinel parallel-syncs ${opts.name} 1`,
      '',
    ].join('\n'),
  );
  return spawnRedis([file, '--sentinel'], /\+monitor master/);
}

/** Kills it at once (an outage, not a shutdown); resolves when it has exited. */
export const stopRedis = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
