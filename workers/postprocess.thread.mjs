// Bootstrap that Piscina actually loads: the project runs TypeScript through tsx without a build
// step, and a worker thread started by Vitest (or by plain node) has no TypeScript loader. tsImport
// registers tsx for this one import tree only, so it also works when the thread already inherited
// tsx from the parent's execArgv (under `tsx script.ts`) without transforming anything twice.
import { tsImport } from 'tsx/esm/api';

const thread = await tsImport('./postprocess.thread.ts', import.meta.url);

export default thread.default;
