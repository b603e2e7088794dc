/**
 * The logs never hold a secret. A whole stack at LOG_LEVEL=debug, mailing through an SMTP server that
 * requires a login, goes through what a person does: sign up, follow the mail's link, sign in with the
 * password, generate and watch, make an API token and use it, reset the password from the mail's
 * link and sign in with the new one. Then no log line may contain any secret used on the way: either
 * password, any token (sessions, the API token, both mail tokens), an Authorization header's value,
 * FILES_URL_SECRET or the SMTP password.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { graphql } from '../gql';
import { gql } from '../helpers/graphql';
import { linkIn, startSmtp, type TestSmtp } from '../helpers/smtp';
import { startStack, type Stack } from '../helpers/stack';
import { events, generate, watch } from '../integration/helpers';

const SignUpDoc = graphql(`
  mutation SecretsSignUp($email: String!, $password: String!) { signUp(email: $email, password: $password) { email } }
`);
const VerifyDoc = graphql(`
  mutation SecretsVerify($token: String!) { verifyEmail(token: $token) { id } }
`);
const SignInDoc = graphql(`
  mutation SecretsSignIn($email: String!, $password: String!) { signIn(email: $email, password: $password) { token } }
`);
const CreateTokenDoc = graphql(`
  mutation SecretsCreateToken($name: String!) { createApiToken(name: $name) { token } }
`);
const MeDoc = graphql(`
  query SecretsMe { me { id photoCredits } }
`);
const RequestResetDoc = graphql(`
  mutation SecretsRequestReset($email: String!) { requestPasswordReset(email: $email) }
`);

describe('the logs', () => {
  const lines: string[] = [];
  const smtpAuth = { user: 'mailer', pass: `smtp-${randomBytes(12).toString('hex')}` };
  let smtp: TestSmtp;
  let stack: Stack;
  beforeAll(async () => {
    smtp = await startSmtp({ auth: smtpAuth });
    stack = await startStack({ env: { LOG_LEVEL: 'debug', SMTP_URL: smtp.url }, logLines: lines });
  });
  afterAll(async () => {
    await stack?.close();
    await smtp?.close();
  });

  it('hold none of the secrets of a sign-up, a generation, an API token and a password reset', { timeout: 120_000 }, async () => {
    const email = `secrets-${randomBytes(4).toString('hex')}@example.com`;
    const password = `first-${randomBytes(12).toString('hex')}`;
    const newPassword = `second-${randomBytes(12).toString('hex')}`;

    expect(await gql(stack.baseUrl, SignUpDoc, { email, password })).toEqual({ data: { signUp: { email } } });
    const verifyToken = linkIn(await smtp.waitFor(email)).searchParams.get('token')!;
    expect((await gql(stack.baseUrl, VerifyDoc, { token: verifyToken })).data?.verifyEmail).toBeTruthy();
    const session = (await gql(stack.baseUrl, SignInDoc, { email, password })).data!.signIn.token;

    const generation = await generate(stack, session, { steps: 3, width: 64, height: 64, prompt: 'a logged lighthouse' });
    expect(events(await watch(stack.baseUrl, generation.id, session).done).at(-1)).toMatchObject({ status: 'SUCCEEDED' });

    const apiToken = (await gql(stack.baseUrl, CreateTokenDoc, { name: 'ci' }, session)).data!.createApiToken.token;
    expect((await gql(stack.baseUrl, MeDoc, {}, apiToken)).data?.me?.id).toBeTruthy();
    // A wrong token is logged as refused, never as itself.
    const forged = `sdk_${randomBytes(32).toString('base64url')}`;
    expect((await gql(stack.baseUrl, MeDoc, {}, forged)).errors).toBeDefined();

    expect(await gql(stack.baseUrl, RequestResetDoc, { email })).toEqual({ data: { requestPasswordReset: true } });
    const resetMail = await smtp.waitFor(email, (m) => m.parsed.subject?.toLowerCase().includes('password') ?? false);
    const resetLink = linkIn(resetMail);
    const resetToken = resetLink.searchParams.get('token')!;
    // The mail's page, as a person uses it: its form posts the token and the new password.
    const reset = await fetch(`${stack.baseUrl}${resetLink.pathname}`, { method: 'POST', body: new URLSearchParams({ token: resetToken, password: newPassword }) });
    expect(reset.status).toBe(200);
    const second = (await gql(stack.baseUrl, SignInDoc, { email, password: newPassword })).data!.signIn.token;
    expect((await gql(stack.baseUrl, MeDoc, {}, second)).data?.me?.id).toBeTruthy();

    // The logs were written at debug level, for the API and the worker alike, mails included.
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(parsed.some((l) => l.level === 20)).toBe(true);
    expect(parsed.some((l) => l.generation === generation.id)).toBe(true);
    expect(lines.join('\n')).toMatch(/mail/i);

    const secrets: Record<string, string> = {
      password,
      newPassword,
      verifyToken,
      resetToken,
      session,
      second,
      apiToken,
      forged,
      filesUrlSecret: stack.env.FILES_URL_SECRET!,
      smtpPassword: smtpAuth.pass,
    };
    for (const token of [session, second, apiToken, forged]) secrets[`Bearer ${token.slice(0, 12)}…`] = `Bearer ${token}`;
    const all = lines.join('\n');
    for (const [name, secret] of Object.entries(secrets)) {
      expect(secret.length, name).toBeGreaterThan(16);
      expect(all.includes(secret), `${name} is in the logs`).toBe(false);
      // Also not percent-encoded in a logged URL.
      expect(all.includes(encodeURIComponent(secret)), `${name} (URL-encoded) is in the logs`).toBe(false);
    }
    expect(all).not.toMatch(/Bearer [A-Za-z0-9_-]{8}/);
  });
});
