/** Ids a client sends: checked before they reach a uuid column, so a malformed one is "not found", never a database error. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The id in canonical (lower-case) form, or null when it is not a UUID. */
export const parseUuid = (raw: string): string | null => (UUID.test(raw) ? raw.toLowerCase() : null);
