/**
 * The dashboard at /ui (issue 15, section 4): the static bundle built by scripts/build.mjs into
 * dist/dashboard (hashed asset names, cached for a year), under a strict Content-Security-Policy,
 * and the session routes a browser signs in and out with.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WritError } from '@writ/spiffe';
import { hashToken } from '../attest/join-token.ts';
import type { ApiContext } from './context.ts';
import { DEFAULT_BODY_LIMIT, isoOrNull, object, ok, str, type AddRoute, type Reply } from './http.ts';
import { SESSION_TTL_MS, checkSameOrigin, csrfOf, newSessionId, sessionCookie, sessionCookieOf } from './ui-session.ts';

/** No inline script or style, nothing from elsewhere, never in a frame. */
export const UI_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
const UI_HEADERS = { 'content-security-policy': UI_CSP, 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer' };
const ASSET_NAME = /^[A-Za-z0-9_-]{1,64}-[A-Z0-9]{8}\.(js|css)$/;
const TYPES: Record<string, string> = { js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };
export const UI_BUILD_COMMAND = 'npm run build';

/**
 * Where the bundle is: dist/dashboard at the repository root, seen from the sources
 * (packages/server/src/api) or from the bundled CLI (dist/).
 */
export function defaultUiDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'dashboard'), join(here, '..', '..', '..', '..', 'dist', 'dashboard')];
  return candidates.find((d) => existsSync(join(d, 'index.html'))) ?? candidates[1]!;
}

export function uiRoutes(ctx: ApiContext, add: AddRoute, uiDir = defaultUiDir()): void {
  // Read once found; until then each request looks again (the bundle may be built after the server started).
  const files = new Map<string, string>();
  const read = (name: string): string | undefined => {
    let text = files.get(name);
    if (text === undefined) {
      const path = join(uiDir, name);
      if (!existsSync(path)) return undefined;
      text = readFileSync(path, 'utf8');
      files.set(name, text);
    }
    return text;
  };

  add('GET', '/ui', undefined, 'The web dashboard (sign in with an API token).', (): Reply => {
    const html = read('index.html');
    if (html === undefined)
      throw new WritError(
        'ERR_UI_NOT_BUILT',
        `the dashboard is not built on this server (no ${join(uiDir, 'index.html')}); build it with: ${UI_BUILD_COMMAND}`,
      );
    return { status: 200, body: html, contentType: 'text/html; charset=utf-8', headers: { ...UI_HEADERS, 'cache-control': 'no-cache' } };
  });
  add('GET', '/ui/assets/{file}', undefined, "The dashboard's scripts and styles (hashed names, cached for a year).", (req): Reply => {
    const name = req.params[0]!;
    const text = ASSET_NAME.test(name) ? read(join('assets', name)) : undefined;
    if (text === undefined) throw new WritError('ERR_NOT_FOUND', 'no such dashboard asset');
    return {
      status: 200,
      body: text,
      contentType: TYPES[name.slice(name.lastIndexOf('.') + 1)]!,
      headers: { ...UI_HEADERS, 'cache-control': 'public, max-age=31536000, immutable' },
    };
  });

  add(
    'POST',
    '/ui/session',
    undefined,
    'Sign in to the dashboard with an API token: sets the __Host-writ-session cookie (HttpOnly, Secure, SameSite=Strict) and answers the CSRF value writes need.',
    async (req) => {
      // Signing in is a write too: a cross-site page must not sign a browser in to its own account.
      checkSameOrigin(req.raw);
      const token = str(object(req.body), 'token', { required: true, max: 512 })!;
      const now = ctx.clock();
      const tok = await ctx.store.findAdminToken(hashToken(token));
      if (!tok || (tok.expiresAt !== null && tok.expiresAt <= now))
        throw new WritError('ERR_UNAUTHENTICATED', 'the API token is not valid (unknown, revoked or expired)');
      const id = newSessionId();
      const expiresAt = Math.min(now + SESSION_TTL_MS, tok.expiresAt ?? Number.POSITIVE_INFINITY);
      const csrf = csrfOf(id);
      await ctx.store.createUiSession({ idHash: hashToken(id), tokenId: tok.id, csrfHash: hashToken(csrf), createdAt: now, expiresAt });
      return {
        status: 201,
        body: { role: tok.role, name: tok.name, csrf, expiresAt: isoOrNull(expiresAt) },
        headers: { 'set-cookie': sessionCookie(id, (expiresAt - now) / 1000) },
      };
    },
    { limit: DEFAULT_BODY_LIMIT, fields: ['token'] },
  );
  add('GET', '/ui/session', 'viewer', 'The signed-in session: role, token name and the CSRF value (a page reloaded asks again).', (req) => {
    const cookie = sessionCookieOf(req.raw);
    if (cookie === undefined) throw new WritError('ERR_SESSION_INVALID', 'no dashboard session: sign in at /ui');
    return ok({ role: req.token!.role, name: req.token!.name, csrf: csrfOf(cookie) });
  });
  add('DELETE', '/ui/session', 'viewer', 'Sign out: the session is ended on the server, so its cookie replayed is refused.', async (req) => {
    const cookie = sessionCookieOf(req.raw);
    if (cookie === undefined) throw new WritError('ERR_SESSION_INVALID', 'no dashboard session to sign out of');
    await ctx.store.deleteUiSession(hashToken(cookie));
    return { status: 204, body: '', headers: { 'set-cookie': sessionCookie('', 0) } };
  });
}
