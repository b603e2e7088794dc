import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { TaskStatus } from '../../src/api/celeryState';
import { jobsKey } from '../../src/jobs/queues';
import { WAIT_MS } from '../helpers/budgets';
import { gql } from '../helpers/graphql';
import { startStack, type Stack } from '../helpers/stack';
import { CancelDoc } from './documents';
import { events, expectWellFormedStream, generate, TERMINAL, watch } from './helpers';

/** The old service's request body, field for field. */
const OLD_FIELDS = ['prompt', 'negative_prompt', 'steps', 'width', 'height', 'cfg_scale', 'sampler_name', 'seed', 'batch_size', 'character_name'];

interface Detail {
  detail: Array<{ loc: Array<string | number>; msg: string; type: string }>;
}

describe('the old REST endpoints, over real HTTP', () => {
  let stack: Stack;
  beforeAll(async () => {
    // No worker at first: the first test reads generations while they are still queued.
    stack = await startStack({ worker: false, simulator: { stepMs: 10 } });
  });
  afterAll(async () => stack?.close());

  const headers = (token?: string, more: Record<string, string> = {}) => ({
    'content-type': 'application/json',
    ...(token ? { authorization: `Bearer ${token}` } : {}),
    ...more,
  });
  const post = (body: unknown, token?: string, path = '/api/v1/generate-image/', baseUrl = stack.baseUrl) =>
    fetch(`${baseUrl}${path}`, { method: 'POST', headers: headers(token), body: typeof body === 'string' ? body : JSON.stringify(body) });
  const getStatus = (taskId: string, token?: string) => fetch(`${stack.baseUrl}/api/v1/generation-status/${taskId}`, { headers: headers(token) });
  const readStatus = async (taskId: string, token: string): Promise<TaskStatus> => {
    const res = await getStatus(taskId, token);
    expect(res.status).toBe(200);
    return (await res.json()) as TaskStatus;
  };
  /** Polls the status, as an old client did, until `pred` holds; returns that answer. */
  const pollUntil = (taskId: string, token: string, pred: (s: TaskStatus) => boolean): Promise<TaskStatus> =>
    vi.waitFor(
      async () => {
        const s = await readStatus(taskId, token);
        if (!pred(s)) throw new Error(`still ${JSON.stringify(s)}`);
        return s;
      },
      { timeout: WAIT_MS, interval: 20 },
    );
  const createTask = async (token: string, body: Record<string, unknown> = {}) => {
    const res = await post({ prompt: 'a lighthouse at dusk', steps: 8, width: 64, height: 64, ...body }, token);
    expect(res.status).toBe(200);
    const json = (await res.json()) as { task_id: string };
    expect(Object.keys(json)).toEqual(['task_id']);
    return json.task_id;
  };
  /** Waits until every generation of the file has ended, so the simulator's next call is the next test's. */
  const noneRunning = () =>
    vi.waitFor(
      async () => {
        const live = await stack.tdb.db('generations').whereNotIn('status', TERMINAL).count<Array<{ count: string }>>('* as count');
        expect(Number(live[0]?.count)).toBe(0);
      },
      { timeout: WAIT_MS, interval: 20 },
    );
  const generationCount = async (userId: string) =>
    Number((await stack.tdb.db('generations').where({ user_id: userId }).count<Array<{ count: string }>>('* as count'))[0]?.count);

  it('POST answers a task_id; polling sees PENDING, STARTED and PROGRESS with meta, then SUCCESS with images that download', async () => {
    const user = await stack.createUser(5);
    const a = await createTask(user.token, { seed: 42, steps: 12, negative_prompt: null, character_name: 'Alice' });
    // The path without the trailing slash is the same endpoint.
    const resB = await post({ prompt: 'a second lighthouse', steps: 12, width: 64, height: 64 }, user.token, '/api/v1/generate-image');
    expect(resB.status).toBe(200);
    const b = ((await resB.json()) as { task_id: string }).task_id;
    expect(await stack.credits(user.userId)).toBe(3);

    const queued = await readStatus(a, user.token);
    expect(queued).toEqual({
      task_id: a,
      status: 'PENDING',
      progress: { step: null, total_steps: 12, progress: 0, eta: expect.any(Number), queue_position: 1 },
      result: null,
      error: null,
    });
    expect((await readStatus(b, user.token)).progress?.queue_position).toBe(2);

    // Sampling held: one generation is PROGRESS at the one-at-a-time server, the other (the worker
    // has two slots) STARTED, waiting there.
    stack.sim.pause();
    await stack.startWorker();
    const states = await vi.waitFor(
      async () => {
        const both = await Promise.all([readStatus(a, user.token), readStatus(b, user.token)]);
        const names = both.map((s) => s.status).sort();
        if (names[0] !== 'PROGRESS' || names[1] !== 'STARTED') throw new Error(`still ${JSON.stringify(both)}`);
        return both;
      },
      { timeout: WAIT_MS, interval: 20 },
    );
    const running = states.find((s) => s.status === 'PROGRESS')!;
    expect(running.progress).toMatchObject({ total_steps: 12, step: expect.any(Number), progress: expect.any(Number) });
    expect(running.result).toBeNull();
    expect(states.find((s) => s.status === 'STARTED')!.progress).toMatchObject({ progress: 0 });
    stack.sim.resume();

    const done = await pollUntil(a, user.token, (s) => s.status === 'SUCCESS');
    expect(done).toMatchObject({ task_id: a, status: 'SUCCESS', progress: null, error: null });
    expect(done.result?.images).toHaveLength(1);
    const image = done.result!.images[0]!;
    expect(image).toMatchObject({ width: 64, height: 64, seed: 42, blurhash: expect.any(String) });
    for (const url of [image.url, image.thumbnail_url]) {
      const file = await fetch(url);
      expect(file.status).toBe(200);
      expect(file.headers.get('content-type')).toBe('image/webp');
    }
    // Signed per answer: the next answer names the same file.
    const again = await readStatus(a, user.token);
    expect(new URL(again.result!.images[0]!.url).pathname).toBe(new URL(image.url).pathname);
    expect((await pollUntil(b, user.token, (s) => s.status === 'SUCCESS')).result?.images).toHaveLength(1);
    expect(await stack.credits(user.userId)).toBe(3);
  }, WAIT_MS * 3);

  const BAD_BODIES: Array<[string, string | Record<string, unknown>, Array<string | number>, string, RegExp]> = [
    ['a missing prompt', { steps: 5 }, ['body', 'prompt'], 'missing', /Field required/],
    ['an empty prompt', { prompt: '  ' }, ['body', 'prompt'], 'string_too_short', /prompt must not be empty/],
    ['steps as a string', { prompt: 'x', steps: '20' }, ['body', 'steps'], 'int_type', /valid integer/],
    ['fractional steps', { prompt: 'x', steps: 1.5 }, ['body', 'steps'], 'int_from_float', /fractional/],
    ['a null width', { prompt: 'x', width: null }, ['body', 'width'], 'int_type', /valid integer/],
    ['a prompt that is a number', { prompt: 7 }, ['body', 'prompt'], 'string_type', /valid string/],
    ['an unknown sampler', { prompt: 'x', sampler_name: 'Nope 9000' }, ['body', 'sampler_name'], 'value_error', /^sampler_name "Nope 9000" is not offered/],
    ['a width that is not a multiple of 8', { prompt: 'x', width: 513 }, ['body', 'width'], 'value_error', /multiple of 8/],
    ['a cfg_scale over the limit', { prompt: 'x', cfg_scale: 31 }, ['body', 'cfg_scale'], 'less_than_equal', /^cfg_scale must be at most 30$/],
    ['too many pixels', { prompt: 'x', width: 2048, height: 2048, batch_size: 2 }, ['body', 'width'], 'value_error', /width × height × batch_size/],
    ['a seed past 4294967295', { prompt: 'x', seed: 4294967296 }, ['body', 'seed'], 'less_than_equal', /seed must be -1/],
    ['malformed JSON', '{"prompt": "x",}', ['body', 15], 'json_invalid', /JSON decode error/],
    ['an array body', '[1]', ['body'], 'model_attributes_type', /valid dictionary/],
    ['an empty body', '', ['body'], 'missing', /Field required/],
  ];

  it.each(BAD_BODIES)('refuses %s with 422 and a FastAPI detail list, writing nothing', async (_name, body, loc, type, msg) => {
    const user = await stack.createUser(10);
    const res = await post(body, user.token);
    expect(res.status).toBe(422);
    const json = (await res.json()) as Detail;
    expect(json.detail).toHaveLength(1);
    expect(json.detail[0]).toMatchObject({ loc, type });
    expect(json.detail[0]!.msg).toMatch(msg);
    expect(await generationCount(user.userId)).toBe(0);
    expect(await stack.credits(user.userId)).toBe(10);
  });

  it('lists every problem of a body at once; ignores fields it does not know', async () => {
    const user = await stack.createUser(10);
    const res = await post({ steps: 'many', cfg_scale: 'high', batch_size: true }, user.token);
    expect(res.status).toBe(422);
    expect(((await res.json()) as Detail).detail.map((d) => d.loc)).toEqual([
      ['body', 'prompt'],
      ['body', 'steps'],
      ['body', 'cfg_scale'],
      ['body', 'batch_size'],
    ]);
    const id = await createTask(user.token, { something_else: 1, webhook_url: 'https://example.com' });
    expect((await readStatus(id, user.token)).task_id).toBe(id);
  });

  it('refuses a body over the size cap with 413, and other methods with 405', async () => {
    const user = await stack.createUser(1);
    const res = await post({ prompt: 'x'.repeat(70 * 1024) }, user.token);
    expect(res.status).toBe(413);
    expect(((await res.json()) as { detail: string }).detail).toMatch(/larger than 65536 bytes/);
    expect(await generationCount(user.userId)).toBe(0);
    const get = await fetch(`${stack.baseUrl}/api/v1/generate-image/`, { headers: headers(user.token) });
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    const unknown = await fetch(`${stack.baseUrl}/api/v1/nothing-here`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ detail: 'Not Found' });
  });

  it('answers 401 with WWW-Authenticate without a token, with an unknown one, or with a header that is not Bearer', async () => {
    const user = await stack.createUser(1);
    const id = await createTask(user.token);
    const attempts = [
      () => post({ prompt: 'x' }),
      () => post({ prompt: 'x' }, 'sdk_typo'),
      () => fetch(`${stack.baseUrl}/api/v1/generate-image/`, { method: 'POST', headers: { authorization: `Token ${user.token}` }, body: '{"prompt":"x"}' }),
      () => getStatus(id),
      () => getStatus(id, 'sdk_typo'),
    ];
    for (const attempt of attempts) {
      const res = await attempt();
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      expect(((await res.json()) as { detail: string }).detail).toMatch(/Authorization: Bearer/);
    }
    expect(await generationCount(user.userId)).toBe(1);
  });

  it("answers 404 alike for an unknown task id, a malformed one and another user's", async () => {
    const owner = await stack.createUser(1);
    const other = await stack.createUser(1);
    const id = await createTask(owner.token);
    const answers = await Promise.all(
      [id, '00000000-0000-4000-8000-000000000000', 'not-a-uuid', '%E0%A4%A'].map(async (taskId) => {
        const res = await getStatus(taskId, other.token);
        return { status: res.status, body: await res.json() };
      }),
    );
    for (const a of answers) expect(a).toEqual(answers[0]);
    expect(answers[0]).toEqual({ status: 404, body: { detail: expect.stringMatching(/not found/) } });
    expect((await readStatus(id, owner.token)).task_id).toBe(id);
  });

  it('answers 402 when the credits do not cover batch_size, and 403 before the address is confirmed; nothing is written', async () => {
    const poor = await stack.createUser(1);
    const res = await post({ prompt: 'two cats', batch_size: 2 }, poor.token);
    expect(res.status).toBe(402);
    expect(((await res.json()) as { detail: string }).detail).toMatch(/Not enough photo credits/);
    expect(await stack.credits(poor.userId)).toBe(1);
    expect(await generationCount(poor.userId)).toBe(0);

    const unconfirmed = await stack.createUser(5);
    await stack.tdb.db('users').where({ id: unconfirmed.userId }).update({ email_verified_at: null });
    const refused = await post({ prompt: 'x' }, unconfirmed.token);
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { detail: string }).detail).toMatch(/Confirm your email address/);
    expect(await generationCount(unconfirmed.userId)).toBe(0);
  });

  it('answers 503 with Retry-After when the job queue refuses the job, and gives the credits back', async () => {
    // A second API with a key prefix of its own, whose queue's job hash is not a hash: Redis refuses
    // every job added there (a real refusal, not a stand-in), while this file's queue works on.
    const broken = await stack.startApi({ REDIS_PREFIX: `${stack.env.REDIS_PREFIX}:broken` });
    await stack.redis.set(jobsKey(broken.config, 'high_priority'), 'not a hash');
    const user = await stack.createUser(2);
    const res = await post({ prompt: 'x' }, user.token, '/api/v1/generate-image/', broken.baseUrl);
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(((await res.json()) as { detail: string }).detail).toMatch(/credits were returned/);
    expect(await stack.credits(user.userId)).toBe(2);
  });

  it('a generation the SD server rejects is FAILURE with the error, and its credits come back', async () => {
    await noneRunning();
    const user = await stack.createUser(1);
    stack.sim.failNext('bad-request', 1);
    const id = await createTask(user.token);
    const failed = await pollUntil(id, user.token, (s) => s.status === 'FAILURE');
    expect(failed).toMatchObject({ task_id: id, progress: null, result: null });
    expect(failed.error).toMatch(/Stable Diffusion/);
    expect(await stack.credits(user.userId)).toBe(1);
  }, WAIT_MS * 2);

  it('a generation cancelled through GraphQL is REVOKED', async () => {
    await noneRunning();
    const user = await stack.createUser(1);
    stack.sim.pause();
    try {
      const id = await createTask(user.token, { steps: 20 });
      await pollUntil(id, user.token, (s) => s.status === 'PROGRESS');
      const cancel = await gql(stack.baseUrl, CancelDoc, { id }, user.token);
      expect(cancel.data?.cancelGeneration.status).toBe('CANCELLED');
      const revoked = await readStatus(id, user.token);
      expect(revoked).toMatchObject({ task_id: id, status: 'REVOKED', progress: null, result: null });
      expect(revoked.error).toMatch(/cancelled/);
    } finally {
      stack.sim.resume();
    }
    expect(await stack.credits(user.userId)).toBe(1);
  }, WAIT_MS * 2);

  it('a generation made through REST streams through the GraphQL subscription; one made through GraphQL reads through REST', async () => {
    const user = await stack.createUser(2);
    const viaRest = await createTask(user.token);
    const list = events(await watch(stack.baseUrl, viaRest, user.token).done);
    expectWellFormedStream(list, viaRest);
    const last = list[list.length - 1]!;
    expect(last.status).toBe('SUCCEEDED');
    const rest = await readStatus(viaRest, user.token);
    expect(rest.status).toBe('SUCCESS');
    expect(new URL(rest.result!.images[0]!.url).pathname).toBe(new URL(last.images[0]!.url).pathname);

    const { id: viaGraphql } = await generate(stack, user.token, { steps: 5, width: 64, height: 64 });
    const done = await pollUntil(viaGraphql, user.token, (s) => s.status === 'SUCCESS');
    expect(done.result?.images).toHaveLength(1);
    expect((await fetch(done.result!.images[0]!.url)).status).toBe(200);
  }, WAIT_MS * 2);

  it('serves an OpenAPI 3.1 document of both endpoints whose request fields are exactly the ones the endpoint reads', async () => {
    const res = await fetch(`${stack.baseUrl}/api/v1/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const doc = JSON.parse(await res.text()) as {
      openapi: string;
      paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { $ref: string } }> }; responses: Record<string, { content?: Record<string, { schema: { $ref: string } }> }> }>>;
      components: { schemas: Record<string, { properties: Record<string, { default?: unknown }>; required: string[] }> };
    };
    expect(doc.openapi).toBe('3.1.0');
    const generateOp = doc.paths['/api/v1/generate-image/']?.post;
    const statusOp = doc.paths['/api/v1/generation-status/{task_id}']?.get;
    expect(Object.keys(generateOp?.responses ?? {}).sort()).toEqual(['200', '401', '402', '403', '409', '413', '422', '429', '503']);
    expect(Object.keys(statusOp?.responses ?? {}).sort()).toEqual(['200', '401', '404']);
    const schemaOf = (ref: string | undefined) => doc.components.schemas[ref?.replace('#/components/schemas/', '') ?? '']!;
    const request = schemaOf(generateOp?.requestBody?.content['application/json']?.schema.$ref);
    const created = schemaOf(generateOp?.responses['200']?.content?.['application/json']?.schema.$ref);
    const status = schemaOf(statusOp?.responses['200']?.content?.['application/json']?.schema.$ref);
    expect(schemaOf(generateOp?.responses['422']?.content?.['application/json']?.schema.$ref).required).toEqual(['detail']);
    expect(Object.keys(created.properties)).toEqual(['task_id']);
    expect(status.required).toEqual(['task_id', 'status', 'progress', 'result', 'error']);
    expect(Object.keys(request.properties)).toEqual(OLD_FIELDS);
    expect(request.required).toEqual(['prompt']);
    expect(request.properties.steps?.default).toBe(20);

    // The endpoint reads each documented field: a value of the wrong type there is refused at its place.
    const user = await stack.createUser(1);
    for (const field of Object.keys(request.properties)) {
      const refused = await post({ prompt: 'x', [field]: { not: 'valid' } }, user.token);
      expect(refused.status, field).toBe(422);
      expect(((await refused.json()) as Detail).detail[0]?.loc).toEqual(['body', field]);
    }
    expect(await generationCount(user.userId)).toBe(0);
  });
});
