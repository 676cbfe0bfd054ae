/** Shape checks for answers the agent receives: a malformed answer is refused whole, before anything is applied. */
import { WritError } from '@writ/spiffe';

export type Fields = Record<string, unknown>;

/** A checker that names the message it refuses. */
export function refuse(what: string): (why: string) => never {
  return (why) => {
    throw new WritError('ERR_REQUEST_FAILED', `the server sent a malformed ${what}: ${why}`);
  };
}

export function isObject(v: unknown): v is Fields {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function isStrings(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

/** An RFC 3339 time the answer carries (expiresAt), as epoch milliseconds. */
export function isTime(v: unknown): v is string {
  return typeof v === 'string' && Number.isFinite(Date.parse(v));
}
