/**
 * The one enforcement core. Every enforcement point (the proxy, the SDK middleware, the agent's
 * Check) decides, names, records and logs a decision here, and turns its reason into an answer
 * here, so the same reason always gets the same answer wherever it is decided.
 */
import { formatAction, normalizePath, parseAction, type ActionRequest, type AuthzRequest, type Decision } from '@writ/policy';
import { isWritError } from '@writ/spiffe';
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
  if (decision.decision !== 'allow')
    o.log?.({ decisionId, from: req.from ?? null, to: req.to, action, decision: decision.decision, reason: decision.reason, rule });
  return { decision, decisionId };
}

/** An HTTP answer instead of the request: its status and JSON body. */
export interface HttpRefusal {
  readonly status: 400 | 401 | 403;
  readonly body: { readonly code: string; readonly decisionId?: string; readonly message?: string };
}

/**
 * The HTTP answer to a refused request, the same at every HTTP enforcement point: 401 for a caller
 * without an identity, 403 for every other deny, each `{code: reason, decisionId}`; undefined when
 * the request may proceed (an audit-mode would-deny included).
 */
export function httpRefusal(e: Enforced): HttpRefusal | undefined {
  if (e.decision.allowed) return undefined;
  return { status: e.decision.reason === 'UNAUTHENTICATED' ? 401 : 403, body: { code: e.decision.reason, decisionId: e.decisionId } };
}

/** The gRPC status of a refused call: UNAUTHENTICATED (16) without an identity, else PERMISSION_DENIED (7), the reason and id in the message. */
export function grpcRefusal(e: Enforced): { readonly status: 7 | 16; readonly message: string } | undefined {
  if (e.decision.allowed) return undefined;
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
