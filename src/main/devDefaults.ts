/** Where `npm run dev` keeps its embedded state (PGlite, a private Redis, the local outbox). */
export const DEV_DATA_DIR = '.data';
export const DEV_PGLITE_DIR = `${DEV_DATA_DIR}/pglite`;
export const DEV_REDIS_DIR = `${DEV_DATA_DIR}/redis`;
