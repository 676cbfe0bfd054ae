/**
 * Dashboard sessions (issue 15, section 4): a browser signs in once with an API token and then
 * carries a `__Host-` cookie instead. The cookie is a random id, stored hashed; the session is
 * one more way to be the token's principal, with the token's role. Writes made with a cookie must
 * also prove they come from the dashboard's own page: the same origin, and the CSRF value only a
 * page of that origin can read.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { WritError } from '@writ/spiffe';
import { hashToken } from '../attest/join-token.ts';
import type { AdminToken, Store } from '../store/types.ts';

export const SESSION_COOKIE = '__Host-writ-session';
export const CSRF_HEADER = 'x-writ-csrf';
/** A session lasts at most this long (and never past its token's expiry). */
export const SESSION_TTL_MS = 12 * 3_600_000;

const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD']);
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

/** A new session id: 32 random bytes. */
export const newSessionId = (): string => randomBytes(32).toString('base64url');

/** The CSRF value of a session, derived from its id (the server stores only its hash), so the page can ask for it again after a reload. */
export const csrfOf = (sessionId: string): string => createHash('sha256').update('writ-ui-csrf\0').update(sessionId).digest('base64url');

/** The value of the session cookie, undefined when the request carries none. */
export function sessionCookieOf(raw: IncomingMessage): string | undefined {
  const header = raw.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** The Set-Cookie header value that sets (or, with `maxAgeS` 0, clears) the session cookie. */
export const sessionCookie = (value: string, maxAgeS: number): string =>
  `${SESSION_COOKIE}=${value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=${Math.max(0, Math.floor(maxAgeS))}`;

/**
 * A browser's request is same-origin when its Origin is this very host over HTTPS: a cross-site
 * page cannot forge the Origin header, and cannot make a browser send a Host it did not ask for.
 */
export function checkSameOrigin(raw: IncomingMessage): void {
  const origin = raw.headers.origin;
  const host = raw.headers.host;
  if (!origin || !host || origin !== `https://${host}`)
    throw new WritError(
      'ERR_CSRF_ORIGIN',
      origin ? `cross-origin request from ${origin.slice(0, 100)} refused` : 'a write with a session cookie needs an Origin header',
    );
}

const sameHash = (a: string, b: string): boolean => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

/** The token behind the request's session cookie; for a write, also the origin and CSRF checks. */
export async function authenticateSession(raw: IncomingMessage, cookie: string, store: Store, now: number): Promise<AdminToken> {
  const found = SESSION_ID.test(cookie) ? await store.findUiSession(hashToken(cookie), now) : undefined;
  if (!found) throw new WritError('ERR_SESSION_INVALID', 'the dashboard session is not valid (unknown, signed out or expired); sign in again');
  if (!SAFE_METHODS.has(raw.method ?? 'GET')) {
    checkSameOrigin(raw);
    const csrf = raw.headers[CSRF_HEADER];
    if (typeof csrf !== 'string' || !sameHash(hashToken(csrf), found.session.csrfHash))
      throw new WritError('ERR_CSRF_TOKEN', `a write with a session cookie needs the session's ${CSRF_HEADER} header`);
  }
  return found.token;
}
