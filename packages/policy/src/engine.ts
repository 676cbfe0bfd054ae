/**
 * The decision engine. Policies compile into a trie keyed by destination; each destination node
 * holds a trie of its rules keyed by source, so a decision walks two short tries and never scans the
 * rule list. Semantics, in order: not loaded -> deny; no authenticated caller -> deny; quarantine
 * (either side, unless the caller is break-glass) -> deny; any matching deny -> deny; any matching
 * allow -> allow; otherwise deny. Audit mode computes the same answer but lets the request pass.
 * Learning (a LearningWindow until its end, or a policy in `mode: learn`) lets every authenticated,
 * unquarantined call to its destination pass with reason LEARNING, whatever the other policies say:
 * the decision log then holds every edge observed into it.
 */
import { WritError, parseSpiffeId } from '@writ/spiffe';
import type { Action, Policy, Rule, TokenCondition } from './model.ts';
import { SegmentTrie, idSegments, matchSegments, normalizePath } from './pattern.ts';

export const REASONS = [
  'ALLOW_RULE',
  'DENY_RULE',
  'NO_MATCHING_ALLOW',
  'QUARANTINED',
  'UNAUTHENTICATED',
  'NO_POLICY_LOADED',
  'AUDIT_ALLOWED',
  'LEARNING',
] as const;
export type Reason = (typeof REASONS)[number];

export type ActionRequest =
  | { readonly kind: 'http'; readonly method: string; readonly path: string; readonly port?: number }
  | { readonly kind: 'grpc'; readonly method: string; readonly port?: number }
  | { readonly kind: 'tcp'; readonly port: number };

export interface AuthzRequest {
  /** The caller's SPIFFE ID; undefined when it presented none. */
  readonly from: string | undefined;
  readonly to: string;
  readonly action: ActionRequest;
  /** Lowercase header names (HTTP/gRPC), for `when` conditions. */
  readonly headers?: Readonly<Record<string, string | undefined>>;
  /** The Writ token the request carries, already verified by the enforcement point, for `token` conditions. */
  readonly token?: TokenContext;
}

/** What a `token` condition sees of a verified token (a `@writ/broker/verify` VerifiedToken is one). */
export interface TokenContext {
  readonly type: 'access-token' | 'txn-token';
  readonly subject: string;
  readonly audience: readonly string[];
  readonly scopes: readonly string[];
  /** The actors of `act`, outermost first. */
  readonly actors: readonly string[];
}

/**
 * Why the nearest rule with a `token` condition did not match a request that matched it
 * otherwise: `missing` (no verified token), `scope`, `depth`, `type`, `subject`, `audience`.
 */
export interface TokenMismatch {
  readonly kind: 'missing' | 'scope' | 'depth' | 'type' | 'subject' | 'audience';
  readonly message: string;
  readonly rule: RuleRef;
}

export interface RuleRef {
  readonly policy: string;
  readonly index: number;
  readonly name: string;
  readonly line: number;
}

export interface Decision {
  /** allow; deny; or audit-would-deny (denied by an audit-mode rule or policy: the request passes). */
  readonly decision: 'allow' | 'deny' | 'audit-would-deny';
  /** Whether the request may proceed. */
  readonly allowed: boolean;
  readonly reason: Reason;
  readonly rule: RuleRef | undefined;
  readonly revision: number;
  /** On a NO_MATCHING_ALLOW deny: an allow rule that matched but for its token condition, and why. */
  readonly token?: TokenMismatch;
}

const CACHE_ENTRIES = 100_000;

const ref = (r: Rule): RuleRef => ({ policy: r.policy, index: r.index, name: r.name, line: r.line });

interface CompiledPolicy {
  readonly policy: Policy;
  readonly byFrom: SegmentTrie<Rule>;
}

function splitGrpc(method: string): string[] {
  return method.startsWith('/') ? method.slice(1).split('/') : method.split('/');
}

function actionMatches(actions: readonly Action[] | null, a: ActionRequest): boolean {
  if (actions === null) return true;
  for (const x of actions) {
    if (x.kind === 'tcp') {
      const port = a.port;
      if (port !== undefined && x.ports.includes(port)) return true;
    } else if (x.kind === 'http' && a.kind !== 'tcp') {
      // A gRPC call is an HTTP POST to /package.Service/Method, and HTTP rules see it as one.
      if (x.methods !== null && !x.methods.includes(a.kind === 'http' ? a.method : 'POST')) continue;
      if (x.paths === null) return true;
      const path = a.kind === 'http' ? a.path : a.method;
      const segs = path === '/' ? [] : path.slice(1).split('/');
      if (x.paths.some((p) => matchSegments(p.segments, segs))) return true;
    } else if (x.kind === 'grpc' && a.kind === 'grpc') {
      const segs = splitGrpc(a.method);
      if (x.methods.some((p) => matchSegments(p.segments, segs))) return true;
    }
  }
  return false;
}

function whenHolds(rule: Rule, headers: AuthzRequest['headers']): boolean {
  for (const c of rule.when) {
    const v = headers?.[c.header];
    if (c.equals !== undefined ? v !== c.equals : c.present === false ? v !== undefined : v === undefined) return false;
  }
  return true;
}

/** Why `token` does not satisfy `c`, or undefined when it does. */
export function tokenMismatch(c: TokenCondition, token: TokenContext | undefined): Omit<TokenMismatch, 'rule'> | undefined {
  if (!token) return { kind: 'missing', message: `a Writ token with scope ${c.scopes.join(' ')} is required` };
  const missing = c.scopes.filter((s) => !token.scopes.includes(s));
  if (missing.length) return { kind: 'scope', message: `the token's scope (${token.scopes.join(' ').slice(0, 200)}) does not cover ${missing.join(' ')}` };
  if (c.type !== undefined && (c.type === 'jwt') !== (token.type === 'access-token'))
    return { kind: 'type', message: `a ${c.type === 'jwt' ? 'access token (jwt)' : 'transaction token (txn_token)'} is required, not a ${token.type}` };
  if (c.maxDepth !== undefined && token.actors.length > c.maxDepth)
    return { kind: 'depth', message: `the delegation chain is ${token.actors.length} actors deep; at most ${c.maxDepth} accepted` };
  if (c.subject && !matchSegments(c.subject.segments, idSegments(token.subject)))
    return { kind: 'subject', message: `the token's subject ${token.subject.slice(0, 200)} is not ${c.subject.source}` };
  if (c.audience && !token.audience.some((a) => matchSegments(c.audience!.segments, idSegments(a))))
    return { kind: 'audience', message: `the token's audience is not ${c.audience.source}` };
  return undefined;
}

export interface EngineOptions {
  readonly revision?: number;
  /** Identities that may call (and be called by) quarantined workloads. */
  readonly breakGlass?: readonly string[];
  readonly clock?: () => number;
}

export class PolicyEngine {
  readonly #byTo = new SegmentTrie<CompiledPolicy>();
  // Reused result arrays: decide() is synchronous, so one of each is enough.
  readonly #scratchPolicies: CompiledPolicy[] = [];
  readonly #scratchRules: Rule[] = [];
  /**
   * Decisions remembered by (from, to, action): the policy set of an engine never changes (a new
   * revision is a new engine), quarantine is checked before the cache, rule expiry clears it, and
   * decisions that depended on headers are not stored. Bounded; oldest first out.
   */
  readonly #cache = new Map<string, Decision>();
  #nextExpiry = -Infinity;
  readonly #policies: readonly Policy[];
  readonly #breakGlass: ReadonlySet<string>;
  readonly #clock: () => number;
  #quarantine: ReadonlySet<string> = new Set();
  readonly revision: number;
  readonly loaded: boolean;

  constructor(policies: readonly Policy[] | undefined, opts: EngineOptions = {}) {
    this.loaded = policies !== undefined;
    this.#policies = policies ?? [];
    this.revision = opts.revision ?? 0;
    this.#breakGlass = new Set(opts.breakGlass ?? []);
    this.#clock = opts.clock ?? Date.now;
    for (const p of this.#policies) {
      const byFrom = new SegmentTrie<Rule>();
      for (const r of p.rules) for (const f of r.from) byFrom.insert(f.segments, r);
      this.#byTo.insert(p.to.segments, { policy: p, byFrom });
    }
  }

  get policies(): readonly Policy[] {
    return this.#policies;
  }

  /** Replaces the set of quarantined identities (applied before any rule). */
  setQuarantine(ids: Iterable<string>): void {
    this.#quarantine = new Set(ids);
  }

  /** Forgets remembered decisions (the benchmark measures cold decisions with it). */
  clearCache(): void {
    this.#cache.clear();
  }

  get quarantined(): ReadonlySet<string> {
    return this.#quarantine;
  }

  decide(req: AuthzRequest): Decision {
    const revision = this.revision;
    const from = req.from;
    const anonymous = from === undefined || from === '';
    // Quarantine first, before anything else is known: also with no policy loaded yet (callers that
    // close connections on QUARANTINED would otherwise keep a quarantined peer), and for a caller
    // with no identity calling a quarantined service.
    if (
      this.#quarantine.size > 0 &&
      (anonymous ? this.#quarantine.has(req.to) : !this.#breakGlass.has(from) && (this.#quarantine.has(from) || this.#quarantine.has(req.to)))
    ) {
      return { decision: 'deny', allowed: false, reason: 'QUARANTINED', rule: undefined, revision };
    }
    if (!this.loaded) return { decision: 'deny', allowed: false, reason: 'NO_POLICY_LOADED', rule: undefined, revision };
    if (anonymous) return { decision: 'deny', allowed: false, reason: 'UNAUTHENTICATED', rule: undefined, revision };
    const now = this.#clock();
    if (now >= this.#nextExpiry) this.#onExpiry(now);
    const a = req.action;
    const key = `${from}\n${req.to}\n${a.kind === 'tcp' ? a.port : a.kind === 'http' ? `${a.method} ${a.path} ${a.port ?? ''}` : `${a.method} ${a.port ?? ''}`}`;
    const hit = this.#cache.get(key);
    if (hit) return hit;
    const fromSeg = idSegments(from);
    let conditional = false;
    let enforceDeny: Rule | undefined;
    let auditDeny: Rule | undefined;
    let allow: Rule | undefined;
    let governed = false;
    let enforced = false;
    let nearToken: TokenMismatch | undefined;
    let learning = false;
    const policies = this.#byTo.collect(idSegments(req.to), this.#scratchPolicies);
    for (let p = 0; p < policies.length; p++) {
      const cp = policies[p]!;
      if (cp.policy.mode === 'learn') {
        // An ended window has no effect at all: the destination's own policies decide again.
        if (cp.policy.until !== undefined && cp.policy.until <= now) continue;
        learning = true;
      }
      governed = true;
      if (cp.policy.mode === 'enforce') enforced = true;
      const rules = cp.byFrom.collect(fromSeg, this.#scratchRules);
      for (let k = 0; k < rules.length; k++) {
        const r = rules[k]!;
        if (r.expires !== null && r.expires <= now) continue;
        if (r.effect === 'deny' ? (r.mode === 'enforce' ? enforceDeny : auditDeny) : allow) continue; // already have one of this kind
        if (r.when.length > 0 || r.token) conditional = true;
        if (!actionMatches(r.actions, req.action) || !whenHolds(r, req.headers)) continue;
        if (r.token) {
          const why = tokenMismatch(r.token, req.token);
          if (why) {
            if (r.effect === 'allow' && !nearToken) nearToken = { ...why, rule: ref(r) };
            continue;
          }
        }
        if (r.effect === 'allow') allow = r;
        else if (r.mode === 'enforce') enforceDeny = r;
        else auditDeny = r;
      }
      rules.length = 0;
    }
    policies.length = 0;
    let d: Decision;
    if (enforceDeny) d = { decision: 'deny', allowed: false, reason: 'DENY_RULE', rule: ref(enforceDeny), revision };
    else if (auditDeny) d = { decision: 'audit-would-deny', allowed: true, reason: 'AUDIT_ALLOWED', rule: ref(auditDeny), revision };
    else if (allow) d = { decision: 'allow', allowed: true, reason: 'ALLOW_RULE', rule: ref(allow), revision };
    // Nothing allows it. Governed only by audit-mode policies: it passes, logged as would-deny.
    else if (governed && !enforced) d = { decision: 'audit-would-deny', allowed: true, reason: 'AUDIT_ALLOWED', rule: undefined, revision };
    else d = { decision: 'deny', allowed: false, reason: 'NO_MATCHING_ALLOW', rule: undefined, revision, ...(nearToken ? { token: nearToken } : {}) };
    // Learning: it passes; what the policies would have said stays in `decision` and `rule`.
    if (learning) d = { decision: d.allowed ? d.decision : 'audit-would-deny', allowed: true, reason: 'LEARNING', rule: d.rule, revision };
    // Header (and token) conditions make the answer depend on more than the key: those are not remembered.
    if (!conditional) {
      if (this.#cache.size >= CACHE_ENTRIES) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(key, Object.freeze(d));
    }
    return d;
  }

  /** A rule expired: remembered decisions may be stale. */
  #onExpiry(now: number): void {
    this.#cache.clear();
    let next = Infinity;
    for (const p of this.#policies) {
      if (p.until !== undefined && p.until > now && p.until < next) next = p.until;
      for (const r of p.rules) if (r.expires !== null && r.expires > now && r.expires < next) next = r.expires;
    }
    this.#nextExpiry = next;
  }

  /**
   * The decision with why: the deciding rule, or for a deny without a deny rule the nearest rules
   * and which of their fields did not match. Not on the hot path: it scans.
   */
  explain(req: AuthzRequest): Decision & { nearest: Array<RuleRef & { effect: 'allow' | 'deny'; mismatched: string[] }> } {
    const d = this.decide(req);
    if (d.rule || (d.reason !== 'NO_MATCHING_ALLOW' && d.reason !== 'AUDIT_ALLOWED')) return { ...d, nearest: [] };
    const now = this.#clock();
    const fromSeg = req.from ? idSegments(req.from) : [];
    const toSeg = idSegments(req.to);
    const scored: Array<RuleRef & { effect: 'allow' | 'deny'; mismatched: string[] }> = [];
    for (const p of this.#policies) {
      const toOk = matchSegments(p.to.segments, toSeg);
      for (const r of p.rules) {
        if (r.effect !== 'allow') continue;
        const mismatched: string[] = [];
        if (!toOk) mismatched.push('to');
        if (!r.from.some((f) => matchSegments(f.segments, fromSeg))) mismatched.push('from');
        if (!actionMatches(r.actions, req.action)) mismatched.push('action');
        if (!whenHolds(r, req.headers) || (r.token && tokenMismatch(r.token, req.token))) mismatched.push('when');
        if (r.expires !== null && r.expires <= now) mismatched.push('expires');
        scored.push({ ...ref(r), effect: r.effect, mismatched });
      }
    }
    scored.sort((a, b) => a.mismatched.length - b.mismatched.length || a.policy.localeCompare(b.policy) || a.index - b.index);
    return { ...d, nearest: scored.slice(0, 3) };
  }
}

/**
 * The action of an HTTP request as an enforcement point decides it: a gRPC call (content type
 * `application/grpc`, `application/grpc+proto`, `application/grpc-web`..., a POST to
 * `/package.Service/Method`) is the gRPC action, so `grpc:` rules apply to it (and HTTP rules
 * still see it as that POST); anything else is `METHOD /path`. `path` is in normal form already.
 */
export function httpAction(method: string, path: string, contentType: string | undefined, port?: number): ActionRequest {
  const port_ = port === undefined ? {} : { port };
  if (method === 'POST' && contentType !== undefined && /^application\/grpc(?:[-+;]|$)/i.test(contentType) && /^\/[^/]+\/[^/]+$/.test(path))
    return { kind: 'grpc', method: path, ...port_ };
  return { kind: 'http', method, path, ...port_ };
}

/**
 * Parses an action as written on the command line or in policy tests:
 * `GET /v1/orders/42`, `grpc /orders.v1.Orders/Get`, `tcp 5432` (or `tcp:5432`, or just `5432`).
 */
export function parseAction(s: string): ActionRequest {
  const t = s.trim();
  let m: RegExpExecArray | null;
  if ((m = /^(?:tcp[: ])?\s*(\d{1,5})$/i.exec(t))) {
    const port = Number(m[1]);
    if (port >= 1 && port <= 65535) return { kind: 'tcp', port };
  }
  if ((m = /^grpc[: ]\s*(\/?[A-Za-z0-9_.]+\/[A-Za-z0-9_]+)$/i.exec(t))) return { kind: 'grpc', method: m[1]!.startsWith('/') ? m[1]! : `/${m[1]}` };
  if ((m = /^([A-Za-z]+)\s+(\/\S*)$/.exec(t))) {
    // Any request path, decided in the normal form the proxy and the SDK decide it in.
    let path: string;
    try {
      path = normalizePath(m[2]!.split('?')[0]!);
    } catch (err) {
      throw new WritError('ERR_ACTION_INVALID', `action ${JSON.stringify(t.slice(0, 80))}: ${(err as Error).message}`, { field: 'action' });
    }
    return { kind: 'http', method: m[1]!.toUpperCase(), path };
  }
  throw new WritError('ERR_ACTION_INVALID', `action ${JSON.stringify(t.slice(0, 80))} is not "METHOD /path", "grpc /pkg.Service/Method" or "tcp PORT"`, {
    field: 'action',
  });
}

/** An action as `parseAction` reads it, and as decision logs show it: `GET /path`, `grpc /pkg.Service/Method`, `tcp 5432`. */
export function formatAction(a: ActionRequest): string {
  return a.kind === 'tcp' ? `tcp ${a.port}` : a.kind === 'http' ? `${a.method} ${a.path}` : `grpc ${a.method}`;
}

/** Checks the identities of a request as given by a person (CLI, API). */
export function checkRequestIds(req: { from?: string; to: string }): void {
  if (req.from !== undefined) parseSpiffeId(req.from);
  parseSpiffeId(req.to);
}
