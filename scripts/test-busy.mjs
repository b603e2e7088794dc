#!/usr/bin/env node
/**
 * `npm run test:busy [-- --hogs=N --runs=K]`: runs `npm test` while N busy loops (default: one per
 * core) keep every core at 100%, K times in a row (default 1). The suite must stay green on a machine
 * that CI and other work share; this is how we check it. Prints each run's time; exits non-zero on
 * the first failing run.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import { parseArgs } from 'node:util';

const USAGE = 'usage: npm run test:busy -- [--hogs=N] [--runs=K]\n  runs `npm test` K times (default 1) beside N busy loops (default: one per core)\n';
function usageError(problem) {
  process.stderr.write(`${problem}\n\n${USAGE}`);
  process.exit(2);
}
let values;
try {
  ({ values } = parseArgs({
    options: { hogs: { type: 'string' }, runs: { type: 'string', default: '1' }, help: { type: 'boolean', short: 'h', default: false } },
    strict: true,
  }));
} catch (err) {
  usageError(err.message);
}
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const cores = os.availableParallelism();
const hogs = values.hogs === undefined ? cores : Number(values.hogs);
const runs = Number(values.runs);
if (!/^\d+$/.test(values.hogs ?? '0') || !Number.isInteger(hogs)) usageError('--hogs must be a whole number ≥ 0');
if (!/^\d+$/.test(values.runs) || runs < 1) usageError('--runs must be a whole number ≥ 1');

/** Spins in 200 ms slices and stops when its parent is gone, so a killed run leaves no busy loop behind. */
const HOG = `const parent = process.ppid;
const spin = () => {
  const end = Date.now() + 200;
  while (Date.now() < end);
  if (process.ppid !== parent) process.exit(0);
  setImmediate(spin);
};
spin();`;
const children = [];
for (let i = 0; i < hogs; i++) {
  children.push(spawn(process.execPath, ['-e', HOG], { stdio: 'ignore' }));
}
const stopHogs = () => {
  for (const c of children) c.kill('SIGKILL');
};
let test;
process.on('exit', () => {
  stopHogs();
  test?.kill('SIGTERM');
});
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

process.stdout.write(`test:busy: ${hogs} busy loop(s) on ${cores} core(s), ${runs} run(s) of npm test\n`);
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const times = [];
for (let run = 1; run <= runs; run++) {
  const started = Date.now();
  const code = await new Promise((resolve) => {
    test = spawn(npm, ['test'], { stdio: 'inherit' });
    test.once('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0)));
  });
  const seconds = Math.round((Date.now() - started) / 1000);
  times.push(seconds);
  process.stdout.write(`test:busy: run ${run} of ${runs} ${code === 0 ? 'passed' : 'FAILED'} in ${seconds} s\n`);
  if (code !== 0) process.exit(code);
}
process.stdout.write(`test:busy: all ${runs} run(s) passed (${times.map((t) => `${t} s`).join(', ')})\n`);
// The busy loops keep the event loop alive: exit explicitly (the 'exit' handler stops them).
process.exit(0);
