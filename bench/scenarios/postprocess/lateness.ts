/**
 * The post-processing scenario's event-loop probe, shared by the measuring child and the bench
 * process (which probes its own loop as a bystander). monitorEventLoopDelay samples the time between
 * two ticks of a 1 ms timer; lateness is that minus the period, what the loop owed its timers (as
 * @fastify/under-pressure computes it).
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';

const RESOLUTION_MS = 1;

const lateMs = (ns: number) => Math.max(0, ns / 1e6 - RESOLUTION_MS);

export interface Lateness {
  lateP99Ms: number;
  lateMaxMs: number;
}

/** Starts probing this thread's event loop; the returned function stops and reports. */
export function probeLateness(): () => Lateness {
  const eld = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  eld.enable();
  return () => {
    eld.disable();
    return { lateP99Ms: lateMs(eld.percentile(99)), lateMaxMs: lateMs(eld.max) };
  };
}
