/** Where `npm run dev` keeps its embedded state (PGlite, a private Redis, the local outbox). */
export const DEV_DATA_DIR = '.data';
export const DEV_PGLITE_DIR = `${DEV_DATA_DIR}/pglite`;
export const DEV_REDIS_DIR = `${DEV_DATA_DIR}/redis`;
/** Dev's FILES_URL_SECRET when none is set: made once, so image links survive a restart of dev. */
export const DEV_FILES_URL_SECRET_FILE = `${DEV_DATA_DIR}/files-url.secret`;
