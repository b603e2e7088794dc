/**
 * Post-processing runs below the worker's event loop in CPU priority (POSTPROCESS_NICE).
 *
 * Why: the work is mostly inside libvips, on its own threads ("libvips worker"), and with as many
 * images in flight as cores those threads keep every core busy. The event loop (progress events,
 * SD leases, stall guarding) then waits for a core each time it wakes: about 2.5 ms late at p99 on
 * two cores, against 0.2 ms with nothing running. A higher nice value lowers the threads' share
 * when the event loop wants a core and costs nothing when it does not (the bench's post-processing
 * scenario measures both sides).
 *
 * How: Linux applies setpriority(PRIO_PROCESS, tid) to one thread. A post-processing thread lowers
 * itself once, and after each task it lowers the libvips threads that appeared since (libvips
 * starts them on demand and keeps them; a thread inherits its creator's nice value, and libvips
 * creates them from libuv's thread pool). libuv's thread pool is not lowered here: the event
 * loop's own file and DNS work uses it (in practice its threads start before any post-processing
 * thread lowers itself, but nothing guarantees that). Raising a nice value needs no privilege;
 * lowering it again would, so nothing here ever does. Elsewhere than Linux this does nothing.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

/** The name libvips gives the threads of its thread set (libvips 8.13 and later). */
const LIBVIPS_THREAD = 'libvips worker';

const supported = process.platform === 'linux';

/** Lowers one thread to `nice` unless it already is at least that low (never raises it). False if it could not. */
function lower(tid: number, nice: number): boolean {
  try {
    if (getPriority(tid) < nice) setPriority(tid, nice);
    return true;
  } catch {
    // The thread ended between listing and lowering it, or the system refused: nothing to do.
    return false;
  }
}

/**
 * Lowers the calling thread (a worker thread: its own id, not the process's). Never throws: without
 * /proc/thread-self (Linux before 3.17, or /proc masked) the thread keeps its priority.
 */
export function lowerThisThread(nice: number): void {
  if (!supported || nice <= 0) return;
  let tid: number;
  try {
    // "<pid>/task/<tid>" of the thread that asks.
    tid = Number(readlinkSync('/proc/thread-self').split('/').at(-1));
  } catch {
    return;
  }
  if (Number.isInteger(tid) && tid > 0) lower(tid, nice);
}

/**
 * Keeps libvips' threads at `nice`. One per post-processing thread; `sweep()` lists the process's
 * threads (one directory read) and reads the name of only those it has not seen before.
 */
export class LibvipsThreadPriority {
  readonly #nice: number;
  readonly #seen = new Set<number>();

  constructor(nice: number) {
    this.#nice = nice;
  }

  /** Lowers the libvips threads that appeared since the last call. Never throws. */
  sweep(): void {
    if (!supported || this.#nice <= 0) return;
    let tids: string[];
    try {
      tids = readdirSync('/proc/self/task');
    } catch {
      return;
    }
    // Forget threads that have ended: Linux reuses ids, and a new thread with an old id must be looked at.
    const live = new Set(tids.map(Number));
    for (const tid of this.#seen) if (!live.has(tid)) this.#seen.delete(tid);
    for (const tid of live) {
      if (this.#seen.has(tid)) continue;
      let name: string;
      try {
        name = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      } catch {
        continue; // ended meanwhile
      }
      // Remember every thread, libvips' or not, so that its name is read once. A libvips thread that
      // could not be lowered is tried again next time.
      if (name !== LIBVIPS_THREAD || lower(tid, this.#nice)) this.#seen.add(tid);
    }
  }
}
