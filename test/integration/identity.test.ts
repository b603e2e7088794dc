/**
 * The identity rules over the whole API: revokeAllSessions ends every session of the caller at once
 * (the token cache forgets them; with includeApiTokens the API tokens too, and nobody else's), a
 * token's last use shows in apiTokens, and an admin's grant is logged with who made it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/accounts/passwords';
import { createUserWithToken } from '../../src/auth/tokens';
import { graphql } from '../gql';
import { codeOf, gql } from '../helpers/graphql';
import { startStack, type Stack } from '../helpers/stack';
import { until } from '../helpers/wait';

const SignInDoc = graphql(`
  mutation IdentitySignIn($email: String!, $password: String!) {
    signIn(email: $email, password: $password) { token }
  }
`);
const RevokeAllDoc = graphql(`
  mutation IdentityRevokeAll($includeApiTokens: Boolean) { revokeAllSessions(includeApiTokens: $includeApiTokens) }
`);
const MeDoc = graphql(`
  query IdentityMe { me { id apiTokens { name lastUsedAt } } }
`);
const GrantDoc = graphql(`
  mutation IdentityGrant($userId: ID!, $amount: Int!, $reason: String!) {
    grantPhotoCredits(userId: $userId, amount: $amount, reason: $reason) { id }
  }
`);

const PASSWORD = 'a long passphrase';

describe('identity', () => {
  const lines: string[] = [];
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { LOG_LEVEL: 'info' }, logLines: lines });
  });
  afterAll(() => stack?.close());

  /** A user with a password and an API token (named "default"), its address verified. */
  async function person(email: string) {
    const { userId, token } = await createUserWithToken(stack.tdb.db, { email, credits: 0 });
    await stack.tdb.db('users').where({ id: userId }).update({ password_hash: await hashPassword(PASSWORD) });
    const signIn = async () => (await gql(stack.baseUrl, SignInDoc, { email, password: PASSWORD })).data!.signIn.token;
    return { userId, apiToken: token, signIn };
  }
  const me = (token: string) => gql(stack.baseUrl, MeDoc, {}, token);
  const works = async (token: string) => (await me(token)).data?.me?.id !== undefined;

  it('revokeAllSessions ends every session at once, this one included; with includeApiTokens the API tokens too', async () => {
    const alice = await person('alice@example.com');
    const bob = await person('bob@example.com');
    const [one, two] = [await alice.signIn(), await alice.signIn()];
    const bobs = await bob.signIn();
    // All cached by the API (AUTH_CACHE_TTL_MS is 30 s): the revocation must clear them, not wait.
    for (const t of [one, two, alice.apiToken, bobs]) expect(await works(t)).toBe(true);

    const revoked = await gql(stack.baseUrl, RevokeAllDoc, {}, one);
    expect(revoked).toEqual({ data: { revokeAllSessions: 2 } });
    for (const t of [one, two]) expect(codeOf(await me(t))).toBe('UNAUTHENTICATED');
    expect(await works(alice.apiToken)).toBe(true);
    expect(await works(bobs)).toBe(true);

    const three = await alice.signIn();
    expect(await gql(stack.baseUrl, RevokeAllDoc, { includeApiTokens: true }, three)).toEqual({ data: { revokeAllSessions: 2 } });
    for (const t of [three, alice.apiToken]) expect(codeOf(await me(t))).toBe('UNAUTHENTICATED');
    expect(await works(bobs)).toBe(true);
    expect(await works(bob.apiToken)).toBe(true);
    // Without a token there is nothing to revoke.
    expect(codeOf(await gql(stack.baseUrl, RevokeAllDoc, {}))).toBe('UNAUTHENTICATED');
  });

  it("shows an API token's last use, written off the request", async () => {
    const carol = await person('carol@example.com');
    const session = await carol.signIn();
    const listed = async () => (await me(session)).data!.me!.apiTokens;
    expect(await listed()).toEqual([{ name: 'default', lastUsedAt: null }]);
    expect(await works(carol.apiToken)).toBe(true);
    await until(async () => (await listed())[0]?.lastUsedAt !== null, "the API token's last use to be written");
    expect(Number.isNaN(Date.parse((await listed())[0]!.lastUsedAt!))).toBe(false);
  });

  it('logs an admin grant with who made it, to whom, and how much', async () => {
    const admin = await createUserWithToken(stack.tdb.db, { email: 'admin@example.com', credits: 0, isAdmin: true });
    const target = await stack.createUser(0);
    expect(await gql(stack.baseUrl, GrantDoc, { userId: target.userId, amount: 5, reason: 'support ticket 42' }, admin.token)).toEqual({ data: { grantPhotoCredits: { id: target.userId } } });
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.action === 'grantPhotoCredits');
    expect(logged).toEqual([
      expect.objectContaining({ level: 30, admin: admin.userId, adminEmail: 'admin@example.com', target: target.userId, amount: 5, reason: 'support ticket 42' }),
    ]);
  });
});
