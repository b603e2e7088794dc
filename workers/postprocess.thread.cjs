// The file Piscina loads in each post-processing thread. Piscina first loads a task file with
// require(); on Node 20 a require() that meets an ES module with top-level await (as the .mjs
// bootstrap is) can abort the whole process with a V8 fatal error ("IsGraphAsync must be used on an
// instantiated module"), seen once in a CI run. This CommonJS file hands Piscina its handler at once
// and loads the ES bootstrap (tsx, then postprocess.thread.ts) with import() on the first task.
'use strict';

let thread;

module.exports = async function postprocessThread(task) {
  thread ??= import('./postprocess.thread.mjs').then((m) => m.default);
  return (await thread)(task);
};
