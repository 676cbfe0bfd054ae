/**
 * Reading a token-exchange request (RFC 8693 section 2.1), form-encoded
 * (`application/x-www-form-urlencoded`). Limits are checked before any splitting or decoding;
 * a parameter given twice is refused (RFC 6749 section 3.2), except `audience` and `resource`,
 * which RFC 8693 lets a client repeat. Unknown parameters are ignored, as RFC 6749 asks.
 */
import { parseSpiffeId } from '@writ/spiffe';
import { tokenError } from './errors.ts';

export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';
export const TOKEN_TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
export const TOKEN_TYPE_TXN = 'urn:ietf:params:oauth:token-type:txn_token';
export const CLIENT_ASSERTION_TYPE_JWT = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** What a client may ask for: a JWT access token or a transaction token. */
export const ISSUED_TOKEN_TYPES = [TOKEN_TYPE_JWT, TOKEN_TYPE_TXN] as const;
export type IssuedTokenType = (typeof ISSUED_TOKEN_TYPES)[number];
/** What a subject or actor token may be: a JWT (a JWT-SVID or a Writ access token) or a Writ transaction token. */
const INPUT_TOKEN_TYPES: readonly string[] = [TOKEN_TYPE_JWT, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_TXN];

export const REQUEST_LIMITS = {
  /** The whole body. */
  bytes: 64 * 1024,
  /** Any token parameter (subject, actor, client assertion). */
  tokenBytes: 16 * 1024,
  parameters: 32,
  scopes: 32,
  scopeBytes: 128,
  audiences: 8,
  /** `request_context` / `request_details` (base64url JSON objects for a transaction token). */
  contextBytes: 4096,
} as const;

const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const REPEATABLE = new Set(['audience', 'resource']);

export interface TokenRequest {
  readonly subjectToken: string;
  readonly subjectTokenType: string;
  readonly actorToken?: string;
  readonly actorTokenType?: string;
  /** The target's SPIFFE ID (from `audience`, or `resource` when no audience is given). */
  readonly audience: string;
  /** Requested scopes, unique, in the order given; empty when `scope` was omitted. */
  readonly scopes: readonly string[];
  readonly requestedTokenType: IssuedTokenType;
  readonly clientAssertion?: string;
  readonly clientId?: string;
  /** Transaction tokens: `rctx` and `tctx` as given (`request_context`, `request_details`). */
  readonly requestContext?: Readonly<Record<string, unknown>>;
  readonly requestDetails?: Readonly<Record<string, unknown>>;
}

const invalid = (m: string) => tokenError('ERR_TOKEN_REQUEST_INVALID', m);

/** Splits a form body into parameters: decoded names to their values, with the limits and duplicate rule. */
export function parseForm(body: string | Uint8Array): Map<string, string[]> {
  const size = typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
  if (size > REQUEST_LIMITS.bytes) throw invalid(`the request body is larger than ${REQUEST_LIMITS.bytes} bytes`);
  const text = typeof body === 'string' ? body : Buffer.from(body).toString('utf8');
  if (text.includes('\uFFFD') && typeof body !== 'string') throw invalid('the request body is not UTF-8');
  const out = new Map<string, string[]>();
  if (text === '') return out;
  const pairs = text.split('&');
  if (pairs.length > REQUEST_LIMITS.parameters) throw invalid(`more than ${REQUEST_LIMITS.parameters} parameters`);
  for (const pair of pairs) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const name = decode(eq === -1 ? pair : pair.slice(0, eq), 'a parameter name');
    const value = decode(eq === -1 ? '' : pair.slice(eq + 1), `parameter ${JSON.stringify(name.slice(0, 40))}`);
    if (name.includes('\0') || value.includes('\0')) throw invalid('a parameter holds a NUL character');
    const list = out.get(name);
    if (list && !REPEATABLE.has(name)) throw invalid(`parameter ${JSON.stringify(name.slice(0, 40))} is given more than once`);
    if (list) list.push(value);
    else out.set(name, [value]);
  }
  return out;
}

function decode(s: string, what: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    throw invalid(`${what} is not valid percent-encoding`);
  }
}

function context(v: string | undefined, name: string): Record<string, unknown> | undefined {
  if (v === undefined) return undefined;
  if (v.length > REQUEST_LIMITS.contextBytes) throw invalid(`${name} is longer than ${REQUEST_LIMITS.contextBytes} characters`);
  let parsed: unknown;
  try {
    if (!/^[A-Za-z0-9_-]*$/.test(v)) throw new Error('not base64url');
    parsed = JSON.parse(Buffer.from(v, 'base64url').toString('utf8'));
  } catch {
    throw invalid(`${name} must be a base64url-encoded JSON object`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw invalid(`${name} must be a base64url-encoded JSON object`);
  return parsed as Record<string, unknown>;
}

/** Splits and checks `scope` (RFC 6749 section 3.3: space-delimited, case-sensitive tokens). */
export function parseScope(s: string | undefined): string[] {
  if (s === undefined || s.trim() === '') return [];
  const list = s.split(' ').filter((x) => x !== '');
  if (list.length > REQUEST_LIMITS.scopes) throw tokenError('ERR_TOKEN_SCOPE_INVALID', `more than ${REQUEST_LIMITS.scopes} scopes`);
  for (const x of list) {
    if (x.length > REQUEST_LIMITS.scopeBytes || !SCOPE_TOKEN.test(x))
      throw tokenError(
        'ERR_TOKEN_SCOPE_INVALID',
        `scope ${JSON.stringify(x.slice(0, 40))} is not a scope token (printable ASCII without " and \\, at most ${REQUEST_LIMITS.scopeBytes})`,
      );
  }
  return [...new Set(list)];
}

/**
 * Parses a token-exchange request body.
 * @example parseTokenRequest('grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=...')
 */
export function parseTokenRequest(body: string | Uint8Array): TokenRequest {
  const form = parseForm(body);
  const one = (name: string): string | undefined => form.get(name)?.[0];
  const grant = one('grant_type');
  if (grant === undefined || grant === '') throw invalid('grant_type is required');
  if (grant !== GRANT_TYPE_TOKEN_EXCHANGE)
    throw tokenError(
      'ERR_TOKEN_GRANT_TYPE_UNSUPPORTED',
      `grant_type ${JSON.stringify(grant.slice(0, 80))} is not supported; only ${GRANT_TYPE_TOKEN_EXCHANGE}`,
    );
  const token = (name: string, required: boolean): string | undefined => {
    const v = one(name);
    if (v === undefined || v === '') {
      if (required) throw invalid(`${name} is required`);
      return undefined;
    }
    if (v.length > REQUEST_LIMITS.tokenBytes) throw invalid(`${name} is longer than ${REQUEST_LIMITS.tokenBytes} characters`);
    return v;
  };
  const type = (name: string, required: boolean): string | undefined => {
    const v = one(name);
    if (v === undefined || v === '') {
      if (required) throw invalid(`${name} is required`);
      return undefined;
    }
    if (!INPUT_TOKEN_TYPES.includes(v)) throw invalid(`${name} ${JSON.stringify(v.slice(0, 80))} is not supported; one of ${INPUT_TOKEN_TYPES.join(', ')}`);
    return v;
  };
  const subjectToken = token('subject_token', true)!;
  const subjectTokenType = type('subject_token_type', true)!;
  const actorToken = token('actor_token', false);
  const actorTokenType = type('actor_token_type', false);
  // RFC 8693 section 2.1: actor_token_type is required with actor_token and must not come without it.
  if (actorToken !== undefined && actorTokenType === undefined) throw invalid('actor_token_type is required with actor_token');
  if (actorToken === undefined && actorTokenType !== undefined) throw invalid('actor_token_type is given without actor_token');

  const requested = one('requested_token_type');
  let requestedTokenType: IssuedTokenType = TOKEN_TYPE_JWT;
  if (requested !== undefined && requested !== '') {
    if (requested === TOKEN_TYPE_ACCESS_TOKEN) requestedTokenType = TOKEN_TYPE_JWT;
    else if ((ISSUED_TOKEN_TYPES as readonly string[]).includes(requested)) requestedTokenType = requested as IssuedTokenType;
    else throw invalid(`requested_token_type ${JSON.stringify(requested.slice(0, 80))} is not supported; one of ${ISSUED_TOKEN_TYPES.join(', ')}`);
  }
  const audiences = form.get('audience')?.filter((a) => a !== '') ?? [];
  const resources = form.get('resource')?.filter((a) => a !== '') ?? [];
  if (audiences.length + resources.length > REQUEST_LIMITS.audiences)
    throw tokenError('ERR_TOKEN_TARGET_INVALID', `more than ${REQUEST_LIMITS.audiences} audiences`);
  const targets = [...new Set([...audiences, ...resources])];
  if (targets.length === 0) throw tokenError('ERR_TOKEN_TARGET_INVALID', 'audience (or resource) is required: the SPIFFE ID of the target');
  // One token for one target: a token good for several would let any of them replay it at the others.
  if (targets.length > 1) throw tokenError('ERR_TOKEN_TARGET_INVALID', `one target per token; got ${targets.length}`);
  const audience = targets[0]!;
  if (audience.length > 2048) throw tokenError('ERR_TOKEN_TARGET_INVALID', 'the audience is longer than 2048 bytes');
  try {
    // A transaction token's audience is the trust domain itself (draft-ietf-oauth-transaction-tokens-08).
    if (parseSpiffeId(audience).path === '' && requestedTokenType !== TOKEN_TYPE_TXN) throw new Error('a workload ID has a path');
  } catch (err) {
    throw tokenError('ERR_TOKEN_TARGET_INVALID', `audience ${JSON.stringify(audience.slice(0, 120))} is not a workload SPIFFE ID: ${(err as Error).message}`);
  }

  const scopes = parseScope(one('scope'));

  const assertion = token('client_assertion', false);
  const assertionType = one('client_assertion_type');
  if (assertion !== undefined && assertionType !== CLIENT_ASSERTION_TYPE_JWT)
    throw tokenError('ERR_TOKEN_CLIENT_INVALID', `client_assertion_type must be ${CLIENT_ASSERTION_TYPE_JWT}`);
  if (assertion === undefined && assertionType !== undefined) throw invalid('client_assertion_type is given without client_assertion');
  const clientId = one('client_id');
  if (clientId !== undefined && clientId.length > 2048) throw invalid('client_id is longer than 2048 characters');

  const requestContext = context(one('request_context'), 'request_context');
  const requestDetails = context(one('request_details'), 'request_details');
  return {
    subjectToken,
    subjectTokenType,
    ...(actorToken !== undefined ? { actorToken, actorTokenType: actorTokenType! } : {}),
    audience,
    scopes,
    requestedTokenType,
    ...(assertion !== undefined ? { clientAssertion: assertion } : {}),
    ...(clientId ? { clientId } : {}),
    ...(requestContext ? { requestContext } : {}),
    ...(requestDetails ? { requestDetails } : {}),
  };
}
