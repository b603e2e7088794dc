import type { Env } from '../config';

/** Where `npm run dev` keeps its embedded state (PGlite, a private Redis, the local outbox). */
export const DEV_DATA_DIR = '.data';
export const DEV_PGLITE_DIR = `${DEV_DATA_DIR}/pglite`;
export const DEV_REDIS_DIR = `${DEV_DATA_DIR}/redis`;
/** Dev's FILES_URL_SECRET when none is set: made once, so image links survive a restart of dev. */
export const DEV_FILES_URL_SECRET_FILE = `${DEV_DATA_DIR}/files-url.secret`;

/**
 * `npm run dev`'s environment: its own defaults under whatever the environment sets. It puts a
 * working token into the GraphiQL page, so it listens on this machine only unless HOST says
 * otherwise; new accounts may generate before they verify their address (the banner says so); and
 * its log is for a person at a terminal: pretty lines unless LOG_FORMAT=json asks for JSON.
 */
export function devEnvironment(env: Env): Env {
  return { HOST: '127.0.0.1', EMAIL_VERIFICATION_REQUIRED: 'false', LOG_FORMAT: 'pretty', ...env };
}
