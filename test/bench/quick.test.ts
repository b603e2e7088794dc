/**
 * `npm run bench -- --quick` runs inside the suite so the benchmark scripts never rot. Quick mode's
 * figures are too small to judge the targets by (and the other test files load the machine), so
 * this checks that every scenario runs to the end and reports real, finite measurements.
 */
import { describe, expect, it } from 'vitest';
import { BENCH_QUICK_MS } from '../helpers/budgets';
import { renderMarkdown, runBench } from '../../bench/run';
import { SCENARIOS } from '../../bench/scenarios/index';

describe('npm run bench -- --quick', () => {
  it('runs every scenario and reports finite figures and targets', async () => {
    const report = await runBench({ quick: true, write: false, log: () => undefined });
    expect(report.scenarios.map((s) => s.id)).toEqual(SCENARIOS.map((s) => s.id));
    for (const s of report.scenarios) {
      expect(s.rows.length, s.id).toBeGreaterThan(0);
      for (const row of s.rows) {
        const figures = Object.values(row.figures);
        expect(figures.length, `${s.id}: ${row.label}`).toBeGreaterThan(0);
        for (const f of figures) expect(Number.isFinite(f), `${s.id}: ${row.label}`).toBe(true);
      }
      for (const t of s.targets) expect(Number.isFinite(t.value), `${s.id}: ${t.description}`).toBe(true);
    }
    const md = renderMarkdown(report);
    for (const s of SCENARIOS) expect(md).toContain(s.title);
  }, BENCH_QUICK_MS);
});
