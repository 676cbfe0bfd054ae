/**
 * `writ.broker.v1.TokenBroker/Exchange` (packages/sdk/proto/writ_broker.proto): token exchange
 * (RFC 8693) on behalf of an attested workload. The agent asks the server's `POST /v1/token` as
 * the caller: its own JWT-SVID for the trust domain is the client_assertion (RFC 7523) and, with
 * no subject_token given, the subject too. Grants are cached per caller, audience, scope set,
 * token type and subject token until most of their life is gone; refusals are never cached.
 */
import { createHash } from 'node:crypto';
import { parseSpiffeId } from '@writ/spiffe';
import { GRPC_STATUS, GrpcError, refusalMessage, type ExchangeRequestMessage, type ExchangeResponseMessage } from '@writ/sdk/internal';
import type { EntryView } from './agent.ts';

export const TOKEN_PATH = '/v1/token';
const URN = 'urn:ietf:params:oauth:token-type:';
const TYPES = { jwt: `${URN}jwt`, txn_token: `${URN}txn_token` } as const;
type TokenType = keyof typeof TYPES;

/** What is checked here before anything goes to the server (the server checks again). */
export const BROKER_LIMITS = { scopes: 32, scopeChars: 128, tokenBytes: 16 * 1024, contextBytes: 8 * 1024, idChars: 2048 } as const;
/** A cached token is served until 80% of its life, and never in its last 30 s. */
export const REUSE_FRACTION = 0.8;
export const EXPIRY_MARGIN_MS = 30_000;
export const DEFAULT_CACHE_ENTRIES = 10_000;

/** The gRPC status of an RFC 6749 section 5.2 / RFC 8693 section 2.2.2 error. */
export function grpcStatusOf(error: string): number {
  switch (error) {
    case 'access_denied':
    case 'unauthorized_client':
      return GRPC_STATUS.PERMISSION_DENIED;
    case 'invalid_client':
      return GRPC_STATUS.UNAUTHENTICATED;
    case 'invalid_request':
    case 'invalid_scope':
    case 'invalid_target':
    case 'invalid_grant':
    case 'unsupported_grant_type':
    case 'unsupported_token_type':
      return GRPC_STATUS.INVALID_ARGUMENT;
    case 'temporarily_unavailable':
      return GRPC_STATUS.UNAVAILABLE;
    default:
      return GRPC_STATUS.INTERNAL;
  }
}

export interface CachedToken {
  readonly callerId: string;
  readonly token: string;
  /** ms since the epoch */
  readonly expiresAt: number;
  readonly refreshAt: number;
  readonly scope: readonly string[];
  readonly tokenType: TokenType;
}

/** When a token granted at `now` for `expiresAt` stops being served from the cache. */
export function refreshTime(now: number, expiresAt: number): number {
  const life = expiresAt - now;
  return now + Math.min(life * REUSE_FRACTION, life - EXPIRY_MARGIN_MS);
}

/** A bounded LRU of granted tokens (a Map keeps insertion order: a hit moves to the end). */
export class TokenCache {
  readonly #max: number;
  readonly #map = new Map<string, CachedToken>();

  constructor(max = DEFAULT_CACHE_ENTRIES) {
    this.#max = Math.max(1, max);
  }

  get(key: string, now: number): CachedToken | undefined {
    const v = this.#map.get(key);
    if (!v) return undefined;
    this.#map.delete(key);
    if (now >= v.refreshAt) return undefined;
    this.#map.set(key, v);
    return v;
  }

  set(key: string, v: CachedToken, now: number): void {
    this.#map.delete(key);
    if (now >= v.refreshAt) return;
    this.#map.set(key, v);
    while (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value!);
  }

  /** Drops the tokens of callers not in `ids` (an entry removed, an identity quarantined). */
  retain(ids: ReadonlySet<string>): number {
    let n = 0;
    for (const [k, v] of this.#map) if (!ids.has(v.callerId)) this.#map.delete(k), n++;
    return n;
  }

  get size(): number {
    return this.#map.size;
  }
}

export interface TokenBrokerOptions {
  readonly trustDomain: string;
  /** The caller's JWT-SVID for `audience` (the agent's, cached per entry). */
  readonly jwtSvid: (entry: EntryView, audience: readonly string[]) => Promise<{ token: string }>;
  /** POST a form to the server without the agent's certificate. */
  readonly postForm: (path: string, form: string) => Promise<{ status: number; json: Record<string, unknown> | undefined }>;
  readonly clock?: () => number;
  readonly maxEntries?: number;
}

const invalid = (msg: string): GrpcError => new GrpcError(GRPC_STATUS.INVALID_ARGUMENT, refusalMessage('invalid_request', msg, 'ERR_TOKEN_REQUEST_INVALID'));
const hash = (s: string): string => (s ? createHash('sha256').update(s).digest('base64url') : '');
/** RFC 6749 appendix A.4: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

function tokenTypeOf(s: string): TokenType {
  if (s === '' || s === 'jwt' || s === TYPES.jwt) return 'jwt';
  if (s === 'txn_token' || s === TYPES.txn_token) return 'txn_token';
  throw invalid(`requested_token_type must be jwt or txn_token, got ${JSON.stringify(s.slice(0, 80))}`);
}

function contextOf(name: string, s: string): string {
  if (s === '') return '';
  if (Buffer.byteLength(s) > BROKER_LIMITS.contextBytes) throw invalid(`${name} is larger than ${BROKER_LIMITS.contextBytes} bytes`);
  let v: unknown;
  try {
    v = JSON.parse(s);
  } catch {
    throw invalid(`${name} is not JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(`${name} must be a JSON object`);
  return Buffer.from(JSON.stringify(v)).toString('base64url');
}

/** The `typ` of a JWS header, '' when it has none or is not a JWS. */
function typOf(token: string): string {
  try {
    const h = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8')) as { typ?: unknown };
    return typeof h.typ === 'string' ? h.typ.toLowerCase() : '';
  } catch {
    return '';
  }
}

/** The `exp` claim of a compact JWS, undefined when it has none. */
function expOf(token: string): number | undefined {
  try {
    const c = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof c.exp === 'number' && Number.isFinite(c.exp) ? c.exp : undefined;
  } catch {
    return undefined;
  }
}

interface Parsed {
  readonly audience: string;
  readonly scopes: string[];
  readonly type: TokenType;
  readonly subjectToken: string;
  readonly actorToken: string;
  readonly requestContext: string;
  readonly requestDetails: string;
}

/** Checks a request message; throws InvalidArgument (an `invalid_request`) for what the server would refuse anyway. */
export function parseExchange(req: ExchangeRequestMessage): Parsed {
  if (!req.audience) throw invalid('audience must be specified');
  if (req.audience.length > BROKER_LIMITS.idChars) throw invalid('audience is too long');
  try {
    parseSpiffeId(req.audience);
  } catch (err) {
    throw invalid(`audience must be a SPIFFE ID: ${(err as Error).message}`);
  }
  const scopes = [...new Set(req.scope.flatMap((s) => s.split(' ')).filter((s) => s !== ''))].sort();
  if (scopes.length === 0) throw invalid('scope must be specified');
  if (scopes.length > BROKER_LIMITS.scopes) throw invalid(`at most ${BROKER_LIMITS.scopes} scopes`);
  for (const s of scopes)
    if (s.length > BROKER_LIMITS.scopeChars || !SCOPE_TOKEN.test(s))
      throw invalid(`scope ${JSON.stringify(s.slice(0, 60))} is not a valid scope (RFC 6749 3.3)`);
  for (const [name, t] of [
    ['subject_token', req.subjectToken],
    ['actor_token', req.actorToken],
  ] as const)
    if (Buffer.byteLength(t) > BROKER_LIMITS.tokenBytes) throw invalid(`${name} is larger than ${BROKER_LIMITS.tokenBytes} bytes`);
  return {
    audience: req.audience,
    scopes,
    type: tokenTypeOf(req.requestedTokenType),
    subjectToken: req.subjectToken,
    actorToken: req.actorToken,
    requestContext: contextOf('request_context', req.requestContext),
    requestDetails: contextOf('request_details', req.requestDetails),
  };
}

export class TokenBroker {
  readonly #o: TokenBrokerOptions;
  readonly #clock: () => number;
  readonly #cache: TokenCache;
  /** Identical requests in flight share one server call. */
  readonly #inflight = new Map<string, Promise<CachedToken>>();
  #asked = 0;

  constructor(opts: TokenBrokerOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
    this.#cache = new TokenCache(opts.maxEntries);
  }

  /**
   * An exchange for a caller that gets `entries` (already attested; never a quarantined identity).
   * Throws a GrpcError whose message is "OAUTH_ERROR: description [ERR_CODE]".
   */
  async exchange(entries: readonly EntryView[], req: ExchangeRequestMessage): Promise<ExchangeResponseMessage> {
    if (entries.length === 0) throw new GrpcError(GRPC_STATUS.PERMISSION_DENIED, 'no identity issued');
    const entry = req.spiffeId ? entries.find((e) => e.spiffeId === req.spiffeId) : entries[0];
    if (!entry) throw new GrpcError(GRPC_STATUS.PERMISSION_DENIED, `the workload is not entitled to ${req.spiffeId.slice(0, 200)}`);
    const p = parseExchange(req);
    const key = JSON.stringify([
      entry.spiffeId,
      p.audience,
      p.scopes,
      p.type,
      hash(p.subjectToken),
      hash(p.actorToken),
      hash(`${p.requestContext}.${p.requestDetails}`),
    ]);
    const hit = this.#cache.get(key, this.#clock());
    if (hit) return answer(hit, true);
    let pending = this.#inflight.get(key);
    if (!pending) {
      pending = this.#ask(entry, p).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, pending);
      void pending.then(
        (v) => this.#cache.set(key, v, this.#clock()),
        () => undefined,
      );
    }
    return answer(await pending, false);
  }

  async #ask(entry: EntryView, p: Parsed): Promise<CachedToken> {
    const tdId = `spiffe://${this.#o.trustDomain}`;
    let own: string;
    try {
      own = (await this.#o.jwtSvid(entry, [tdId])).token;
    } catch (err) {
      throw new GrpcError(GRPC_STATUS.UNAVAILABLE, `cannot mint the caller's JWT-SVID now: ${(err as Error).message.slice(0, 300)}`);
    }
    const subject = p.subjectToken || own;
    const form = new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: own,
      subject_token: subject,
      subject_token_type: p.subjectToken && typOf(p.subjectToken) === 'txntoken+jwt' ? TYPES.txn_token : TYPES.jwt,
      audience: p.audience,
      scope: p.scopes.join(' '),
      requested_token_type: TYPES[p.type],
    });
    if (p.actorToken) form.set('actor_token', p.actorToken), form.set('actor_token_type', TYPES.jwt);
    if (p.requestContext) form.set('request_context', p.requestContext);
    if (p.requestDetails) form.set('request_details', p.requestDetails);
    this.#asked++;
    let res: { status: number; json: Record<string, unknown> | undefined };
    try {
      res = await this.#o.postForm(TOKEN_PATH, form.toString());
    } catch (err) {
      throw new GrpcError(GRPC_STATUS.UNAVAILABLE, `token exchange: ${(err as Error).message.slice(0, 300)}`);
    }
    const now = this.#clock();
    const j = res.json;
    if (res.status === 200 && j && typeof j['access_token'] === 'string' && typeof j['expires_in'] === 'number') {
      const issued = j['issued_token_type'] === TYPES.txn_token ? 'txn_token' : 'jwt';
      // The token's own exp (expires_in is rounded down to whole seconds); it came from the pinned server.
      const exp = expOf(j['access_token']);
      const expiresAt = exp !== undefined && exp * 1000 > now ? exp * 1000 : now + j['expires_in'] * 1000;
      return {
        callerId: entry.spiffeId,
        token: j['access_token'],
        expiresAt,
        refreshAt: refreshTime(now, expiresAt),
        scope: typeof j['scope'] === 'string' ? j['scope'].split(' ').filter((s) => s) : p.scopes,
        tokenType: issued,
      };
    }
    throw refusalOf(res.status, j);
  }

  /** Drops the cached tokens of callers whose identity is gone (entry removed, quarantined). */
  retain(ids: ReadonlySet<string>): number {
    return this.#cache.retain(ids);
  }

  get stats(): { cached: number; asked: number } {
    return { cached: this.#cache.size, asked: this.#asked };
  }
}

/** The server's refusal as a gRPC error: the OAuth error picks the status. */
export function refusalOf(status: number, j: Record<string, unknown> | undefined): GrpcError {
  const str = (k: string): string => (typeof j?.[k] === 'string' ? (j[k] as string).slice(0, 500) : '');
  const error = str('error');
  const code = /^ERR_[A-Z0-9_]+$/.test(str('code')) ? str('code') : '';
  const description = str('error_description') || str('message') || `the server answered HTTP ${status}`;
  if (error) return new GrpcError(grpcStatusOf(error), refusalMessage(error, description, code));
  if (status === 413) return new GrpcError(GRPC_STATUS.INVALID_ARGUMENT, refusalMessage('invalid_request', description, code));
  // Not an OAuth answer (a proxy, the server overloaded or away): the caller may try again.
  return new GrpcError(
    status >= 500 || status === 429 || status === 0 ? GRPC_STATUS.UNAVAILABLE : GRPC_STATUS.INTERNAL,
    `token exchange: ${description}${code ? ` [${code}]` : ''}`,
  );
}

function answer(v: CachedToken, cached: boolean): ExchangeResponseMessage {
  return { token: v.token, expiresAt: Math.floor(v.expiresAt / 1000), scope: v.scope, tokenType: v.tokenType, cached };
}
