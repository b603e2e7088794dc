/**
 * Passwords: Argon2id at OWASP's minimum (19 MiB, 2 iterations, 1 lane), hashed on libuv's thread
 * pool by @node-rs/argon2 (Node 20 has no argon2 of its own), so the event loop never waits for it.
 */
import { hash, verify, type Algorithm } from '@node-rs/argon2';

/** `Algorithm.Argon2id`: the package's const enum cannot be read under verbatimModuleSyntax. */
const ARGON2ID_ALGORITHM = 2 as Algorithm;
const ARGON2ID = { algorithm: ARGON2ID_ALGORITHM, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;

/** A password longer than this is refused before hashing (hashing cost grows with it). */
export const PASSWORD_MAX_LENGTH = 1024;

export const hashPassword = (password: string): Promise<string> => hash(password, ARGON2ID);

/**
 * A hash of nothing anyone knows, checked when the address has no account (or no password), so
 * that answering "wrong email or password" takes as long either way.
 */
let decoy: Promise<string> | undefined;

/** True when `password` matches `stored`; with no stored hash, spends the same time and says false. */
export async function checkPassword(stored: string | null, password: string): Promise<boolean> {
  if (stored === null) {
    decoy ??= hashPassword(`decoy-${Math.random()}`);
    await verify(await decoy, password).catch(() => false);
    return false;
  }
  try {
    return await verify(stored, password);
  } catch {
    return false;
  }
}
