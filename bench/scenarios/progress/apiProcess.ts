/**
 * The bench side of an API child (apiChild.ts): starts it against a scratch database and Redis
 * prefix and knows how to ask it for memory, CPU and open connections.
 */
import { randomBytes } from 'node:crypto';
import type { BenchChild } from '../../lib/processes';
import { forkTs } from '../../lib/processes';
import { ask } from './control';

export interface ApiVariant {
  /** How rows label it, e.g. "current" or "before". */
  label: string;
  /** Another copy of `src/` to run (BENCH_COMPARE_SRC), or undefined for this one. */
  src?: string;
}

export interface ApiProcess {
  variant: ApiVariant;
  child: BenchChild;
  origin: string;
}

export async function startApiProcess(variant: ApiVariant, env: Record<string, string>): Promise<ApiProcess> {
  const child = forkTs(new URL('./apiChild.ts', import.meta.url), {
    gc: true,
    env: {
      NODE_ENV: 'production',
      // The API signs the local folder's file URLs and needs the secret for it.
      BENCH_API_ENV: JSON.stringify({ FILES_URL_SECRET: randomBytes(32).toString('hex'), ...env }),
      ...(variant.src ? { BENCH_API_SRC: variant.src } : {}),
    },
  });
  const ready = await child.next<{ ready?: string }>((m) => typeof m === 'object' && m !== null && 'ready' in m, 60_000);
  if (!ready.ready) throw new Error('API child reported no address');
  return { variant, child, origin: ready.ready };
}

/** The variants a run compares: this implementation, and the one in BENCH_COMPARE_SRC if set. */
export function apiVariants(): ApiVariant[] {
  const other = process.env.BENCH_COMPARE_SRC;
  return [{ label: 'current' }, ...(other ? [{ label: 'before', src: other }] : [])];
}

export async function stopApiProcess(api: ApiProcess): Promise<void> {
  await ask(api.child, 'close', undefined, 15_000).catch(() => undefined);
  await api.child.stop();
}
