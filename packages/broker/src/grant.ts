/**
 * Deciding a token exchange: the rules that hold whatever the policy says (scopes only narrow,
 * no loops, the depth limit), then the TokenPolicies. Every answer has a reason, grant or refusal,
 * for the decision log.
 */
import type { BrokerErrorCode } from './errors.ts';
import type { IssuedTokenType } from './request.ts';
import { MAX_DEPTH_LIMIT, MAX_TTL_MS, matchesAny, outsideWindow, scopeAllowed, type TokenPolicy } from './token-policy.ts';

/** What the subject token said, once verified. */
export interface SubjectInfo {
  /** The original subject's SPIFFE ID (`sub`). */
  readonly id: string;
  readonly kind: 'jwt-svid' | 'access-token' | 'txn-token';
  /** A Writ token's scopes; undefined for a JWT-SVID (which carries none). */
  readonly scopes?: readonly string[];
  /** Earlier actors, outermost (most recent) first; empty for a JWT-SVID. */
  readonly actors: readonly string[];
  /** Epoch ms; the issued token never outlives it. */
  readonly expiresAt: number;
  /** The transaction a Writ token belongs to; kept along a chain. */
  readonly txn?: string;
  /** A transaction token's requesting workloads (`req_wl`), first first. */
  readonly requestingWorkloads?: readonly string[];
}

export interface GrantRequest {
  /** The authenticated client's SPIFFE ID: the current actor. */
  readonly client: string;
  readonly subject: SubjectInfo;
  /** The `sub` of a verified actor_token, when one was given. */
  readonly actor?: string;
  readonly audience: string;
  readonly scopes: readonly string[];
  readonly requestedTokenType: IssuedTokenType;
  /** Epoch ms. */
  readonly now: number;
}

export type GrantDecision =
  | {
      readonly granted: true;
      readonly policy: string;
      readonly scopes: readonly string[];
      /** The new token's actors, outermost (the client) first; empty when the client exchanges its own token. */
      readonly actors: readonly string[];
      readonly ttlMs: number;
      readonly reason: string;
    }
  | { readonly granted: false; readonly code: BrokerErrorCode; readonly policy?: string; readonly reason: string };

const refuse = (code: BrokerErrorCode, reason: string, policy?: string): GrantDecision => ({
  granted: false,
  code,
  reason,
  ...(policy !== undefined ? { policy } : {}),
});

/**
 * Decides one exchange against the TokenPolicies (sorted by name; the first that grants wins). A
 * refusal names the policy that came closest and the check it failed.
 * @example decideGrant(policies, { client, subject, audience, scopes: ['orders:read'], requestedTokenType: TOKEN_TYPE_JWT, now: Date.now() })
 */
export function decideGrant(policies: readonly TokenPolicy[], req: GrantRequest): GrantDecision {
  const { client, subject } = req;
  if (req.actor !== undefined && req.actor !== client)
    return refuse('ERR_TOKEN_GRANT_INVALID', `actor_token names ${req.actor}, but the authenticated client is ${client}: a client acts only as itself`);
  // Exchanging one's own token is no delegation: no act claim.
  const actors = subject.id === client && subject.actors.length === 0 ? [] : [client, ...subject.actors];
  const seen = new Set<string>([subject.id]);
  for (const a of actors) {
    if (seen.has(a))
      return refuse('ERR_TOKEN_GRANT_INVALID', `the act chain loops: ${a} appears twice in ${[subject.id, ...[...actors].reverse()].join(' -> ')}`);
    seen.add(a);
  }
  if (actors.length > MAX_DEPTH_LIMIT)
    return refuse('ERR_TOKEN_GRANT_INVALID', `the delegation chain would be ${actors.length} actors deep; never more than ${MAX_DEPTH_LIMIT}`);
  if (req.scopes.length === 0) return refuse('ERR_TOKEN_SCOPE_INVALID', 'scope is required: the scopes the token is for');
  if (subject.scopes) {
    const wider = req.scopes.filter((s) => !subject.scopes!.includes(s));
    if (wider.length)
      return refuse(
        'ERR_TOKEN_SCOPE_INVALID',
        `scopes only narrow along a chain: ${wider.join(' ')} not in the subject token's scope (${subject.scopes.join(' ') || 'none'})`,
      );
  }
  const remaining = subject.expiresAt - req.now;
  if (remaining <= 0) return refuse('ERR_TOKEN_GRANT_INVALID', 'the subject token has expired');

  let best: { stage: number; decision: GrantDecision } | undefined;
  const miss = (stage: number, code: BrokerErrorCode, reason: string, policy: string): void => {
    if (!best || stage > best.stage) best = { stage, decision: refuse(code, reason, policy) };
  };
  for (const p of policies) {
    const ref = `TokenPolicy ${p.name}`;
    if (!matchesAny(p.clients, client)) {
      miss(0, 'ERR_TOKEN_CLIENT_UNAUTHORIZED', `no TokenPolicy lets ${client} obtain tokens`, p.name);
      continue;
    }
    if (!p.requestedTokenTypes.includes(req.requestedTokenType)) {
      miss(1, 'ERR_TOKEN_CLIENT_UNAUTHORIZED', `${ref} does not issue ${req.requestedTokenType}`, p.name);
      continue;
    }
    if (!matchesAny(p.audiences, req.audience)) {
      miss(2, 'ERR_TOKEN_TARGET_INVALID', `${ref} does not allow ${client} tokens for audience ${req.audience}`, p.name);
      continue;
    }
    if (!matchesAny(p.subjects, subject.id)) {
      miss(3, 'ERR_TOKEN_GRANT_INVALID', `${ref} does not allow tokens on behalf of ${subject.id}`, p.name);
      continue;
    }
    const denied = req.scopes.filter((s) => !scopeAllowed(p.scopes, s));
    if (denied.length) {
      miss(4, 'ERR_TOKEN_SCOPE_INVALID', `${ref} does not grant ${denied.join(' ')} to ${client} for ${req.audience}`, p.name);
      continue;
    }
    if (actors.length > p.maxDepth) {
      miss(5, 'ERR_TOKEN_GRANT_INVALID', `the delegation chain would be ${actors.length} actors deep; ${ref} allows ${p.maxDepth}`, p.name);
      continue;
    }
    if (p.checkChain) {
      const outsider = actors.slice(1).find((a) => !matchesAny(p.clients, a));
      if (outsider) {
        miss(6, 'ERR_TOKEN_CLIENT_UNAUTHORIZED', `${ref} checks the whole chain: earlier actor ${outsider} is not one of its clients`, p.name);
        continue;
      }
    }
    const out = p.when ? outsideWindow(p.when, req.now) : undefined;
    if (out) {
      miss(7, 'ERR_TOKEN_CLIENT_UNAUTHORIZED', `${ref}: ${out}`, p.name);
      continue;
    }
    const ttlMs = Math.min(p.maxTtlMs, MAX_TTL_MS, remaining);
    return {
      granted: true,
      policy: p.name,
      scopes: req.scopes,
      actors,
      ttlMs,
      reason: `granted by ${ref}: ${req.scopes.join(' ')} for ${req.audience}${actors.length ? ` (act chain ${actors.length} deep)` : ''}`,
    };
  }
  return best?.decision ?? refuse('ERR_TOKEN_CLIENT_UNAUTHORIZED', `no TokenPolicy lets ${client} obtain tokens (there are none)`);
}
