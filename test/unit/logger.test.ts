/** The logger: credentials in known places are censored, and a request's id rides on every line written for it. */
import { describe, expect, it } from 'vitest';
import { createLogger, withRequestId } from '../../src/logger';

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
