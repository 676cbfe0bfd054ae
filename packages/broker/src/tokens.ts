/**
 * The tokens the broker issues, and their verification by whoever receives them.
 *
 * - Access tokens (RFC 8693 section 2.2.1, shaped like RFC 9068): header `typ: at+jwt`, claims
 *   `iss`, `sub` (the original subject), `aud` (the target), `scope`, `client_id`, `act` (section
 *   4.1: nested, the outermost the current actor), `txn`, `jti`, `iat`, `nbf`, `exp`. The `typ`
 *   keeps them from passing for JWT-SVIDs: a JWT-SVID validator accepts only `JWT` or `JOSE`.
 * - Transaction tokens (draft-ietf-oauth-transaction-tokens-08): header `typ: txntoken+jwt`,
 *   claims `iss`, `aud` (the trust domain), `txn`, `sub`, `scope`, `req_wl`, `tctx`, `rctx`, `iat`, `exp`.
 *
 * Both are signed with the trust domain's JWT keys, so any JWT library verifies them from the
 * server's OIDC discovery document.
 */
import { randomUUID, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { derToJose, isWritError, jwtAlgorithmFor, parseSpiffeId, verifyJws, type JwtBundleSource, type Signer } from '@writ/spiffe';
import { TokenError } from './errors.ts';
import { MAX_DEPTH_LIMIT } from './limits.ts';

export const ACCESS_TOKEN_TYP = 'at+jwt';
export const TXN_TOKEN_TYP = 'txntoken+jwt';
/** The clock skew verification allows, in seconds: small, the tokens live minutes. */
export const DEFAULT_TOKEN_LEEWAY_SECONDS = 5;

/** RFC 8693 section 4.1: `{sub, act: {sub, act: ...}}`, the outermost the current actor. */
export interface ActClaim {
  readonly sub: string;
  readonly act?: ActClaim;
}

export function actClaim(actors: readonly string[]): ActClaim | undefined {
  let act: ActClaim | undefined;
  for (let i = actors.length - 1; i >= 0; i--) act = act ? { sub: actors[i]!, act } : { sub: actors[i]! };
  return act;
}

/** The actors of an `act` claim, outermost first; refused when malformed, deeper than the limit or looping. */
export function actorsOf(act: unknown): string[] {
  const out: string[] = [];
  let cur = act;
  while (cur !== undefined) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) throw invalid('the act claim must be an object');
    if (out.length >= MAX_DEPTH_LIMIT) throw new TokenError('ERR_TOKEN_DEPTH_EXCEEDED', `the act chain is deeper than ${MAX_DEPTH_LIMIT}`);
    const sub = (cur as Record<string, unknown>)['sub'];
    if (typeof sub !== 'string') throw invalid('an act claim has no sub');
    try {
      parseSpiffeId(sub);
    } catch {
      throw invalid('an actor is not a SPIFFE ID');
    }
    if (out.includes(sub)) throw invalid(`the act chain loops (${sub} twice)`);
    out.push(sub);
    cur = (cur as Record<string, unknown>)['act'];
  }
  return out;
}

export interface AccessTokenInput {
  readonly issuer: string;
  readonly subject: string;
  readonly audience: string;
  readonly scopes: readonly string[];
  readonly client: string;
  readonly actors: readonly string[];
  readonly txn?: string;
  /** Epoch ms. */
  readonly now: number;
  readonly ttlMs: number;
  readonly jti?: string;
}

export function accessTokenClaims(i: AccessTokenInput): Record<string, unknown> {
  const iat = Math.floor(i.now / 1000);
  const act = actClaim(i.actors);
  return {
    iss: i.issuer,
    sub: i.subject,
    aud: i.audience,
    scope: i.scopes.join(' '),
    client_id: i.client,
    ...(act ? { act } : {}),
    txn: i.txn ?? randomUUID(),
    jti: i.jti ?? randomUUID(),
    iat,
    nbf: iat,
    exp: Math.floor((i.now + i.ttlMs) / 1000),
  };
}

export interface TxnTokenInput {
  readonly issuer: string;
  readonly trustDomain: string;
  readonly subject: string;
  readonly scopes: readonly string[];
  /** The workloads that asked, first first; the client is appended to a replacement's list. */
  readonly requestingWorkloads: readonly string[];
  readonly txn?: string;
  readonly tctx?: Readonly<Record<string, unknown>>;
  readonly rctx?: Readonly<Record<string, unknown>>;
  readonly now: number;
  readonly ttlMs: number;
}

export function txnTokenClaims(i: TxnTokenInput): Record<string, unknown> {
  const iat = Math.floor(i.now / 1000);
  const wl = i.requestingWorkloads;
  return {
    iss: i.issuer,
    aud: `spiffe://${i.trustDomain}`,
    txn: i.txn ?? randomUUID(),
    sub: i.subject,
    scope: i.scopes.join(' '),
    // draft-08: a string for one requesting workload, an array once replacements append to it.
    req_wl: wl.length === 1 ? wl[0]! : [...wl],
    ...(i.tctx ? { tctx: i.tctx } : {}),
    ...(i.rctx ? { rctx: i.rctx } : {}),
    iat,
    exp: Math.floor((i.now + i.ttlMs) / 1000),
  };
}

/** A compact JWS with header {alg, kid, typ}. */
export function signToken(claims: Record<string, unknown>, typ: string, kid: string, signer: Signer): string {
  const alg = jwtAlgorithmFor(signer.keyType);
  const input = `${Buffer.from(JSON.stringify({ alg, kid, typ })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const der = cryptoSign(`sha${alg.slice(2)}`, Buffer.from(input), signer.key);
  // DER to r||s by hand: Node's ieee-p1363 encoding measured at half the speed (see @writ/spiffe jwt.ts).
  const sig = alg[0] === 'E' ? derToJose(der, alg === 'ES256' ? 32 : alg === 'ES384' ? 48 : 66) : der;
  return `${input}.${sig.toString('base64url')}`;
}

export interface VerifiedToken {
  readonly type: 'access-token' | 'txn-token';
  readonly subject: string;
  readonly audience: readonly string[];
  readonly scopes: readonly string[];
  /** Outermost (the current actor) first; empty for a transaction token and for a token without act. */
  readonly actors: readonly string[];
  readonly client?: string;
  readonly txn: string;
  readonly requestingWorkloads: readonly string[];
  readonly expiresAt: number;
  readonly claims: Readonly<Record<string, unknown>>;
}

export interface VerifyTokenOptions {
  /** Keys by trust domain (a `Map<string, TrustBundle>` satisfies it). */
  readonly bundles: JwtBundleSource;
  /** The trust domain that issued it: only its keys count. */
  readonly trustDomain: string;
  /** Who the receiver is: an access token's `aud` must hold it; a transaction token's `aud` must be the trust domain. */
  readonly audience: string;
  /** `iss` must equal it when given. */
  readonly issuer?: string;
  /** Scopes the token must cover (all of them). */
  readonly scopes?: readonly string[];
  /** At most this many actors in `act` (default 5). */
  readonly maxDepth?: number;
  /** Which types the receiver takes; default both. */
  readonly types?: readonly ('access-token' | 'txn-token')[];
  readonly now?: number;
  readonly leewaySeconds?: number;
}

const invalid = (m: string) => new TokenError('ERR_TOKEN_INVALID', `token rejected: ${m}`);

/**
 * Verifies a Writ-issued access or transaction token for the receiving side: signature by a key of
 * the trust domain, `typ`, `aud`, `exp`/`nbf` (small skew), scope coverage and delegation depth.
 * Throws TokenError: ERR_TOKEN_INVALID, ERR_TOKEN_SCOPE_INSUFFICIENT or ERR_TOKEN_DEPTH_EXCEEDED.
 * @example verifyToken(bearer, { bundles, trustDomain: 'example.org', audience: 'spiffe://example.org/orders', scopes: ['orders:read'] })
 */
export function verifyToken(token: string, o: VerifyTokenOptions): VerifiedToken {
  const keys: ReadonlyMap<string, KeyObject> | undefined = o.bundles.get(o.trustDomain)?.jwtAuthorities;
  if (!keys || keys.size === 0) throw invalid(`no JWT keys for trust domain ${o.trustDomain}`);
  let header: Record<string, unknown>;
  let c: Record<string, unknown>;
  try {
    if (typeof token !== 'string' || token.length === 0) throw invalid('no token');
    // verifyJws falls back to the only key when there is no kid; Writ tokens always name theirs.
    if (!token.startsWith('ey')) throw invalid('not a JWS');
    ({ header, claims: c } = verifyJws(token, keys));
  } catch (err) {
    if (err instanceof TokenError) throw err;
    throw invalid(isWritError(err) ? err.message : 'not a JWS');
  }
  if (typeof header['kid'] !== 'string') throw invalid('no kid header');
  const typ = header['typ'];
  const type = typ === ACCESS_TOKEN_TYP ? 'access-token' : typ === TXN_TOKEN_TYP ? 'txn-token' : undefined;
  if (!type) throw invalid(`typ ${JSON.stringify(String(typ).slice(0, 30))} is not a Writ-issued token (${ACCESS_TOKEN_TYP} or ${TXN_TOKEN_TYP})`);
  if (o.types && !o.types.includes(type)) throw invalid(`a ${type} is not accepted here`);
  if (o.issuer !== undefined && c['iss'] !== o.issuer) throw invalid('iss is not the expected issuer');
  const now = (o.now ?? Date.now()) / 1000;
  const leeway = o.leewaySeconds ?? DEFAULT_TOKEN_LEEWAY_SECONDS;
  const exp = c['exp'];
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw invalid('exp is missing');
  if (exp + leeway <= now) throw invalid(`expired at ${new Date(exp * 1000).toISOString()}`);
  const nbf = c['nbf'] ?? c['iat'];
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf - leeway > now)) throw invalid('not valid yet');
  const sub = c['sub'];
  if (typeof sub !== 'string' || sub === '') throw invalid('sub is missing');
  const aud = typeof c['aud'] === 'string' ? [c['aud']] : Array.isArray(c['aud']) && c['aud'].every((a) => typeof a === 'string') ? (c['aud'] as string[]) : [];
  const wantAud = type === 'txn-token' ? `spiffe://${o.trustDomain}` : o.audience;
  if (!aud.includes(wantAud)) throw invalid(`the token is for ${aud.join(', ').slice(0, 200) || 'no audience'}, not ${wantAud}`);
  const scope = c['scope'];
  if (typeof scope !== 'string') throw invalid('scope is missing');
  const scopes = scope.split(' ').filter((s) => s !== '');
  const missing = (o.scopes ?? []).filter((s) => !scopes.includes(s));
  if (missing.length) throw new TokenError('ERR_TOKEN_SCOPE_INSUFFICIENT', `the token's scope (${scope.slice(0, 200)}) does not cover ${missing.join(' ')}`);
  const actors = actorsOf(c['act']);
  const maxDepth = o.maxDepth ?? MAX_DEPTH_LIMIT;
  if (actors.length > maxDepth)
    throw new TokenError('ERR_TOKEN_DEPTH_EXCEEDED', `the delegation chain is ${actors.length} actors deep; at most ${maxDepth} accepted`);
  const txn = c['txn'];
  if (typeof txn !== 'string' || txn === '') throw invalid('txn is missing');
  const wl = c['req_wl'];
  const requestingWorkloads = typeof wl === 'string' ? [wl] : Array.isArray(wl) ? wl.filter((x): x is string => typeof x === 'string') : [];
  if (type === 'txn-token' && requestingWorkloads.length === 0) throw invalid('req_wl is missing');
  const client = typeof c['client_id'] === 'string' ? c['client_id'] : undefined;
  return {
    type,
    subject: sub,
    audience: aud,
    scopes,
    actors,
    ...(client !== undefined ? { client } : {}),
    txn,
    requestingWorkloads,
    expiresAt: exp * 1000,
    claims: c,
  };
}

/** The `typ` of a compact JWS's header, without verifying anything (to route a subject token to its validator). */
export function peekTyp(token: string): string | undefined {
  const dot = token.indexOf('.');
  if (dot <= 0 || dot > 4096) return undefined;
  try {
    const h = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString('utf8')) as unknown;
    return h !== null && typeof h === 'object' && typeof (h as Record<string, unknown>)['typ'] === 'string'
      ? ((h as Record<string, unknown>)['typ'] as string)
      : undefined;
  } catch {
    return undefined;
  }
}

/** The `aud` values of a compact JWS's payload, unverified (to pick the audience a JWT-SVID is validated for). */
export function peekAudience(token: string): string[] {
  const parts = token.split('.', 3);
  if (parts.length < 2 || parts[1]!.length > 16 * 1024) return [];
  try {
    const p = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    const aud = p?.['aud'];
    return typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud.filter((a): a is string => typeof a === 'string') : [];
  } catch {
    return [];
  }
}
