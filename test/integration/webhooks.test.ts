/**
 * Signed webhooks end to end against a real receiver over HTTP (test/helpers/webhookReceiver.ts):
 * each delivery verifies with the `standardwebhooks` library; failed tries (5xx, a receiver that
 * hangs, a redirect) are retried with the same webhook-id and listed by webhookDeliveries; a 410
 * stops them; rotating the secret changes the signature; loopback and metadata addresses are refused
 * at submit and at delivery when WEBHOOK_ALLOW_PRIVATE is off; and a dead receiver never holds up a
 * generation. The stack allows private addresses (the receiver is on 127.0.0.1), with tiny backoff.
 */
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { graphql } from '../gql';
import { gql, codeOf } from '../helpers/graphql';
import { hasEnded, storedState } from '../helpers/storedJobs';
import { startStack, type Stack } from '../helpers/stack';
import { startReceiver, type TestReceiver, type ReceivedHook } from '../helpers/webhookReceiver';
import { insertGenerationReservingCredits } from '../../src/db/statements';
import { sweepStrandedGenerations } from '../../src/generation/orphans';
import { failGeneration } from '../../src/generation/outcomes';
import { JobProducer, jobsKey } from '../../src/jobs/queues';
import { createLogger } from '../../src/logger';
import { ProgressPublisher } from '../../src/progress/publisher';
import { jobId } from '../../src/jobs/registry';
import { postWebhook } from '../../src/webhooks/post';
import { GenerateDoc } from './documents';
import { events, generate, testInput, watch } from './helpers';
import { until } from '../helpers/wait';

const RotateDoc = graphql(`
  mutation RotateWebhookSecret { rotateWebhookSecret }
`);
const SettingsDoc = graphql(`
  mutation WebhookSettings($url: String, $events: [WebhookEvent!]) {
    updateWebhookSettings(url: $url, events: $events) { url events secretSet }
  }
`);
const MeHooksDoc = graphql(`
  query MyWebhookSettings { me { webhookSettings { url events secretSet } } }
`);
const DeliveriesDoc = graphql(`
  query WebhookDeliveries($id: ID!) {
    webhookDeliveries(generationId: $id) { event webhookId attempt statusCode error latencyMs createdAt }
  }
`);

const CancelDoc = graphql(`
  mutation CancelHooked($id: ID!) { cancelGeneration(id: $id) { id status } }
`);

const MAX_ATTEMPTS = 4;


interface Body {
  type: string;
  data: { generationId: string; status: string; error: { code: string } | null; images: Array<{ width: number; blurhash: string }> };
}

describe('webhooks, with a real receiver', () => {
  let stack: Stack;
  let receiver: TestReceiver;
  let token: string;
  let secret: string;

  beforeAll(async () => {
    receiver = await startReceiver();
    stack = await startStack({
      env: {
        WEBHOOK_ALLOW_PRIVATE: 'true',
        WEBHOOK_RETRY_DELAY_MS: '20',
        WEBHOOK_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
        // Long enough that no answer of the receiver on a busy machine misses it, short enough to wait for.
        WEBHOOK_TIMEOUT_MS: '2000',
        WEBHOOKS_CONCURRENCY: '2',
      },
    });
    ({ token } = await stack.createUser(100));
    const rotated = await gql(stack.baseUrl, RotateDoc, {}, token);
    secret = rotated.data!.rotateWebhookSecret;
  });
  afterAll(async () => {
    await stack?.close();
    await receiver?.close();
  });

  const deliveries = async (id: string, as = token) => {
    const r = await gql(stack.baseUrl, DeliveriesDoc, { id }, as);
    expect(r.errors).toBeUndefined();
    return r.data!.webhookDeliveries;
  };
  /** Generates with a receiver at `path` and waits for the generation's end. */
  async function generateHooked(path: string, extra: Record<string, unknown> = {}) {
    const { id } = await generate(stack, token, { steps: 3, webhookUrl: `${receiver.origin}${path}`, ...extra });
    const final = events(await watch(stack.baseUrl, id, token).done).at(-1)!;
    return { id, final };
  }
  const forGeneration = (id: string) => (h: ReceivedHook) => h.body.includes(id);

  it('signs the final state so standardwebhooks verifies it, and sends STARTED when asked', async () => {
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    const { id, final } = await generateHooked('/ok', { webhookEvents: ['STARTED'] });
    expect(final.status).toBe('SUCCEEDED');
    const succeeded = await receiver.waitFor('/ok', (h) => h.body.includes(id) && h.body.includes('generation.succeeded'));
    const started = await receiver.waitFor('/ok', (h) => h.body.includes(id) && h.body.includes('generation.started'));
    const wh = new Webhook(secret);
    const body = wh.verify(succeeded.body, succeeded.headers) as Body;
    expect(body.type).toBe('generation.succeeded');
    expect(body.data).toMatchObject({ generationId: id, status: 'SUCCEEDED', error: null });
    expect(body.data.images).toHaveLength(1);
    expect(body.data.images[0]!.blurhash).toBeTruthy();
    expect(succeeded.body).not.toContain('http');
    expect(succeeded.headers['webhook-id']).toBe(`msg_${id}_succeeded`);
    expect((wh.verify(started.body, started.headers) as Body).data.status).toBe('STARTED');
    // A body changed on the way does not verify.
    expect(() => wh.verify(succeeded.body.replace('SUCCEEDED', 'FAILED'), succeeded.headers)).toThrow();
  });

  it('sends only the final state when STARTED was not asked for', async () => {
    const { id } = await generateHooked('/final-only');
    await receiver.waitFor('/final-only', forGeneration(id));
    await until(async () => (await deliveries(id)).length === 1, 'the delivery row');
    expect(receiver.received('/final-only').filter(forGeneration(id)).map((h) => (JSON.parse(h.body) as Body).type)).toEqual(['generation.succeeded']);
  });

  it('retries a receiver that fails twice, with the same webhook-id, and lists the tries', async () => {
    receiver.replyWith('/flaky', 500, 2);
    const { id } = await generateHooked('/flaky');
    await until(async () => (await deliveries(id)).some((d) => d.statusCode === 204), 'the third try');
    const tries = await deliveries(id);
    expect(tries.map((d) => d.statusCode).filter((c) => c !== null)).toEqual([500, 500, 204]);
    expect(tries.at(-1)!.attempt).toBe(tries.length);
    expect(new Set(tries.map((d) => d.webhookId))).toEqual(new Set([`msg_${id}_succeeded`]));
    for (const d of tries) expect(d.event).toBe('SUCCEEDED');
    expect(tries[0]!.error).toMatch(/500/);
    const got = receiver.received('/flaky').filter(forGeneration(id));
    expect(new Set(got.map((h) => h.headers['webhook-id'])).size).toBe(1);
    // Every try verifies: each is signed afresh with its own timestamp.
    for (const h of got) expect(() => new Webhook(secret).verify(h.body, h.headers)).not.toThrow();
  });

  it('times out a receiver that hangs and tries again', async () => {
    receiver.hang('/slow', 1);
    const { id } = await generateHooked('/slow');
    await until(async () => (await deliveries(id)).some((d) => d.statusCode === 204), 'the try after the timeout');
    const tries = await deliveries(id);
    expect(tries[0]).toMatchObject({ statusCode: null, attempt: 1 });
    expect(tries[0]!.error).toMatch(/did not answer within 2000 ms/);
    expect(tries.at(-1)!.statusCode).toBe(204);
  });

  it('does not follow a redirect: every try fails until the attempts run out', async () => {
    receiver.redirect('/moved', '/target');
    const { id } = await generateHooked('/moved');
    await until(async () => (await deliveries(id)).length === MAX_ATTEMPTS, 'every try');
    const key = jobId('deliverWebhook', `${id}:SUCCEEDED`);
    await until(async () => hasEnded(await storedState(stack, 'webhooks', key)), 'the job to end');
    const tries = await deliveries(id);
    expect(tries.map((d) => d.statusCode)).toEqual(Array(MAX_ATTEMPTS).fill(302));
    expect(receiver.received('/target')).toHaveLength(0);
  });

  it('stops at a 410 Gone', async () => {
    receiver.replyWith('/gone', 410);
    const { id } = await generateHooked('/gone');
    const key = jobId('deliverWebhook', `${id}:SUCCEEDED`);
    await until(async () => (await deliveries(id)).length > 0, 'the first try');
    await until(async () => hasEnded(await storedState(stack, 'webhooks', key)), 'the job to end');
    expect((await deliveries(id)).map((d) => d.statusCode)).toEqual([410]);
  });

  it('signs with the new secret once it is rotated; the old one no longer verifies', async () => {
    const user = await stack.createUser(10);
    const first = (await gql(stack.baseUrl, RotateDoc, {}, user.token)).data!.rotateWebhookSecret;
    const second = (await gql(stack.baseUrl, RotateDoc, {}, user.token)).data!.rotateWebhookSecret;
    expect(second).not.toBe(first);
    const { id } = await generate(stack, user.token, { steps: 3, webhookUrl: `${receiver.origin}/rotated` });
    const hook = await receiver.waitFor('/rotated', forGeneration(id));
    expect(() => new Webhook(second).verify(hook.body, hook.headers)).not.toThrow();
    expect(() => new Webhook(first).verify(hook.body, hook.headers)).toThrow();
  });

  it('uses the default receiver of updateWebhookSettings, and shows it in me', async () => {
    const set = await gql(stack.baseUrl, SettingsDoc, { url: `${receiver.origin}/default`, events: ['STARTED'] }, token);
    expect(set.errors).toBeUndefined();
    expect(set.data!.updateWebhookSettings).toEqual({ url: `${receiver.origin}/default`, events: ['COMPLETED', 'STARTED'], secretSet: true });
    const me = await gql(stack.baseUrl, MeHooksDoc, {}, token);
    expect(me.data!.me!.webhookSettings.url).toBe(`${receiver.origin}/default`);
    const { id } = await generate(stack, token, { steps: 3 });
    await receiver.waitFor('/default', (h) => h.body.includes(id) && h.body.includes('generation.succeeded'));
    await receiver.waitFor('/default', (h) => h.body.includes(id) && h.body.includes('generation.started'));
    const cleared = await gql(stack.baseUrl, SettingsDoc, { url: null }, token);
    expect(cleared.data!.updateWebhookSettings).toEqual({ url: null, events: [], secretSet: true });
  });

  it('sends CANCELLED when a generation is cancelled', async () => {
    const user = await stack.createUser(10);
    await gql(stack.baseUrl, RotateDoc, {}, user.token);
    stack.sim.pause();
    const { id } = await generate(stack, user.token, { steps: 3, webhookUrl: `${receiver.origin}/cancelled` });
    expect((await gql(stack.baseUrl, CancelDoc, { id }, user.token)).data!.cancelGeneration.status).toBe('CANCELLED');
    stack.sim.resume();
    const hook = await receiver.waitFor('/cancelled', forGeneration(id));
    expect((JSON.parse(hook.body) as Body).data).toMatchObject({ status: 'CANCELLED', error: { code: 'CANCELLED' } });
  });

  it('sends FAILED with the error when a job fails for good', async () => {
    stack.sim.failNext('bad-request');
    const { id, final } = await generateHooked('/failed');
    expect(final.status).toBe('FAILED');
    const hook = await receiver.waitFor('/failed', forGeneration(id));
    const body = new Webhook(secret).verify(hook.body, hook.headers) as Body;
    expect(body).toMatchObject({ type: 'generation.failed', data: { status: 'FAILED', images: [] } });
    expect(body.data.error!.code).toBe(final.error!.code);
  });

  it('sends FAILED when the sweep gives up a generation whose job was lost (TOO_MANY_ATTEMPTS)', async () => {
    const { db } = stack.tdb;
    const log = createLogger('silent');
    const producer = new JobProducer(stack.config, log);
    try {
      const user = await stack.createUser(2);
      await gql(stack.baseUrl, RotateDoc, {}, user.token);
      const row = await insertGenerationReservingCredits(db, { id: crypto.randomUUID(), userId: user.userId, input: testInput('lost') });
      const id = row!.id;
      await db('generation_webhooks').insert({ generation_id: id, url: `${receiver.origin}/swept`, events: ['COMPLETED'] });
      // What a lost job leaves: a live row untouched for two minutes, its attempts used up.
      await db('generations').where({ id }).update({ status: 'GENERATING', attempts: 3, updated_at: db.raw("now() - interval '2 minutes'") });
      const publisher = new ProgressPublisher(stack.redis, stack.config.redis.prefix, stack.config.progress.expiresS);
      const result = await sweepStrandedGenerations({
        db,
        redis: stack.redis,
        prefix: stack.config.redis.prefix,
        producer,
        maxAttempts: 3,
        minAgeS: stack.config.worker.strandedSweep.minAgeS,
        fail: (gid, failure) => failGeneration(db, publisher, gid, failure, { db, producer, log }),
      });
      expect(result.failed).toEqual([id]);
      const hook = await receiver.waitFor('/swept', forGeneration(id));
      expect((JSON.parse(hook.body) as Body).data).toMatchObject({ status: 'FAILED', error: { code: 'TOO_MANY_ATTEMPTS' } });
    } finally {
      await producer.close();
    }
  });

  it('needs a signing secret before it takes a webhookUrl', async () => {
    const user = await stack.createUser(10);
    const res = await gql(stack.baseUrl, GenerateDoc, { input: { prompt: 'x', webhookUrl: `${receiver.origin}/ok` } }, user.token);
    expect(codeOf(res)).toBe('BAD_USER_INPUT');
    expect(res.errors![0]!.extensions!.field).toBe('webhookUrl');
    expect(await stack.credits(user.userId)).toBe(10);
  });

  it('refuses loopback and metadata receivers at submit and at delivery without WEBHOOK_ALLOW_PRIVATE', async () => {
    const strict = await stack.startApi({ WEBHOOK_ALLOW_PRIVATE: 'false' });
    const port = new URL(receiver.origin).port;
    for (const url of [`http://127.0.0.1:${port}/ok`, 'http://169.254.169.254/latest/meta-data/', `http://localhost:${port}/ok`, 'http://[::ffff:127.0.0.1]/', 'http://10.0.0.1/']) {
      const res = await gql(strict.baseUrl, GenerateDoc, { input: { prompt: 'x', webhookUrl: url } }, token);
      expect(codeOf(res), url).toBe('BAD_USER_INPUT');
      expect(res.errors![0]!.extensions!.field).toBe('webhookUrl');
      const settings = await gql(strict.baseUrl, SettingsDoc, { url }, token);
      expect(codeOf(settings), url).toBe('BAD_USER_INPUT');
    }
    for (const url of ['ftp://example.com/', 'not a url', `https://user:pw@example.com/`, `https://example.com/${'a'.repeat(2100)}`]) {
      expect(codeOf(await gql(strict.baseUrl, GenerateDoc, { input: { prompt: 'x', webhookUrl: url } }, token)), url).toBe('BAD_USER_INPUT');
    }
    // At delivery: a literal address, and a name that resolves to loopback (checked after DNS).
    const before = receiver.received('/never').length;
    for (const url of [`http://127.0.0.1:${port}/never`, `http://localhost:${port}/never`, 'http://169.254.169.254/never']) {
      await expect(postWebhook({ url, headers: {}, body: '{}', timeoutMs: 2000, allowPrivate: false })).rejects.toMatchObject({ code: 'WEBHOOK_ADDRESS_REFUSED' });
    }
    expect(receiver.received('/never')).toHaveLength(before);
    // The same receiver is reached when private addresses are allowed.
    await expect(postWebhook({ url: `http://localhost:${port}/never`, headers: {}, body: '{}', timeoutMs: 2000, allowPrivate: true })).resolves.toBe(204);
  });

  it('a dead receiver holds up no generation', async () => {
    const user = await stack.createUser(10);
    await gql(stack.baseUrl, RotateDoc, {}, user.token);
    receiver.hang('/dead');
    // Two generations whose receiver never answers: their deliveries take every webhook slot.
    const hooked = await Promise.all([1, 2].map(() => generate(stack, user.token, { steps: 3, webhookUrl: `${receiver.origin}/dead`, webhookEvents: ['STARTED'] })));
    await until(() => receiver.open('/dead') >= 2, 'both webhook slots held by the dead receiver');
    const { id } = await generate(stack, user.token, { steps: 3 });
    const list = events(await watch(stack.baseUrl, id, user.token).done);
    expect(list.at(-1)!.status).toBe('SUCCEEDED');
    // It succeeded while the dead receiver had answered none of the webhooks.
    for (const h of hooked) expect((await deliveries(h.id, user.token)).some((d) => d.statusCode !== null)).toBe(false);
    for (const h of hooked) expect(events(await watch(stack.baseUrl, h.id, user.token).done).at(-1)!.status).toBe('SUCCEEDED');
  });
});
