/**
 * The one enforcement core. Every enforcement point (the proxy, the SDK middleware, the agent's
 * Check) decides, names, records and logs a decision here, and turns its reason into an answer
 * here, so the same reason always gets the same answer wherever it is decided.
 */
// Bundled into the published SDK (scripts/pack.mjs): its types are not in the SDK's declarations.
import { BROKER_ERROR_CODES, TokenError, verifyToken } from '@writ/broker/verify';
import {
  formatAction,
  normalizePath,
  parseAction,
  type ActionRequest,
  type AuthzRequest,
  type Decision,
  type TokenContext,
  type TokenMismatch,
} from '@writ/policy';
import { isWritError, type JwtBundleSource } from '@writ/spiffe';
import { newDecisionId, type ReportedDecision } from './decision-log.ts';

/** What is logged of a decision that is not a plain allow (no header values: they may hold secrets). */
export interface DecisionLogEntry {
  readonly decisionId: string;
  readonly from: string | null;
  readonly to: string;
  readonly action: string;
  readonly decision: Decision['decision'];
  readonly reason: Decision['reason'];
  readonly rule: string | undefined;
  /** The verified token's subject, scopes and type (never the token itself), when the request carried one. */
  readonly token?: { readonly subject: string; readonly scopes: string; readonly type: string };
}

export interface EnforcerOptions {
  /** The policy: a LocalPolicy's or a PolicyEngine's `decide`. */
  readonly decide: (req: AuthzRequest) => Decision;
  /** Where every decision goes: a DecisionReporter's `record`, or the agent's own decision log. */
  readonly record?: (d: ReportedDecision) => void;
  /** Called with every deny and would-deny, for the process's log. */
  readonly log?: (entry: DecisionLogEntry) => void;
}

export interface Enforced {
  readonly decision: Decision;
  readonly decisionId: string;
}

/** Decides `req`, gives the decision an id, records it (with how long it took) and logs it unless it is an allow. */
export function enforce(o: EnforcerOptions, req: AuthzRequest): Enforced {
  const t0 = process.hrtime.bigint();
  const decision = o.decide(req);
  const latencyNs = Number(process.hrtime.bigint() - t0);
  const at = Date.now();
  const decisionId = newDecisionId(at);
  const action = formatAction(req.action);
  const rule = decision.rule?.name;
  o.record?.({
    id: decisionId,
    at,
    from: req.from ?? '',
    to: req.to,
    action,
    decision: decision.decision,
    reason: decision.reason,
    rule: rule ?? '',
    policyRevision: decision.revision,
    latencyNs,
  });
  if (decision.decision !== 'allow') {
    const t = req.token;
    o.log?.({
      decisionId,
      from: req.from ?? null,
      to: req.to,
      action,
      decision: decision.decision,
      reason: decision.reason,
      rule,
      ...(t ? { token: { subject: t.subject, scopes: t.scopes.join(' '), type: t.type } } : {}),
    });
  }
  return { decision, decisionId };
}

/** An HTTP answer instead of the request: its status and JSON body. */
export interface HttpRefusal {
  readonly status: 400 | 401 | 403;
  readonly body: { readonly code: string; readonly decisionId?: string; readonly message?: string; readonly reason?: string };
  /** Response fields to send with it (`www-authenticate` for a token refusal). */
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * The HTTP answer to a refused request, the same at every HTTP enforcement point: 401 for a caller
 * without an identity, 403 for every other deny, each `{code: reason, decisionId}`; undefined when
 * the request may proceed (an audit-mode would-deny included).
 */
export function httpRefusal(e: Enforced, token?: TokenRead): HttpRefusal | undefined {
  if (e.decision.allowed) return undefined;
  if (e.decision.token && e.decision.reason === 'NO_MATCHING_ALLOW') return tokenRefusal(e.decision.token, token, e.decisionId);
  return { status: e.decision.reason === 'UNAUTHENTICATED' ? 401 : 403, body: { code: e.decision.reason, decisionId: e.decisionId } };
}

/**
 * The gRPC status of a refused call: UNAUTHENTICATED (16) without an identity, else PERMISSION_DENIED
 * (7), the reason and id in the message; a token refusal as `tokenRefusal` decides it (16 for a 401).
 */
export function grpcRefusal(e: Enforced, token?: TokenRead): { readonly status: 7 | 16; readonly message: string } | undefined {
  if (e.decision.allowed) return undefined;
  if (e.decision.token && e.decision.reason === 'NO_MATCHING_ALLOW') {
    // A token refusal: UNAUTHENTICATED where HTTP says 401, PERMISSION_DENIED where it says 403.
    const r = tokenRefusal(e.decision.token, token, e.decisionId);
    return { status: r.status === 401 ? 16 : 7, message: `${r.body.code}: ${r.body.reason} (decision ${e.decisionId})` };
  }
  return { status: e.decision.reason === 'UNAUTHENTICATED' ? 16 : 7, message: `${e.decision.reason} (decision ${e.decisionId})` };
}

/**
 * A request target's path in normal form (`normalizePath`, the query left off), the one every
 * decision is made on. Throws WritError ERR_PATH_INVALID for a "." or ".." segment, a broken
 * escape, a "\" or a "#": nothing is decided on a path two parsers could read apart.
 */
export function requestPath(target: string): string {
  const q = target.indexOf('?');
  return normalizePath(q < 0 ? target : target.slice(0, q));
}

/** The 400 for a target `requestPath` refused. */
export function pathRefusal(err: unknown): HttpRefusal {
  return { status: 400, body: { code: isWritError(err) ? err.code : 'ERR_PATH_INVALID', message: (err as Error).message } };
}

/**
 * An action as a Check request writes it (`GET /v1/orders/1`, `grpc /pkg.Svc/Method`, `tcp 5432`).
 * An HTTP action whose path `requestPath` refuses throws that ERR_PATH_INVALID, as the HTTP points
 * answer it; anything else unreadable is ERR_ACTION_INVALID.
 */
export function parseCheckAction(text: string): ActionRequest {
  const http = /^\s*[A-Za-z]+\s+(\/\S*)\s*$/.exec(text);
  if (http) requestPath(http[1]!);
  return parseAction(text);
}

// ------------------------------------------------------------------------ the receiving side

/** The longest token looked at; a longer one is refused unread (the broker issues none longer). */
export const MAX_TOKEN_BYTES = 16 * 1024;

/** How a receiver verifies the Writ tokens it is sent: the JWT keys of its trust domain, and who it is. */
export interface TokenVerifier {
  /** JWT bundles by trust domain (a JwtSource's `bundles`). */
  readonly bundles: JwtBundleSource;
  /** The trust domain whose keys sign the tokens: the receiver's own. */
  readonly trustDomain: string;
  /** The receiver's SPIFFE ID: an access token's `aud` must hold it. */
  readonly audience: string;
  /** At most this many actors (default the broker's limit, 5); a rule may ask fewer. */
  readonly maxDepth?: number;
}

/** A verified Writ token, as the handler sees it (`@writ/broker/verify`'s VerifiedToken). */
export interface ReceivedToken extends TokenContext {
  /** The `client_id` of an access token. */
  readonly client?: string;
  readonly txn: string;
  /** A transaction token's `req_wl`. */
  readonly requestingWorkloads: readonly string[];
  /** Epoch ms. */
  readonly expiresAt: number;
  readonly claims: Readonly<Record<string, unknown>>;
}

/** Why a token was refused: a stable code (ERR_TOKEN_*), the message, and the RFC 6750 error. */
export interface TokenRejection {
  readonly code: string;
  readonly message: string;
  readonly error: string;
}

/** What a request carried: a verified token, the refusal of the one it carried, or nothing (`{}`). */
export interface TokenRead {
  readonly token?: ReceivedToken;
  readonly error?: TokenRejection;
}

/**
 * The Writ token of a request, verified: `Txn-Token: <token>` (draft-ietf-oauth-transaction-tokens,
 * a transaction token only) or `Authorization: Bearer <token>` (RFC 6750 section 2.1, either kind); the first that verifies counts, else
 * the first one's refusal. Signature by the trust domain's JWT keys, `typ`, `aud` (the receiver; the
 * trust domain for a transaction token), `exp`/`nbf`, depth. Never throws; never keeps the token.
 */
export function readToken(
  fields: { readonly authorization?: string | undefined; readonly txnToken?: string | undefined },
  v: TokenVerifier,
  now?: number,
): TokenRead {
  // Txn-Token carries transaction tokens only (draft-08 section 7.1); Authorization either kind.
  const candidates: Array<[string, readonly ('access-token' | 'txn-token')[] | undefined]> = [];
  if (fields.txnToken !== undefined) candidates.push([fields.txnToken.trim(), ['txn-token']]);
  const auth = fields.authorization;
  // A JWT-SVID there (typ JWT or JOSE) is the caller's identity, not a Writ token: not looked at here.
  if (auth !== undefined && /^bearer /i.test(auth) && !isJwtSvid(auth.slice(7).trim())) candidates.push([auth.slice(7).trim(), undefined]);
  let first: TokenRejection | undefined;
  for (const [t, types] of candidates) {
    try {
      if (t.length > MAX_TOKEN_BYTES) throw new TokenError('ERR_TOKEN_INVALID', `token rejected: larger than ${MAX_TOKEN_BYTES} bytes`);
      const token = verifyToken(t, {
        bundles: v.bundles,
        trustDomain: v.trustDomain,
        audience: v.audience,
        ...(types ? { types } : {}),
        ...(v.maxDepth !== undefined ? { maxDepth: v.maxDepth } : {}),
        ...(now !== undefined ? { now } : {}),
      });
      return { token };
    } catch (err) {
      first ??= err instanceof TokenError ? err : new TokenError('ERR_TOKEN_INVALID', 'token rejected');
    }
  }
  return first ? { error: first } : {};
}

/** Whether a compact JWS's header says it is a JWT-SVID (`typ` JWT or JOSE: the SPIFFE JWT-SVID spec, section 3). */
function isJwtSvid(token: string): boolean {
  const dot = token.indexOf('.');
  if (dot <= 0 || dot > 1024) return false;
  try {
    const typ = (JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString('utf8')) as { typ?: unknown } | null)?.typ;
    return typ === 'JWT' || typ === 'JOSE';
  } catch {
    return false;
  }
}

/** A `WWW-Authenticate: Bearer` value (RFC 6750 section 3): quoted-string values kept to safe ASCII. */
function bearerChallenge(params: Record<string, string | undefined>): string {
  const q = (s: string): string => s.replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/g, '?').slice(0, 300);
  const parts = Object.entries(params)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, val]) => `${k}="${q(val)}"`);
  return parts.length ? `Bearer ${parts.join(', ')}` : 'Bearer';
}

/**
 * The answer when a rule would have allowed the request but for its token condition, the same at
 * every HTTP point: 401 `ERR_TOKEN_REQUIRED` without a token, 401 `ERR_TOKEN_INVALID` for a bad one
 * (signature, typ, another audience, expired), 403 `ERR_TOKEN_SCOPE_INSUFFICIENT`, 403
 * `ERR_TOKEN_DEPTH_EXCEEDED`, 403 `ERR_TOKEN_NOT_ACCEPTED` (type, subject or audience not the
 * rule's); each `{code, decisionId, reason}` with a `WWW-Authenticate: Bearer` challenge.
 */
export function tokenRefusal(m: Pick<TokenMismatch, 'kind' | 'message'>, read: TokenRead | undefined, decisionId: string): HttpRefusal {
  const err = m.kind === 'missing' ? read?.error : undefined;
  if (err) {
    const status = err.code === 'ERR_TOKEN_INVALID' ? 401 : 403;
    return {
      status,
      body: { code: err.code, decisionId, reason: err.message },
      headers: { 'www-authenticate': bearerChallenge({ error: err.error, error_description: err.message }) },
    };
  }
  if (m.kind === 'missing')
    return { status: 401, body: { code: 'ERR_TOKEN_REQUIRED', decisionId, reason: m.message }, headers: { 'www-authenticate': bearerChallenge({}) } };
  const code = m.kind === 'scope' ? 'ERR_TOKEN_SCOPE_INSUFFICIENT' : m.kind === 'depth' ? 'ERR_TOKEN_DEPTH_EXCEEDED' : 'ERR_TOKEN_NOT_ACCEPTED';
  const error = code === 'ERR_TOKEN_NOT_ACCEPTED' ? 'insufficient_scope' : BROKER_ERROR_CODES[code];
  return {
    status: 403,
    body: { code, decisionId, reason: m.message },
    headers: { 'www-authenticate': bearerChallenge({ error, error_description: m.message }) },
  };
}
