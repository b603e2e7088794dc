/**
 * An optional CPU profile of a bench child, for finding where a request's time goes. The bench's
 * child helper starts node itself and NODE_OPTIONS refuses --cpu-prof, so the inspector does it.
 * Open the file in Chrome DevTools (Performance) or speedscope.
 */
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';

/** Starts profiling when `file` is set; the returned function stops and writes the profile. */
export async function startCpuProfile(file: string | undefined): Promise<(() => Promise<void>) | undefined> {
  if (!file) return undefined;
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  return async () => {
    const { profile } = await session.post('Profiler.stop');
    await writeFile(file, JSON.stringify(profile));
    session.disconnect();
  };
}
