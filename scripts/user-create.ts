/** `npm run user:create -- --email you@example.com --credits 50`: creates a user and prints an API token. */
import { loadConfig } from '../src/config';
import { assertSchemaCurrent } from '../src/db/migrate';
import { parseFlags } from '../src/main/cli';
import { askRunningDev, checkNewUser, createUser, DevDataBusyError, openDatabase, type NewUserResult } from '../src/main/devData';
import { exitOnStartupError } from '../src/main/lifecycle';

const USAGE = `usage: npm run user:create -- --email you@example.com [--credits 10] [--admin]

Creates the user (or sets the credits of an existing one) and prints a new API token.
Uses DATABASE_URL (or APP_DATABASE_URL); without either, the embedded PGlite of \`npm run dev\`
(while dev runs, the user is made by the running dev, so its token works at once).`;

async function main() {
  const values = parseFlags(USAGE, {
    email: { type: 'string' },
    credits: { type: 'string', default: '10' },
    admin: { type: 'boolean', default: false },
  });
  const request = checkNewUser(values);
  const config = loadConfig();
  let user: NewUserResult;
  try {
    const opened = await openDatabase(config, 'npm run user:create');
    try {
      await assertSchemaCurrent(opened.db);
      user = await createUser(opened.db, request);
    } finally {
      await opened.close();
    }
  } catch (err) {
    if (!(err instanceof DevDataBusyError)) throw err;
    user = await askRunningDev(request, err);
  }
  process.stdout.write(`user ${user.email} (${user.userId}) has ${user.credits} photo credits\ntoken: ${user.token}\n`);
}

main().catch((err: unknown) => exitOnStartupError(err));
