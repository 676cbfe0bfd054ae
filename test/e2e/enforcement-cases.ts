/**
 * The one table every enforcement point passes (the proxy over HTTP/1.1 and HTTP/2, the SDK
 * middleware, the agent's Check), as hono runs every router through one conformance test: the
 * same reason gets the same answer wherever it is decided.
 */
import assert from 'node:assert/strict';

const NS = 'spiffe://e2e.test/ns';
export const CALLER = {
  web: `${NS}/web/sa/frontend`,
  legacy: `${NS}/legacy/sa/batch`,
  audited: `${NS}/audited/sa/job`,
  /** Allowed by the web rule, but quarantined before the table runs. */
  quarantined: `${NS}/web/sa/stolen`,
} as const;

/** The policy the table is decided by, for the service `to`. */
export const tablePolicy = (to: string): string => `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: enforcement-table }
spec:
  to: ${to}
  rules:
    - { effect: allow, from: ["${NS}/web/**", "${NS}/audited/**"], actions: [{ methods: [GET], paths: ["/v1/orders/*"] }] }
    - { effect: deny, from: ["${NS}/legacy/**"] }
    - { effect: deny, mode: audit, from: ["${NS}/audited/**"] }
`;

export interface EnforcementCase {
  readonly name: string;
  /** The caller's identity; undefined for a caller that presents none. */
  readonly from: string | undefined;
  readonly method: string;
  /** Sent as it is (no client may resolve its dot segments first). */
  readonly path: string;
  /** The HTTP answer: 200 is the app's; any other the enforcement point's, with this `code`. */
  readonly http: { readonly status: number; readonly code?: string };
  /** The agent's Check answer: a decision, or a gRPC status whose details name `code`. */
  readonly check: { readonly decision: string; readonly reason: string } | { readonly status: string; readonly code: string };
}

export const CASES: readonly EnforcementCase[] = [
  { name: 'allowed', from: CALLER.web, method: 'GET', path: '/v1/orders/7', http: { status: 200 }, check: { decision: 'allow', reason: 'ALLOW_RULE' } },
  {
    name: 'denied by a deny rule',
    from: CALLER.legacy,
    method: 'GET',
    path: '/v1/orders/7',
    http: { status: 403, code: 'DENY_RULE' },
    check: { decision: 'deny', reason: 'DENY_RULE' },
  },
  {
    name: 'no matching allow',
    from: CALLER.web,
    method: 'POST',
    path: '/v1/orders/7',
    http: { status: 403, code: 'NO_MATCHING_ALLOW' },
    check: { decision: 'deny', reason: 'NO_MATCHING_ALLOW' },
  },
  {
    name: 'unauthenticated',
    from: undefined,
    method: 'GET',
    path: '/v1/orders/7',
    http: { status: 401, code: 'UNAUTHENTICATED' },
    check: { decision: 'deny', reason: 'UNAUTHENTICATED' },
  },
  {
    name: 'quarantined caller',
    from: CALLER.quarantined,
    method: 'GET',
    path: '/v1/orders/7',
    http: { status: 403, code: 'QUARANTINED' },
    check: { decision: 'deny', reason: 'QUARANTINED' },
  },
  {
    name: 'audit-would-deny passes',
    from: CALLER.audited,
    method: 'GET',
    path: '/v1/orders/7',
    http: { status: 200 },
    check: { decision: 'audit-would-deny', reason: 'AUDIT_ALLOWED' },
  },
  {
    name: 'a path with a dot segment',
    from: CALLER.web,
    method: 'GET',
    path: '/v1/orders/./7',
    http: { status: 400, code: 'ERR_PATH_INVALID' },
    check: { status: 'INVALID_ARGUMENT', code: 'ERR_PATH_INVALID' },
  },
];

/** Asserts an HTTP enforcement point's answer to `c`: status, and for a refusal `{code, decisionId}` (400: `{code, message}`). */
export function assertHttpAnswer(point: string, c: EnforcementCase, status: number, body: Record<string, unknown>): void {
  const what = `${point}, ${c.name}: ${status} ${JSON.stringify(body)}`;
  assert.equal(status, c.http.status, what);
  if (!c.http.code) return;
  assert.equal(body['code'], c.http.code, what);
  if (status === 400) assert.equal(typeof body['message'], 'string', what);
  else assert.match(String(body['decisionId']), /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, what);
}

/** Asserts the agent's Check answer to `c` (the Python client's JSON). */
export function assertCheckAnswer(c: EnforcementCase, r: Record<string, unknown>): void {
  const what = `Check, ${c.name}: ${JSON.stringify(r)}`;
  if ('status' in c.check) {
    assert.equal(r['status'], c.check.status, what);
    assert.match(String(r['details']), new RegExp(c.check.code), what);
    return;
  }
  assert.equal(r['decision'], c.check.decision, what);
  assert.equal(r['reason'], c.check.reason, what);
  assert.equal(r['allowed'], c.http.status === 200, what);
  assert.match(String(r['id']), /^[0-9a-f-]{36}$/, what);
}
