/**
 * Policy tests for CI: documents of `kind: PolicyTest` with cases run against a policy set.
 *
 *   kind: PolicyTest
 *   cases:
 *     - name: web reads orders
 *       from: spiffe://prod.example/ns/web/sa/frontend
 *       to: spiffe://prod.example/ns/orders/sa/api
 *       action: GET /v1/orders/42
 *       headers: { x-env: prod }     # optional
 *       token: { subject: spiffe://prod.example/users/alice, scope: orders:read }  # optional: a verified token
 *                                    # (also type: jwt | txn_token, actors: [...], audience: [...]; audience default `to`)
 *       expect: allow                # allow | deny | audit-would-deny
 */
import { WritError } from '@writ/spiffe';
import { type PolicyEngine, checkRequestIds, parseAction, type Decision, type TokenContext } from './engine.ts';

export interface PolicyTestResult {
  readonly name: string;
  readonly passed: boolean;
  readonly expected: string;
  readonly got: Decision;
}

const EXPECT = ['allow', 'deny', 'audit-would-deny'];

const strings = (v: unknown, what: string): string[] => {
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') return v.split(' ').filter((x) => x !== '');
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  throw new WritError('ERR_POLICY_INVALID', `${what} must be a string or a list of strings`);
};

/** A case's `token`: what an enforcement point would pass on after verifying one. */
function caseToken(v: unknown, to: string, name: string): TokenContext | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw new WritError('ERR_POLICY_INVALID', `${name}: token must be a mapping`);
  const t = v as Record<string, unknown>;
  for (const k of Object.keys(t))
    if (!['subject', 'scope', 'type', 'actors', 'audience'].includes(k)) throw new WritError('ERR_POLICY_INVALID', `${name}: unknown field "token.${k}"`);
  if (typeof t['subject'] !== 'string') throw new WritError('ERR_POLICY_INVALID', `${name}: token.subject must be a SPIFFE ID`);
  const type = t['type'] ?? 'jwt';
  if (type !== 'jwt' && type !== 'txn_token') throw new WritError('ERR_POLICY_INVALID', `${name}: token.type must be jwt or txn_token`);
  const audience = strings(t['audience'], `${name}: token.audience`);
  return {
    type: type === 'jwt' ? 'access-token' : 'txn-token',
    subject: t['subject'],
    audience: audience.length ? audience : [to],
    scopes: strings(t['scope'], `${name}: token.scope`),
    actors: strings(t['actors'], `${name}: token.actors`),
  };
}

export function runPolicyTests(engine: PolicyEngine, docs: ReadonlyArray<{ kind: string; value: unknown; line: number }>): PolicyTestResult[] {
  const out: PolicyTestResult[] = [];
  for (const d of docs) {
    if (d.kind !== 'PolicyTest') throw new WritError('ERR_POLICY_INVALID', `line ${d.line}: unknown kind "${d.kind}" (expected AccessPolicy or PolicyTest)`);
    const cases = (d.value as { cases?: unknown }).cases;
    if (!Array.isArray(cases) || cases.length === 0) throw new WritError('ERR_POLICY_INVALID', `line ${d.line}: a PolicyTest needs a non-empty "cases" list`);
    cases.forEach((c: Record<string, unknown>, i) => {
      const name = typeof c?.['name'] === 'string' ? c['name'] : `case ${i + 1} (line ${d.line})`;
      for (const k of Object.keys(c ?? {}))
        if (!['name', 'from', 'to', 'action', 'headers', 'token', 'expect'].includes(k))
          throw new WritError('ERR_POLICY_INVALID', `${name}: unknown field "${k}"`);
      const expect = String(c['expect']);
      if (!EXPECT.includes(expect)) throw new WritError('ERR_POLICY_INVALID', `${name}: expect must be ${EXPECT.join(', ')}`);
      const from = c['from'] === undefined || c['from'] === null ? undefined : String(c['from']);
      const to = String(c['to']);
      try {
        checkRequestIds({ ...(from !== undefined ? { from } : {}), to });
      } catch (err) {
        throw new WritError('ERR_POLICY_INVALID', `${name}: ${(err as Error).message}`);
      }
      const headers = Object.fromEntries(Object.entries((c['headers'] as Record<string, unknown>) ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]));
      const token = caseToken(c['token'], to, name);
      const got = engine.decide({ from, to, action: parseAction(String(c['action'] ?? '')), headers, ...(token ? { token } : {}) });
      out.push({ name, passed: got.decision === expect, expected: expect, got });
    });
  }
  return out;
}
