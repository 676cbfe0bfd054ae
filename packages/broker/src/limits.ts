/** The bounds every TokenPolicy lives within, in a module of their own so the verifying side needs no YAML reader. */
export const DEFAULT_MAX_DEPTH = 3;
export const MAX_DEPTH_LIMIT = 5;
export const MAX_TTL_MS = 5 * 60_000;
