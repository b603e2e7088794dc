/**
 * Accounts end to end against a real SMTP server (smtp-server, started here): sign-up mails a link
 * whose token verifies the address once; a duplicate sign-up looks the same from outside; sessions,
 * sign-out, password reset (which ends every session), API tokens, admin grants and the credit
 * history; a 4xx reply is retried and then delivered, a 5xx fails at once; and a flood of slow mails
 * never holds up a generation.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { graphql } from '../gql';
import type { HistoryQuery } from '../gql/graphql';
import { gql, type GqlResult, codeOf } from '../helpers/graphql';
import { linkIn, startSmtp, type TestSmtp } from '../helpers/smtp';
import { startStack, type Stack } from '../helpers/stack';
import { createUserWithToken, hashToken, issueToken } from '../../src/auth/tokens';
import { JobProducer } from '../../src/jobs/queues';
import { createLogger } from '../../src/logger';
import { events, generate, watch } from './helpers';
import { until } from '../helpers/wait';

const SignUpDoc = graphql(`
  mutation SignUp($email: String!, $password: String!) {
    signUp(email: $email, password: $password) { email message }
  }
`);
const VerifyDoc = graphql(`
  mutation Verify($token: String!) {
    verifyEmail(token: $token) { id email }
  }
`);
const SignInDoc = graphql(`
  mutation SignIn($email: String!, $password: String!) {
    signIn(email: $email, password: $password) { token expiresAt user { id email } }
  }
`);
const SignOutDoc = graphql(`
  mutation SignOut { signOut }
`);
const MeDoc = graphql(`
  query Account {
    me { id email emailVerified photoCredits apiTokens { id name } notificationSettings { imagesReady } }
  }
`);
const RequestResetDoc = graphql(`
  mutation RequestReset($email: String!) { requestPasswordReset(email: $email) }
`);
const ResetDoc = graphql(`
  mutation Reset($token: String!, $password: String!) { resetPassword(token: $token, password: $password) }
`);
const CreateTokenDoc = graphql(`
  mutation CreateToken($name: String!) { createApiToken(name: $name) { token apiToken { id name } } }
`);
const RevokeTokenDoc = graphql(`
  mutation RevokeToken($id: ID!) { revokeApiToken(id: $id) }
`);
const GrantDoc = graphql(`
  mutation Grant($userId: ID!, $amount: Int!, $reason: String!) {
    grantPhotoCredits(userId: $userId, amount: $amount, reason: $reason) { id photoCredits }
  }
`);
const HistoryDoc = graphql(`
  query History($first: Int, $after: String) {
    me { creditHistory(first: $first, after: $after) { edges { cursor node { kind amount generationId reason } } pageInfo { hasNextPage endCursor } } }
  }
`);
const NotifyDoc = graphql(`
  mutation Notify($imagesReady: Boolean) { updateNotificationSettings(imagesReady: $imagesReady) { imagesReady } }
`);

const PASSWORD = 'correct horse battery';
const newEmail = () => `Person.${randomBytes(4).toString('hex')}@Example.com`;


describe('accounts, with a real SMTP server', () => {
  let smtp: TestSmtp;
  let stack: Stack;
  beforeAll(async () => {
    smtp = await startSmtp();
    stack = await startStack({
      env: {
        SMTP_URL: smtp.url,
        MAIL_FROM: 'Image service <images@example.com>',
        SIGNUP_PHOTO_CREDITS: '3',
        // This file signs up, signs in and resets dozens of times from one address (one address
        // more than five times, to compare timings); the limits have their own test (limits.test.ts).
        RATE_LIMIT_SIGNIN_PER_ADDRESS: '0',
        RATE_LIMIT_SIGNIN_PER_IP: '0',
        RATE_LIMIT_SIGNUP_PER_ADDRESS: '0',
        RATE_LIMIT_SIGNUP_PER_IP: '0',
        RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS: '0',
        RATE_LIMIT_PASSWORD_RESET_PER_IP: '0',
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
    await smtp?.close();
  });

  /** Signs up, follows the mail's token, signs in: a session token. */
  async function account(email = newEmail()) {
    expect((await gql(stack.baseUrl, SignUpDoc, { email, password: PASSWORD })).errors).toBeUndefined();
    const mail = await smtp.waitFor(email, (m) => m.parsed.subject === 'Confirm your email address');
    const token = linkIn(mail).searchParams.get('token')!;
    expect((await gql(stack.baseUrl, VerifyDoc, { token })).errors).toBeUndefined();
    const session = await gql(stack.baseUrl, SignInDoc, { email, password: PASSWORD });
    return { email: email.toLowerCase(), token: session.data!.signIn.token, userId: session.data!.signIn.user.id };
  }

  it('signs up with a mail whose link verifies the address once; generating waits for it', async () => {
    const email = newEmail();
    const answer = await gql(stack.baseUrl, SignUpDoc, { email: `  ${email} `, password: PASSWORD });
    expect(answer.errors).toBeUndefined();
    expect(answer.data!.signUp.email).toBe(email.toLowerCase());

    const mail = await smtp.waitFor(email);
    expect(mail.parsed.from?.text).toBe('"Image service" <images@example.com>');
    expect(mail.parsed.to && 'text' in mail.parsed.to ? mail.parsed.to.text : '').toBe(email.toLowerCase());
    expect(mail.parsed.subject).toBe('Confirm your email address');
    expect(mail.parsed.messageId).toBeTruthy();
    expect(mail.parsed.html).toContain('<a href="');
    const link = linkIn(mail);
    expect(`${link.origin}`).toBe(stack.config.http.publicUrl);
    expect(link.pathname).toBe('/account/verify-email');
    const token = link.searchParams.get('token')!;

    // Not verified yet: no signing in, with the answer a wrong password gets.
    const early = await gql(stack.baseUrl, SignInDoc, { email, password: PASSWORD });
    expect(codeOf(early)).toBe('UNAUTHENTICATED');
    expect(early.errors![0]!.message).toBe((await gql(stack.baseUrl, SignInDoc, { email: newEmail(), password: PASSWORD })).errors![0]!.message);
    // A token that exists before the address is verified (an operator's) cannot generate either.
    const userId = (await stack.tdb.db('users').where({ email: email.toLowerCase() }).first<{ id: string }>('id'))!.id;
    const session = (await issueToken(stack.tdb.db, userId, 'test', { kind: 'session', ttlS: 3600 })).token;
    expect((await gql(stack.baseUrl, MeDoc, {}, session)).data!.me).toMatchObject({ emailVerified: false, photoCredits: 3 });
    const refused = await gql(stack.baseUrl, graphql(`mutation Early($input: GenerateImageInput!) { generateImage(input: $input) { id } }`), { input: { prompt: 'too soon' } }, session);
    expect(codeOf(refused)).toBe('EMAIL_NOT_VERIFIED');

    // The page the link opens changes nothing; its button does.
    const page = await fetch(link);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<form method="post">');
    expect((await gql(stack.baseUrl, MeDoc, {}, session)).data!.me!.emailVerified).toBe(false);
    const confirmed = await fetch(link, { method: 'POST', body: new URLSearchParams({ token }) });
    expect(confirmed.status).toBe(200);
    expect(await confirmed.text()).toContain('is confirmed');
    expect((await gql(stack.baseUrl, MeDoc, {}, session)).data!.me!.emailVerified).toBe(true);

    // Once only.
    const again = await gql(stack.baseUrl, VerifyDoc, { token });
    expect(codeOf(again)).toBe('BAD_USER_INPUT');
    expect(codeOf(await gql(stack.baseUrl, VerifyDoc, { token: 'made-up' }))).toBe('BAD_USER_INPUT');

    // Verified (the cached "not verified" is read again): it signs in and generates with the sign-up credits.
    const signedIn = await gql(stack.baseUrl, SignInDoc, { email, password: PASSWORD });
    expect(signedIn.errors).toBeUndefined();
    const { id } = await generate(stack, signedIn.data!.signIn.token, { steps: 3 });
    expect(events(await watch(stack.baseUrl, id, session).done).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
  });

  it("gives a stranger who signed up first with someone's address nothing: the owner's link sets the owner's password", async () => {
    const email = newEmail().toLowerCase();
    // A stranger signs up with the address first, then its owner.
    await gql(stack.baseUrl, SignUpDoc, { email, password: 'the stranger password' });
    const strangers = await smtp.waitFor(email, (m) => m.parsed.subject === 'Confirm your email address');
    expect(codeOf(await gql(stack.baseUrl, SignInDoc, { email, password: 'the stranger password' }))).toBe('UNAUTHENTICATED');
    await gql(stack.baseUrl, SignUpDoc, { email, password: PASSWORD });
    const owners = await smtp.waitFor(email, (m) => m.parsed.subject === 'Confirm your email address' && m !== strangers);
    // The owner follows the link of their own sign-up.
    expect((await gql(stack.baseUrl, VerifyDoc, { token: linkIn(owners).searchParams.get('token')! })).errors).toBeUndefined();
    expect((await gql(stack.baseUrl, SignInDoc, { email, password: PASSWORD })).errors).toBeUndefined();
    expect(codeOf(await gql(stack.baseUrl, SignInDoc, { email, password: 'the stranger password' }))).toBe('UNAUTHENTICATED');
    // The other link of the address stopped working when one was followed.
    expect(codeOf(await gql(stack.baseUrl, VerifyDoc, { token: linkIn(strangers).searchParams.get('token')! }))).toBe('BAD_USER_INPUT');
    // signIn's user is the caller's own account, readable in the same answer.
    const session = await gql(stack.baseUrl, graphql(`mutation SignInWhole($email: String!, $password: String!) { signIn(email: $email, password: $password) { user { emailVerified photoCredits } } }`), { email, password: PASSWORD });
    expect(session.data!.signIn.user).toEqual({ emailVerified: true, photoCredits: 3 });
  });

  it('answers a sign-up for a taken address exactly like a new one; only the mailbox learns which', async () => {
    const taken = await account();
    const fresh = newEmail();
    const time = async (email: string) => {
      const started = performance.now();
      const r = await gql(stack.baseUrl, SignUpDoc, { email, password: 'another password' });
      return { r, ms: performance.now() - started };
    };
    const a = await time(taken.email);
    const b = await time(fresh);
    expect(a.r.errors).toBeUndefined();
    // The same shape and words, with only the address (as given) differing.
    expect(JSON.stringify(a.r).replaceAll(taken.email, '<email>')).toBe(JSON.stringify(b.r).replaceAll(fresh.toLowerCase(), '<email>'));
    const told = await smtp.waitFor(taken.email, (m) => m.parsed.subject === 'You already have an account');
    expect(told.parsed.text).not.toMatch(/https?:\/\//);
    await smtp.waitFor(fresh, (m) => m.parsed.subject === 'Confirm your email address');
    // The same order of magnitude: both hash a password (medians of a few tries each).
    const median = (xs: number[]) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const takenMs: number[] = [];
    const freshMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      takenMs.push((await time(taken.email)).ms);
      freshMs.push((await time(newEmail())).ms);
    }
    const ratio = median(takenMs) / median(freshMs);
    expect(ratio, `taken ${median(takenMs)} ms, new ${median(freshMs)} ms`).toBeGreaterThan(0.1);
    expect(ratio, `taken ${median(takenMs)} ms, new ${median(freshMs)} ms`).toBeLessThan(10);
    // The old password still signs in; the attempt changed nothing.
    expect((await gql(stack.baseUrl, SignInDoc, { email: taken.email, password: PASSWORD })).errors).toBeUndefined();
  });

  it('refuses a mail link past EMAIL_TOKEN_TTL_S and a session past SESSION_TTL_S', async () => {
    const email = newEmail();
    await gql(stack.baseUrl, SignUpDoc, { email, password: PASSWORD });
    const token = linkIn(await smtp.waitFor(email)).searchParams.get('token')!;
    // Time moves on: the link's expiry is now behind it.
    await stack.tdb.db('email_tokens').where({ token_hash: hashToken(token) }).update({ expires_at: stack.tdb.db.raw("now() - interval '1 second'") });
    expect(codeOf(await gql(stack.baseUrl, VerifyDoc, { token }))).toBe('BAD_USER_INPUT');

    const verified = await account();
    const session = (await gql(stack.baseUrl, SignInDoc, { email: verified.email, password: PASSWORD })).data!.signIn;
    expect(new Date(session.expiresAt).getTime() - Date.now()).toBeGreaterThan(29 * 86_400_000);
    await stack.tdb.db('api_tokens').where({ token_hash: hashToken(session.token) }).update({ expires_at: stack.tdb.db.raw("now() - interval '1 second'") });
    expect(codeOf(await gql(stack.baseUrl, MeDoc, {}, session.token))).toBe('UNAUTHENTICATED');
    // Tokens are stored as their hash only.
    expect(await stack.tdb.db('api_tokens').where({ token_hash: session.token }).first()).toBeUndefined();
    expect(await stack.tdb.db('email_tokens').where({ token_hash: token }).first()).toBeUndefined();
  });

  it('refuses bad addresses, short passwords and wrong passwords with clear codes', async () => {
    for (const email of ['not an address', 'x<someone@example.com>', 'a@b', 'a,b@example.com', '"quoted"@example.com']) {
      expect(codeOf(await gql(stack.baseUrl, SignUpDoc, { email, password: PASSWORD })), email).toBe('BAD_USER_INPUT');
    }
    expect(codeOf(await gql(stack.baseUrl, SignUpDoc, { email: newEmail(), password: 'short' }))).toBe('BAD_USER_INPUT');
    const { email } = await account();
    expect(codeOf(await gql(stack.baseUrl, SignInDoc, { email, password: 'wrong password' }))).toBe('UNAUTHENTICATED');
    expect(codeOf(await gql(stack.baseUrl, SignInDoc, { email: newEmail(), password: PASSWORD }))).toBe('UNAUTHENTICATED');
  });

  it('signs out a session, and resets a password by mail, which ends every session', async () => {
    const { email, token: first } = await account();
    const second = (await gql(stack.baseUrl, SignInDoc, { email, password: PASSWORD })).data!.signIn.token;
    expect((await gql(stack.baseUrl, SignOutDoc, {}, first)).data!.signOut).toBe(true);
    expect(codeOf(await gql(stack.baseUrl, MeDoc, {}, first))).toBe('UNAUTHENTICATED');
    expect((await gql(stack.baseUrl, MeDoc, {}, second)).data!.me!.email).toBe(email);

    // An address without an account gets the same answer and no mail.
    expect((await gql(stack.baseUrl, RequestResetDoc, { email: newEmail() })).data!.requestPasswordReset).toBe(true);
    expect((await gql(stack.baseUrl, RequestResetDoc, { email })).data!.requestPasswordReset).toBe(true);
    const mail = await smtp.waitFor(email, (m) => m.parsed.subject === 'Reset your password');
    const link = linkIn(mail);
    expect(link.pathname).toBe('/account/reset-password');
    const form = await fetch(link);
    expect(await form.text()).toContain('type="password"');
    const set = await fetch(link, { method: 'POST', body: new URLSearchParams({ token: link.searchParams.get('token')!, password: 'a brand new secret' }) });
    expect(set.status).toBe(200);
    expect(codeOf(await gql(stack.baseUrl, MeDoc, {}, second))).toBe('UNAUTHENTICATED');
    expect(codeOf(await gql(stack.baseUrl, SignInDoc, { email, password: PASSWORD }))).toBe('UNAUTHENTICATED');
    expect((await gql(stack.baseUrl, SignInDoc, { email, password: 'a brand new secret' })).errors).toBeUndefined();
    // The link worked once.
    const reused = await gql(stack.baseUrl, ResetDoc, { token: link.searchParams.get('token')!, password: 'yet another secret' });
    expect(codeOf(reused)).toBe('BAD_USER_INPUT');
  });

  it('makes API tokens that are shown once, listed without their secret, and revoked', async () => {
    const { token: session } = await account();
    const made = await gql(stack.baseUrl, CreateTokenDoc, { name: 'ci pipeline' }, session);
    const { token, apiToken } = made.data!.createApiToken;
    expect(token).toMatch(/^sdk_/);
    expect((await gql(stack.baseUrl, MeDoc, {}, token)).data!.me!.apiTokens).toEqual([{ id: apiToken.id, name: 'ci pipeline' }]);
    expect((await gql(stack.baseUrl, RevokeTokenDoc, { id: apiToken.id }, session)).data!.revokeApiToken).toBe(true);
    expect(codeOf(await gql(stack.baseUrl, MeDoc, {}, token))).toBe('UNAUTHENTICATED');
    expect((await gql(stack.baseUrl, RevokeTokenDoc, { id: apiToken.id }, session)).data!.revokeApiToken).toBe(false);
    expect(codeOf(await gql(stack.baseUrl, CreateTokenDoc, { name: '  ' }, session))).toBe('BAD_USER_INPUT');
  });

  it('lets admins grant credits with a reason, books every change, and pages through the history', async () => {
    const { token, userId } = await account();
    const admin = await createUserWithToken(stack.tdb.db, { email: `admin-${randomBytes(3).toString('hex')}@example.com`, credits: 0, isAdmin: true });
    expect(codeOf(await gql(stack.baseUrl, GrantDoc, { userId, amount: 5, reason: 'self-service' }, token))).toBe('FORBIDDEN');
    const granted = await gql(stack.baseUrl, GrantDoc, { userId, amount: 5, reason: 'beta tester' }, admin.token);
    expect(granted.errors).toBeUndefined();
    expect(codeOf(await gql(stack.baseUrl, GrantDoc, { userId, amount: -100, reason: 'too much' }, admin.token))).toBe('BAD_USER_INPUT');
    expect(codeOf(await gql(stack.baseUrl, GrantDoc, { userId: crypto.randomUUID(), amount: 1, reason: 'nobody' }, admin.token))).toBe('NOT_FOUND');

    const { id } = await generate(stack, token, { steps: 3, batchSize: 2 });
    await watch(stack.baseUrl, id, token).done;
    stack.sim.pause();
    const cancelled = await generate(stack, token, { steps: 3 });
    await gql(stack.baseUrl, graphql(`mutation StopIt($id: ID!) { cancelGeneration(id: $id) { id } }`), { id: cancelled.id }, token);
    stack.sim.resume();
    await watch(stack.baseUrl, cancelled.id, token).done;

    const pages: Array<{ kind: string; amount: number; generationId?: string | null; reason?: string | null }> = [];
    let after: string | null = null;
    for (;;) {
      const page: GqlResult<HistoryQuery> = await gql(stack.baseUrl, HistoryDoc, { first: 2, after }, token);
      const conn: NonNullable<HistoryQuery['me']>['creditHistory'] = page.data!.me!.creditHistory;
      pages.push(...conn.edges.map((e) => e.node));
      if (!conn.pageInfo.hasNextPage) break;
      after = conn.pageInfo.endCursor!;
    }
    expect(pages).toEqual([
      { kind: 'REFUND', amount: 1, generationId: cancelled.id, reason: null },
      { kind: 'CHARGE', amount: -1, generationId: cancelled.id, reason: null },
      { kind: 'CHARGE', amount: -2, generationId: id, reason: null },
      { kind: 'GRANT', amount: 5, generationId: null, reason: 'beta tester' },
      { kind: 'GRANT', amount: 3, generationId: null, reason: 'sign-up' },
    ]);
    expect((await gql(stack.baseUrl, MeDoc, {}, token)).data!.me!.photoCredits).toBe(6);
    expect(codeOf(await gql(stack.baseUrl, HistoryDoc, { first: 2, after: 'bm90LW91cnM' }, token))).toBe('BAD_USER_INPUT');
    expect(codeOf(await gql(stack.baseUrl, HistoryDoc, { first: 1000 }, token))).toBe('BAD_USER_INPUT');
  });

  it('mails "images ready" after a success unless switched off', async () => {
    const { email, token } = await account();
    const jobsKey = `${stack.config.redis.prefix}:low_priority:jobs`;
    // The follow-ups are queued before SUCCEEDED is published; held by the server, a queued mail
    // stays in the queue's records until the server answers.
    smtp.hold();
    const first = await generate(stack, token, { steps: 3, prompt: 'a lighthouse at dusk' });
    await watch(stack.baseUrl, first.id, token).done;
    expect(await stack.redis.hexists(jobsKey, `sendEmail:imagesReady:${first.id}`)).toBe(1);
    smtp.release();
    const ready = await smtp.waitFor(email, (m) => m.parsed.subject?.startsWith('Images ready') ?? false);
    expect(ready.parsed.text).toContain(first.id);
    expect(ready.parsed.text).toContain('a lighthouse at dusk');

    expect((await gql(stack.baseUrl, NotifyDoc, { imagesReady: false }, token)).data!.updateNotificationSettings.imagesReady).toBe(false);
    smtp.hold();
    const second = await generate(stack, token, { steps: 3 });
    await watch(stack.baseUrl, second.id, token).done;
    expect(await stack.redis.hexists(jobsKey, `sendEmail:imagesReady:${second.id}`)).toBe(0);
    smtp.release();
  });

  it('retries a mail answered 4xx and delivers it; fails a mail answered 5xx at once', async () => {
    const deferred = newEmail().toLowerCase();
    const refused = newEmail().toLowerCase();
    smtp.replyWith(deferred, 451, 2);
    smtp.replyWith(refused, 550, 5);
    const failedBefore = stack.worker!.counters.failed;
    const producer = new JobProducer(stack.config, createLogger('silent'));
    await producer.enqueue('sendEmail', `t:${deferred}`, { to: deferred, template: 'alreadyRegistered', params: {} });
    await producer.enqueue('sendEmail', `t:${refused}`, { to: refused, template: 'alreadyRegistered', params: {} });
    await producer.close();
    await smtp.waitFor(deferred);
    expect(smtp.tries(deferred)).toBe(3);
    await until(() => stack.worker!.counters.failed > failedBefore, 'the refused mail to fail');
    expect(smtp.tries(refused)).toBe(1);
    expect(smtp.received.filter((m) => m.to === refused)).toHaveLength(0);
  });

  it('starts a generation at once while 300 slow mails wait on low_priority', async () => {
    const { token } = await account();
    smtp.hold();
    const producer = new JobProducer(stack.config, createLogger('silent'));
    const flood = Array.from({ length: 300 }, (_, i) => `flood-${i}-${randomBytes(3).toString('hex')}@example.com`);
    for (const to of flood) await producer.enqueue('sendEmail', `flood:${to}`, { to, template: 'alreadyRegistered', params: {} });
    await producer.close();
    const { id } = await generate(stack, token, { steps: 3 });
    const list = events(await watch(stack.baseUrl, id, token).done);
    expect(list.at(-1)!.status).toBe('SUCCEEDED');
    // The order of events: the generation finished while every mail of the flood still waited.
    expect(smtp.received.filter((m) => m.to.startsWith('flood-'))).toHaveLength(0);
    smtp.release();
    await until(() => smtp.received.filter((m) => m.to.startsWith('flood-')).length === flood.length, 'the flood to be delivered');
  });
});
