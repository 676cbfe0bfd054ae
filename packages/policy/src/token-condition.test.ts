import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PolicyEngine, parseAction, type AuthzRequest, type TokenContext } from './engine.ts';
import { PolicyError, parsePolicies } from './model.ts';
import { runPolicyTests } from './policy-test.ts';

const TD = 'spiffe://t.test';
const ORDERS = `${TD}/ns/shop/orders`;
const WEB = `${TD}/ns/shop/web`;

const POLICY = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${ORDERS}
  rules:
    - name: read-with-token
      effect: allow
      from: [${TD}/ns/shop/*]
      actions: [{ methods: [GET], paths: ["/v1/orders/*"] }]
      when: [{ token: { scope: orders:read, subject: "${TD}/users/*", maxDepth: 1 } }]
    - name: write-with-txn
      effect: allow
      from: [${TD}/ns/shop/*]
      actions: [{ methods: [POST], paths: ["/v1/orders"] }]
      when: [{ header: x-env, equals: prod }, { token: { scope: [orders:write, orders:read], type: txn_token } }]
    - name: health
      effect: allow
      from: [${TD}/**]
      actions: [{ methods: [GET], paths: ["/healthz"] }]
`;

const tok = (o: Partial<TokenContext> = {}): TokenContext => ({
  type: 'access-token',
  subject: `${TD}/users/alice`,
  audience: [ORDERS],
  scopes: ['orders:read'],
  actors: [WEB],
  ...o,
});
const req = (action: string, token?: TokenContext, headers?: Record<string, string>): AuthzRequest => ({
  from: WEB,
  to: ORDERS,
  action: parseAction(action),
  ...(token ? { token } : {}),
  ...(headers ? { headers } : {}),
});

const issuesOf = (text: string): string[] => {
  try {
    parsePolicies(text, { file: 'p.yaml' });
    return [];
  } catch (err) {
    assert.ok(err instanceof PolicyError, String(err));
    return err.issues.map((i) => `${i.line}: ${i.message}`);
  }
};

const withWhen = (when: string, protocol = 'any'): string => `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: p }
spec:
  to: ${ORDERS}
  protocol: ${protocol}
  rules:
    - effect: allow
      from: [${WEB}]
      when:
        ${when}
`;

describe('token conditions: the model', () => {
  it('reads scope (one or a list), subject, type and maxDepth beside header conditions', () => {
    const [p] = parsePolicies(POLICY).policies;
    const [read, write, health] = p!.rules;
    assert.deepEqual(read!.token?.scopes, ['orders:read']);
    assert.equal(read!.token?.subject?.source, `${TD}/users/*`);
    assert.equal(read!.token?.maxDepth, 1);
    assert.deepEqual(write!.token?.scopes, ['orders:write', 'orders:read']);
    assert.equal(write!.token?.type, 'txn_token');
    assert.deepEqual(write!.when, [{ header: 'x-env', equals: 'prod' }]);
    assert.equal(health!.token, null);
  });

  it('names the line of every problem', () => {
    assert.deepEqual(issuesOf(withWhen('- { token: { scope: "has space" } }')), [
      '11: rules[0].when[0].token.scope[0] must be a scope: 1 to 128 printable characters, no space, " or \\',
    ]);
    assert.deepEqual(issuesOf(withWhen('- { token: { scope: a, maxDepth: 9, type: saml } }')), [
      '11: rules[0].when[0].token.maxDepth must be a whole number from 0 to 5',
      '11: rules[0].when[0].token.type must be jwt or txn_token',
    ]);
    assert.deepEqual(issuesOf(withWhen('- { token: { audience: "spiffe://t.test/x" } }')), ['11: rules[0].when[0].token needs "scope"']);
    assert.match(issuesOf(withWhen('- { token: { scope: a, issuer: x } }'))[0]!, /^11: unknown field "issuer" in rules\[0\]\.when\[0\]\.token/);
    assert.match(issuesOf(withWhen('- { token: { scope: a }, header: x }'))[0]!, /^11: unknown field "header" in rules\[0\]\.when\[0\]/);
    assert.match(issuesOf(withWhen('- { token: { scope: a, subject: "not-an-id" } }'))[0]!, /^11: rules\[0\]\.when\[0\]\.token\.subject: /);
    assert.deepEqual(issuesOf(withWhen('- { token: { scope: a } }\n        - { token: { scope: b } }')), [
      '12: rules[0].when[1]: one token condition per rule (put every scope in one)',
    ]);
    assert.deepEqual(issuesOf(withWhen('- { token: { scope: a } }', 'tcp')), ['11: rules[0].when[0]: token conditions need HTTP, but spec.protocol is tcp']);
  });
});

describe('token conditions: the engine', () => {
  const e = new PolicyEngine(parsePolicies(POLICY).policies, { revision: 3 });

  it('allows only with a token whose scope covers the rule', () => {
    const d = e.decide(req('GET /v1/orders/42', tok()));
    assert.equal(d.decision, 'allow');
    assert.equal(d.rule?.name, 'read-with-token');
    assert.equal(e.decide(req('GET /healthz')).decision, 'allow', 'rules without a token condition still need none');
  });

  const refusals: Array<[string, AuthzRequest, string, RegExp]> = [
    ['no token', req('GET /v1/orders/42'), 'missing', /a Writ token with scope orders:read is required/],
    ['insufficient scope', req('GET /v1/orders/42', tok({ scopes: ['orders:list'] })), 'scope', /\(orders:list\) does not cover orders:read/],
    ['too deep', req('GET /v1/orders/42', tok({ actors: [WEB, `${TD}/ns/shop/edge`] })), 'depth', /2 actors deep; at most 1/],
    ['another subject', req('GET /v1/orders/42', tok({ subject: `${TD}/ns/shop/web` })), 'subject', /is not spiffe:\/\/t\.test\/users\/\*/],
    [
      'wrong type',
      req('POST /v1/orders', tok({ scopes: ['orders:write', 'orders:read'] }), { 'x-env': 'prod' }),
      'type',
      /transaction token \(txn_token\) is required/,
    ],
    [
      'one of two scopes',
      req('POST /v1/orders', tok({ type: 'txn-token', scopes: ['orders:write'] }), { 'x-env': 'prod' }),
      'scope',
      /does not cover orders:read/,
    ],
  ];
  for (const [what, r, kind, message] of refusals)
    it(`refuses: ${what}, naming the rule and why`, () => {
      const d = e.decide(r);
      assert.equal(d.decision, 'deny');
      assert.equal(d.reason, 'NO_MATCHING_ALLOW');
      assert.equal(d.token?.kind, kind);
      assert.match(d.token!.message, message);
      assert.ok(d.token!.rule.name === 'read-with-token' || d.token!.rule.name === 'write-with-txn');
    });

  it('header conditions of the same rule still apply, and decisions on tokens are not remembered', () => {
    const txn = tok({ type: 'txn-token', scopes: ['orders:write', 'orders:read'], actors: [] });
    assert.equal(e.decide(req('POST /v1/orders', txn, { 'x-env': 'prod' })).decision, 'allow');
    assert.equal(e.decide(req('POST /v1/orders', txn, { 'x-env': 'dev' })).decision, 'deny');
    assert.equal(e.decide(req('POST /v1/orders', undefined, { 'x-env': 'prod' })).token?.kind, 'missing');
    assert.equal(e.decide(req('POST /v1/orders', txn, { 'x-env': 'prod' })).decision, 'allow');
  });

  it('explain names the token condition as a when mismatch', () => {
    const x = e.explain(req('GET /v1/orders/42', tok({ scopes: [] })));
    assert.deepEqual(x.nearest[0]?.mismatched, ['when']);
  });
});

describe('token conditions: PolicyTest cases', () => {
  it('a case carries a token (subject, scope, type, actors) and the decision follows it', () => {
    const e = new PolicyEngine(parsePolicies(POLICY).policies);
    const { others } = parsePolicies(`apiVersion: writ.dev/v1
kind: PolicyTest
cases:
  - { name: with token, from: ${WEB}, to: ${ORDERS}, action: GET /v1/orders/1, token: { subject: ${TD}/users/alice, scope: orders:read }, expect: allow }
  - { name: no token, from: ${WEB}, to: ${ORDERS}, action: GET /v1/orders/1, expect: deny }
  - { name: too deep, from: ${WEB}, to: ${ORDERS}, action: GET /v1/orders/1, token: { subject: ${TD}/users/alice, scope: [orders:read], actors: [${WEB}, ${TD}/x] }, expect: deny }
`);
    const results = runPolicyTests(e, others);
    assert.deepEqual(
      results.map((r) => [r.name, r.passed, r.got.token?.kind]),
      [
        ['with token', true, undefined],
        ['no token', true, 'missing'],
        ['too deep', true, 'depth'],
      ],
    );
    const bad = parsePolicies(`apiVersion: writ.dev/v1
kind: PolicyTest
cases:
  - { name: bad, from: ${WEB}, to: ${ORDERS}, action: GET /, token: { subject: ${TD}/u, scope: a, issuer: x }, expect: deny }
`).others;
    assert.throws(() => runPolicyTests(e, bad), /bad: unknown field "token.issuer"/);
  });
});
