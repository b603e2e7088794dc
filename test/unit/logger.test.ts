/** The logger: credentials in known places are censored, and a request's id rides on every line written for it. */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config';
import { createLogger, withRequestId } from '../../src/logger';
import { devEnvironment } from '../../src/main/devDefaults';

/** The lines a logger writes, as written (`format`: json or pretty). */
function capture(format?: 'json' | 'pretty') {
  const lines: string[] = [];
  const log = createLogger('info', 'test', { write: (l: string) => void lines.push(l) }, format);
  return { log, lines };
}
// Colour codes, where the terminal (or FORCE_COLOR) asks for them.
const plain = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');

describe('the logger', () => {
  it('censors credentials wherever they sit in a logged object', () => {
    const lines: string[] = [];
    const log = createLogger('info', 'test', { write: (l: string) => void lines.push(l) });
    log.info({ headers: { authorization: 'Bearer sdk_secret1' }, password: 'hunter22', user: { token: 'sdk_secret2', secret: 'whsec_x' }, config: { smtpUrl: 'smtp://u:p@h' } }, 'a request');
    const line = lines.join('');
    for (const secret of ['sdk_secret1', 'hunter22', 'sdk_secret2', 'whsec_x', 'smtp://u:p@h']) expect(line).not.toContain(secret);
    expect(JSON.parse(line)).toMatchObject({ password: '[redacted]', headers: { authorization: '[redacted]' } });
  });

  it('adds the request id to lines written within the request, and only there', async () => {
    const lines: string[] = [];
    const log = createLogger('info', 'test', { write: (l: string) => void lines.push(l) });
    await withRequestId('r-1', async () => {
      await new Promise((r) => setTimeout(r, 1));
      log.child({ component: 'service' }).info('inside');
    });
    log.info('outside');
    const [inside, outside] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(inside).toMatchObject({ req: 'r-1', component: 'service', msg: 'inside' });
    expect(outside!.req).toBeUndefined();
  });
});

describe('the log format', () => {
  it('is JSON by default: one object a line', () => {
    const { log, lines } = capture();
    log.info({ job: 'j1' }, 'hello');
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 30, name: 'test', job: 'j1', msg: 'hello' });
  });

  it('is readable lines with LOG_FORMAT=pretty, credentials still censored and the request id still there', () => {
    const { log, lines } = capture('pretty');
    withRequestId('r-9', () => log.info({ job: 'j1', password: 'hunter22' }, 'hello'));
    const text = plain(lines.join(''));
    expect(() => JSON.parse(lines[0]!)).toThrow();
    expect(text).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(test\): hello\n/);
    expect(text).toContain('job: "j1"');
    expect(text).toContain('req: "r-9"');
    expect(text).toContain('password: "[redacted]"');
    expect(text).not.toContain('hunter22');
  });

  it('defaults to pretty under npm run dev and to JSON for every other entry; LOG_FORMAT wins in both', () => {
    expect(loadConfig({}).logFormat).toBe('json');
    expect(loadConfig({ NODE_ENV: 'production' }).logFormat).toBe('json');
    expect(loadConfig(devEnvironment({})).logFormat).toBe('pretty');
    expect(loadConfig(devEnvironment({ LOG_FORMAT: 'json' })).logFormat).toBe('json');
    expect(loadConfig({ LOG_FORMAT: 'pretty' }).logFormat).toBe('pretty');
    expect(() => loadConfig({ LOG_FORMAT: 'text' })).toThrow(/LOG_FORMAT="text"/);
  });
});
