import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { readdirSync, readFileSync } from 'node:fs';
import { setPriority, getPriority } from 'node:os';
import { PostprocessPool } from '../src/imaging/pool';
import { configureSharp, postprocessImage } from '../src/imaging/transform';
import { renderPicture } from '../src/sd/simulator/picture';
import { encodePng } from '../src/sd/simulator/png';
const images = Array.from({ length: 16 }, (_, i) => encodePng(1024, 1024, renderPicture({ prompt: `b ${i}`, seed: i }, 1024, 1024, 0.6), []));
const pool = PostprocessPool.create({ threads: 2, maxTasksPerThread: 1e6, webpQuality: 90, thumbnailSize: 256 });
configureSharp();
async function measure(work: (p: Buffer) => Promise<unknown>) {
  const eld = monitorEventLoopDelay({ resolution: 1 }); const t0 = performance.now(); eld.enable();
  let next = 0; const lane = async () => { while (next < images.length) await work(Buffer.from(images[next++]!)); };
  await Promise.all([lane(), lane()]); eld.disable();
  return { ips: +(images.length / ((performance.now() - t0) / 1000)).toFixed(2), p99: +(eld.percentile(99) / 1e6).toFixed(2) };
}
const mode = process.argv[2] ?? 'none';
function renice() {
  for (const t of readdirSync('/proc/self/task')) {
    if (+t === process.pid) continue;
    const comm = readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim();
    if (mode === 'vips' && comm !== 'libvips worker') continue;
    try { if (getPriority(+t) < 10) setPriority(+t, 10); } catch {}
  }
}
const timer = mode === 'none' ? null : setInterval(renice, 50);
await measure((p) => pool.process(p));
for (let r = 0; r < 3; r++) {
  console.log(mode, 'pool', JSON.stringify(await measure((p) => pool.process(p))), 'main', JSON.stringify(await measure((p) => postprocessImage({ kind: 'postprocess', png: p, webpQuality: 90, thumbnailSize: 256 }))));
}
if (timer) clearInterval(timer);
await pool.close();
