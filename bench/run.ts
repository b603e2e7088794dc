/**
 * `npm run bench [-- --quick] [-- --only=jobs,mutation]`: runs the scenarios one after the other,
 * prints a table, and writes bench/results/latest.json and bench/results/latest.md.
 * Not part of `npm test` (a test runs the quick mode so the scripts never rot).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { parseFlags } from '../src/main/cli';
import { met, type BenchContext, type Scenario, type ScenarioResult } from './lib/types';
import { SCENARIOS } from './scenarios/index';

export interface BenchReport {
  date: string;
  quick: boolean;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string };
  scenarios: Array<{ id: string; title: string; seconds: number } & ScenarioResult>;
}

export function renderMarkdown(report: BenchReport): string {
  const lines: string[] = [];
  const m = report.machine;
  lines.push(
    `Run ${report.date}${report.quick ? ' (quick mode: small sizes, figures indicative only)' : ''} on ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}.`,
    '',
  );
  for (const s of report.scenarios) {
    lines.push(`### ${s.title}`, '');
    const names = [...new Set(s.rows.flatMap((r) => Object.keys(r.figures)))];
    lines.push(`| | ${names.join(' | ')} |`, `|---|${names.map(() => '---:').join('|')}|`);
    for (const r of s.rows) lines.push(`| ${r.label} | ${names.map((n) => (n in r.figures ? String(r.figures[n]) : '')).join(' | ')} |`);
    if (s.targets.length) {
      lines.push('', '| target | measured | met |', '|---|---:|:---:|');
      for (const t of s.targets) lines.push(`| ${t.description} | ${t.value} | ${met(t) ? 'yes' : '**no**'} |`);
    }
    for (const n of s.notes) lines.push('', `- ${n}`);
    lines.push('');
  }
  return lines.join('\n');
}

export async function runBench(opts: { quick: boolean; only?: string[]; write?: boolean; log?: (m: string) => void }): Promise<BenchReport> {
  const log = opts.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const ctx: BenchContext = {
    quick: opts.quick,
    redisUrl: process.env.BENCH_REDIS_URL ?? process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0',
    adminDatabaseUrl: process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    log,
  };
  const chosen: Scenario[] = opts.only?.length ? SCENARIOS.filter((s) => opts.only!.includes(s.id)) : SCENARIOS;
  if (opts.only?.length && chosen.length !== opts.only.length) {
    throw new Error(`unknown scenario in --only; known: ${SCENARIOS.map((s) => s.id).join(', ')}`);
  }
  const cpus = os.cpus();
  const report: BenchReport = {
    date: new Date().toISOString(),
    quick: opts.quick,
    machine: {
      cpus: cpus.length,
      cpuModel: cpus[0]?.model.trim() ?? 'unknown',
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
    },
    scenarios: [],
  };
  for (const s of chosen) {
    log(`==> ${s.title}`);
    const started = performance.now();
    const result = await s.run(ctx);
    report.scenarios.push({ id: s.id, title: s.title, seconds: Math.round((performance.now() - started) / 100) / 10, ...result });
  }
  if (opts.write !== false) {
    const dir = new URL('./results/', import.meta.url);
    await mkdir(dir, { recursive: true });
    // A run of some scenarios must not replace the full run's results.
    const name = opts.quick ? 'quick' : opts.only?.length ? 'partial' : 'latest';
    await writeFile(new URL(`${name}.json`, dir), `${JSON.stringify(report, null, 2)}\n`);
    await writeFile(new URL(`${name}.md`, dir), renderMarkdown(report));
  }
  return report;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const values = parseFlags(
    `usage: npm run bench -- [--quick] [--only=${SCENARIOS.map((s) => s.id).join(',')}]

Measures the service against what it is built on, side by side in one run, and writes
bench/results/latest.{json,md} (quick.* with --quick, partial.* with --only). Needs Redis and
Postgres (BENCH_REDIS_URL / BENCH_DATABASE_URL, else TEST_REDIS_URL / TEST_DATABASE_URL, else local).`,
    { quick: { type: 'boolean', default: false }, only: { type: 'string' } },
  );
  runBench({ quick: values.quick ?? false, only: values.only?.split(',').map((s) => s.trim()).filter(Boolean) })
    .then((report) => {
      process.stdout.write(`\n${renderMarkdown(report)}\n`);
      const missed = report.scenarios.flatMap((s) => s.targets).filter((t) => !met(t));
      process.stdout.write(missed.length ? `${missed.length} target(s) not met.\n` : 'All targets met.\n');
    })
    .catch((err: unknown) => {
      process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    });
}
