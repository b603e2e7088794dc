/** `npm run user:create -- --email you@example.com --credits 50`: creates a user and prints an API token. */
import { parseArgs } from 'node:util';
import { createUserWithToken } from '../src/auth/tokens';
import { ConfigError, loadConfig } from '../src/config';
import { createDb, databaseTarget } from '../src/db/knex';
import { assertSchemaCurrent } from '../src/db/migrate';
import { exitOnStartupError } from '../src/main/lifecycle';
import { DEV_PGLITE_DIR } from '../src/main/devDefaults';

async function main() {
  const { values } = parseArgs({
    options: { email: { type: 'string' }, credits: { type: 'string', default: '10' }, admin: { type: 'boolean', default: false } },
    strict: true,
  });
  const email = values.email?.trim() ?? '';
  if (!/^[^@\s]+@[^@\s]+$/.test(email)) throw new ConfigError('--email must be an email address, e.g. --email you@example.com');
  const credits = Number(values.credits);
  if (!Number.isSafeInteger(credits) || credits < 0) throw new ConfigError('--credits must be a whole number ≥ 0');
  const config = loadConfig();
  const target = databaseTarget(config, DEV_PGLITE_DIR);
  const db = await createDb(target);
  try {
    await assertSchemaCurrent(db);
    const { userId, token } = await createUserWithToken(db, { email, credits, isAdmin: values.admin });
    process.stdout.write(`user ${email} (${userId}) has ${credits} photo credits\ntoken: ${token}\n`);
  } finally {
    await db.destroy();
  }
}

main().catch((err: unknown) => exitOnStartupError(err));
