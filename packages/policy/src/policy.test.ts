import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWritError } from '@writ/spiffe';
import { PolicyEngine, httpAction, parseAction, type AuthzRequest } from './engine.ts';
import { PolicyError, parsePolicies } from './model.ts';
import { normalizePath } from './pattern.ts';
import { runPolicyTests } from './policy-test.ts';

const NOW = Date.parse('2026-06-01T00:00:00Z');
const ORDERS = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders-api }
spec:
  to: spiffe://prod.example/ns/orders/sa/api
  mode: enforce
  rules:
    - effect: allow
      from: [spiffe://prod.example/ns/web/**]
      actions:
        - { methods: [GET], paths: ["/v1/orders/*"] }
        - { ports: [5432] }
    - effect: deny
      from: [spiffe://prod.example/ns/legacy/*]
      expires: 2026-12-31T00:00:00Z
    - effect: allow
      from: [spiffe://prod.example/ns/legacy/*, spiffe://prod.example/ns/admin/sa/ops]
    - effect: allow
      name: canary-header
      from: [spiffe://prod.example/ns/canary/sa/web]
      when: [{ header: x-env, equals: canary }]
---
apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: reports }
spec:
  to: spiffe://prod.example/ns/reports/**
  mode: audit
  rules:
    - effect: allow
      from: [spiffe://prod.example/ns/bi/*]
`;

const engine = (text = ORDERS, clock = () => NOW) =>
  new PolicyEngine(parsePolicies(text, { now: NOW }).policies, { revision: 7, clock, breakGlass: ['spiffe://prod.example/ns/sre/sa/breakglass'] });
const req = (from: string | undefined, to: string, action: string, headers?: Record<string, string>): AuthzRequest => ({
  from,
  to,
  action: parseAction(action),
  ...(headers ? { headers } : {}),
});
const ORD = 'spiffe://prod.example/ns/orders/sa/api';
/** The problems parsing `text` reports, as "LINE: message" (none when it parses). */
const issuesOf = (text: string): string[] => {
  try {
    parsePolicies(text, { now: NOW, file: 'p.yaml' });
    return [];
  } catch (err) {
    assert.ok(err instanceof PolicyError, String(err));
    return err.issues.map((i) => `${i.line}: ${i.message}`);
  }
};

describe('policy semantics', () => {
  const e = engine();
  const cases: Array<[string, AuthzRequest, string, string, string?]> = [
    ['allow by pattern ** and path *', req('spiffe://prod.example/ns/web/sa/frontend', ORD, 'GET /v1/orders/42'), 'allow', 'ALLOW_RULE', 'orders-api#0'],
    ['** matches deeper paths', req('spiffe://prod.example/ns/web/a/b/c', ORD, 'GET /v1/orders/1'), 'allow', 'ALLOW_RULE'],
    ['** needs at least one segment', req('spiffe://prod.example/ns/web', ORD, 'GET /v1/orders/1'), 'deny', 'NO_MATCHING_ALLOW'],
    ['path * is one segment', req('spiffe://prod.example/ns/web/sa/frontend', ORD, 'GET /v1/orders/42/items'), 'deny', 'NO_MATCHING_ALLOW'],
    ['method must match', req('spiffe://prod.example/ns/web/sa/frontend', ORD, 'DELETE /v1/orders/42'), 'deny', 'NO_MATCHING_ALLOW'],
    ['TCP port action', req('spiffe://prod.example/ns/web/sa/frontend', ORD, 'tcp 5432'), 'allow', 'ALLOW_RULE'],
    ['other port', req('spiffe://prod.example/ns/web/sa/frontend', ORD, 'tcp 5433'), 'deny', 'NO_MATCHING_ALLOW'],
    ['deny beats allow (no priorities)', req('spiffe://prod.example/ns/legacy/sa', ORD, 'GET /anything'), 'deny', 'DENY_RULE', 'orders-api#1'],
    ['* is exactly one segment in identities', req('spiffe://prod.example/ns/legacy/sa/x', ORD, 'GET /x'), 'deny', 'NO_MATCHING_ALLOW'],
    ['no actions means any action', req('spiffe://prod.example/ns/admin/sa/ops', ORD, 'grpc /orders.v1.Orders/Delete'), 'allow', 'ALLOW_RULE'],
    ['when: header equals', req('spiffe://prod.example/ns/canary/sa/web', ORD, 'GET /', { 'x-env': 'canary' }), 'allow', 'ALLOW_RULE', 'canary-header'],
    ['when: header absent', req('spiffe://prod.example/ns/canary/sa/web', ORD, 'GET /'), 'deny', 'NO_MATCHING_ALLOW'],
    [
      'default deny for an ungoverned destination',
      req('spiffe://prod.example/ns/web/sa/frontend', 'spiffe://prod.example/ns/other/sa/x', 'GET /'),
      'deny',
      'NO_MATCHING_ALLOW',
    ],
    ['other trust domain never matches', req('spiffe://other.example/ns/web/sa/frontend', ORD, 'GET /v1/orders/1'), 'deny', 'NO_MATCHING_ALLOW'],
    ['unauthenticated', req(undefined, ORD, 'GET /v1/orders/1'), 'deny', 'UNAUTHENTICATED'],
    [
      'audit mode passes what it would deny',
      req('spiffe://prod.example/ns/web/sa/x', 'spiffe://prod.example/ns/reports/sa/api', 'GET /'),
      'audit-would-deny',
      'AUDIT_ALLOWED',
    ],
    [
      'audit mode allows what it allows',
      req('spiffe://prod.example/ns/bi/metabase', 'spiffe://prod.example/ns/reports/sa/api', 'GET /'),
      'allow',
      'ALLOW_RULE',
    ],
  ];
  for (const [what, r, decision, reason, rule] of cases) {
    it(what, () => {
      const d = e.decide(r);
      assert.equal(d.decision, decision);
      assert.equal(d.reason, reason);
      assert.equal(d.allowed, decision !== 'deny');
      assert.equal(d.revision, 7);
      if (rule) assert.equal(d.rule?.name, rule);
    });
  }

  it('* and ** never match the empty segment of a trailing "/"; a pattern ending in "/" matches exactly that', () => {
    const doc = (paths: string) => `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: p }
spec:
  to: ${ORD}
  rules:
    - { effect: allow, from: [spiffe://prod.example/ns/web/**], actions: [{ methods: [GET], paths: [${paths}] }] }
`;
    const allowed = (paths: string, path: string): boolean => engine(doc(paths)).decide(req('spiffe://prod.example/ns/web/a', ORD, `GET ${path}`)).allowed;
    const table: Array<[string, string, boolean]> = [
      ['/v1/orders/*', '/v1/orders/7', true],
      // "/v1/orders/" is the collection to most routers: one order's rule must not list them all.
      ['/v1/orders/*', '/v1/orders/', false],
      ['/v1/orders/*', '/v1/orders', false],
      ['/v1/orders/', '/v1/orders/', true],
      ['/v1/orders/', '/v1/orders', false],
      ['/v1/orders', '/v1/orders/', false],
      ['/static/**', '/static/a', true],
      ['/static/**', '/static/css/', true],
      ['/static/**', '/static/', false],
      ['/static/**', '/static', false],
      ['/*/', '/v1/', true],
      ['/*/', '/v1', false],
    ];
    for (const [pattern, path, want] of table) assert.equal(allowed(`"${pattern}"`, path), want, `${pattern} ${path}`);
    assert.match(issuesOf(doc('"/v1//orders"')).join('; '), /empty segment/);
    assert.match(issuesOf(doc('"/static/**/"')).join('; '), /last segment/);
  });

  it('expired rules stop applying', () => {
    const later = engine(ORDERS, () => Date.parse('2027-01-01T00:00:00Z'));
    assert.equal(later.decide(req('spiffe://prod.example/ns/legacy/sa', ORD, 'GET /')).decision, 'allow', 'the deny expired, the allow still holds');
  });

  it('a rule expiring inside a running engine changes the decision it had remembered', () => {
    let now = NOW;
    const running = engine(
      `${ORDERS}---
apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: temp }
spec:
  to: spiffe://prod.example/ns/temp/sa/api
  rules:
    - { effect: allow, from: [spiffe://prod.example/ns/web/**], expires: 2026-06-01T01:00:00Z }
`,
      () => now,
    );
    const legacy = req('spiffe://prod.example/ns/legacy/sa', ORD, 'GET /');
    const temp = req('spiffe://prod.example/ns/web/sa/a', 'spiffe://prod.example/ns/temp/sa/api', 'GET /');
    assert.equal(running.decide(legacy).reason, 'DENY_RULE');
    assert.equal(running.decide(temp).reason, 'ALLOW_RULE');
    assert.equal(running.decide(temp).reason, 'ALLOW_RULE', 'remembered');
    now = Date.parse('2026-06-01T01:00:00Z');
    assert.equal(running.decide(temp).reason, 'NO_MATCHING_ALLOW', 'the temporary allow ended at its expiry');
    assert.equal(running.decide(legacy).reason, 'DENY_RULE', 'the deny has not expired yet');
    now = Date.parse('2026-12-31T00:00:00Z');
    assert.equal(running.decide(legacy).decision, 'allow', 'the deny ended at its expiry; the allow behind it holds');
  });

  it('quarantine comes first, both directions, except for break-glass identities', () => {
    const q = engine();
    q.setQuarantine(['spiffe://prod.example/ns/web/sa/frontend']);
    assert.equal(q.decide(req('spiffe://prod.example/ns/web/sa/frontend', ORD, 'GET /v1/orders/1')).reason, 'QUARANTINED');
    q.setQuarantine([ORD]);
    assert.equal(q.decide(req('spiffe://prod.example/ns/admin/sa/ops', ORD, 'GET /')).reason, 'QUARANTINED');
    assert.equal(
      q.decide(req('spiffe://prod.example/ns/sre/sa/breakglass', ORD, 'GET /')).reason,
      'NO_MATCHING_ALLOW',
      'break-glass skips quarantine, rules still apply',
    );
  });

  it('no policy loaded denies everything with its own reason', () => {
    assert.equal(new PolicyEngine(undefined).decide(req('spiffe://a/b', 'spiffe://a/c', 'GET /')).reason, 'NO_POLICY_LOADED');
  });

  it('explains a deny with the nearest rules and the fields that did not match', () => {
    const x = e.explain(req('spiffe://prod.example/ns/web/sa/frontend', ORD, 'DELETE /v1/orders/42'));
    assert.equal(x.decision, 'deny');
    assert.equal(x.nearest[0]!.name, 'orders-api#0');
    assert.deepEqual(x.nearest[0]!.mismatched, ['action']);
    const y = e.explain(req('spiffe://prod.example/ns/legacy/sa', ORD, 'GET /'));
    assert.equal(y.rule?.name, 'orders-api#1', 'a deny rule is its own explanation');
  });

  it('property: adding an allow changes only decisions nothing allowed; a deny rule still wins, for every caller', () => {
    const base = engine();
    const more = engine(
      `${ORDERS}---\napiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: extra }\nspec:\n  to: ${ORD}\n  rules:\n    - effect: allow\n      from: [spiffe://prod.example/**]\n`,
    );
    const reasons = new Set<string>();
    fc.assert(
      fc.property(
        fc.oneof(
          fc.constantFrom('web/sa/frontend', 'legacy/sa', 'legacy/x', 'admin/sa/ops', 'canary/sa/web', 'x/y'),
          fc.array(fc.constantFrom('web', 'legacy', 'sa', 'ops', 'admin', 'q'), { minLength: 1, maxLength: 4 }).map((s) => s.join('/')),
        ),
        fc.constantFrom('GET /', 'GET /v1/orders/1', 'DELETE /v1/orders/1', 'tcp 5432', 'grpc /orders.v1.Orders/Get'),
        (who, act) => {
          const r = req(`spiffe://prod.example/ns/${who}`, ORD, act);
          const before = base.decide(r);
          const after = more.decide(r);
          reasons.add(before.reason);
          if (before.reason === 'NO_MATCHING_ALLOW') {
            assert.equal(after.reason, 'ALLOW_RULE');
            assert.equal(after.rule?.policy, 'extra');
          } else {
            assert.equal(after.reason, before.reason, `${who} ${act}`);
            if (before.reason === 'DENY_RULE') assert.equal(after.rule?.name, before.rule?.name, `${who} ${act}`);
          }
        },
      ),
      { numRuns: 500 },
    );
    assert.deepEqual([...reasons].sort(), ['ALLOW_RULE', 'DENY_RULE', 'NO_MATCHING_ALLOW'], 'every kind of decision was checked');
  });
});

describe('policy validation', () => {
  const doc = (spec: string): string => `apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: p }\nspec:\n${spec}`;

  it('reports unknown fields, bad patterns, HTTP on TCP-only targets and expired rules, with line numbers', () => {
    const issues = issuesOf(
      doc(`  to: spiffe://prod.example/ns/db/**
  protocol: tcp
  rules:
    - effect: allow
      frm: [spiffe://prod.example/x]
    - effect: allow
      from: [spiffe://prod.example/ns/*/x**]
    - effect: allow
      from: [spiffe://prod.example/ns/web]
      actions: [{ methods: [GET], paths: [/x] }]
    - effect: deny
      from: [spiffe://prod.example/ns/old]
      expires: 2020-01-01T00:00:00Z
`),
    );
    assert.ok(
      issues.some((i) => /^9: unknown field "frm"/.test(i)),
      issues.join('\n'),
    );
    assert.ok(
      issues.some((i) => /^8: rules\[0\] needs "from"/.test(i)),
      issues.join('\n'),
    );
    assert.ok(
      issues.some((i) => /^11: rules\[1\]\.from\[0\]: .*segment/.test(i)),
      issues.join('\n'),
    );
    assert.ok(
      issues.some((i) => /^14: rules\[2\]\.actions\[0\] is a HTTP action but spec.protocol is tcp/.test(i)),
      issues.join('\n'),
    );
    assert.ok(
      issues.some((i) => /^17: rules\[3\]\.expires is in the past/.test(i)),
      issues.join('\n'),
    );
  });

  it('rejects regular expressions, wildcard trust domains, ** in the middle, duplicates and wrong kinds of values', () => {
    for (const [spec, re] of [
      ['  to: spiffe://prod.example/ns/.*\n  rules: [{ effect: allow, from: [spiffe://a/b] }]\n', /segment/],
      ['  to: spiffe://*/ns/x\n  rules: [{ effect: allow, from: [spiffe://a/b] }]\n', /trust domain must be exact/],
      ['  to: spiffe://a/**/x\n  rules: [{ effect: allow, from: [spiffe://a/b] }]\n', /only allowed as the last segment/],
      ['  to: spiffe://a/x\n  rules: [{ effect: maybe, from: [spiffe://a/b] }]\n', /allow or deny/],
      ['  to: spiffe://a/x\n  rules: [{ effect: allow, from: [spiffe://a/b], actions: [{ ports: [70000] }] }]\n', /not a port/],
      ['  to: spiffe://a/x\n  rules: []\n', /1 to/],
    ] as const) {
      assert.ok(
        issuesOf(doc(spec)).some((i) => re.test(i)),
        `${spec} -> ${issuesOf(doc(spec)).join('; ')}`,
      );
    }
    assert.ok(
      issuesOf(
        `${doc('  to: spiffe://a/x\n  rules: [{ effect: allow, from: [spiffe://a/b] }]\n')}---\n${doc('  to: spiffe://a/y\n  rules: [{ effect: allow, from: [spiffe://a/b] }]\n')}`,
      ).some((i) => /defined twice/.test(i)),
    );
  });

  it('refuses huge and deeply nested documents before parsing them', () => {
    assert.throws(
      () => parsePolicies('['.repeat(100_000)),
      (e) => isWritError(e, 'ERR_POLICY_INVALID') && /nested deeper/.test(e.message),
    );
    assert.throws(
      () => parsePolicies('x'.repeat(5 * 1024 * 1024)),
      (e) => isWritError(e, 'ERR_POLICY_INVALID') && /larger than/.test(e.message),
    );
    assert.throws(
      () => parsePolicies('a: &a [*a, *a]\n'),
      (e) => isWritError(e, 'ERR_POLICY_INVALID'),
    );
  });

  it('property: arbitrary text and mutated policies either parse or fail with line-numbered issues, never crash', () => {
    const mutate = fc.tuple(fc.nat(ORDERS.length - 1), fc.string({ maxLength: 5 })).map(([i, s]) => ORDERS.slice(0, i) + s + ORDERS.slice(i + 1));
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), mutate), (text) => {
        try {
          parsePolicies(text, { now: NOW });
        } catch (err) {
          assert.ok(err instanceof PolicyError, String(err));
          assert.ok(err.issues.every((i) => i.line >= 1));
        }
      }),
      { numRuns: 1500 },
    );
  });
});

describe('policy tests', () => {
  it('runs cases and reports failures', () => {
    const text = `${ORDERS}---
kind: PolicyTest
cases:
  - { name: web reads, from: spiffe://prod.example/ns/web/sa/frontend, to: ${ORD}, action: GET /v1/orders/1, expect: allow }
  - { name: legacy denied, from: spiffe://prod.example/ns/legacy/sa, to: ${ORD}, action: tcp 5432, expect: deny }
  - { name: wrong on purpose, from: spiffe://prod.example/ns/web/sa/frontend, to: ${ORD}, action: DELETE /v1/orders/1, expect: allow }
`;
    const { policies, others } = parsePolicies(text, { now: NOW });
    const results = runPolicyTests(new PolicyEngine(policies, { clock: () => NOW }), others);
    assert.deepEqual(
      results.map((r) => [r.name, r.passed]),
      [
        ['web reads', true],
        ['legacy denied', true],
        ['wrong on purpose', false],
      ],
    );
  });

  it('parses actions', () => {
    assert.deepEqual(parseAction('get /v1/x?y=1'), { kind: 'http', method: 'GET', path: '/v1/x' });
    assert.deepEqual(parseAction('tcp:5432'), { kind: 'tcp', port: 5432 });
    assert.deepEqual(parseAction('grpc /a.B/C'), { kind: 'grpc', method: '/a.B/C' });
    assert.throws(
      () => parseAction('launch missiles'),
      (e) => isWritError(e, 'ERR_ACTION_INVALID'),
    );
    // Real paths hold more than pattern characters; they are taken in normal form.
    assert.deepEqual(parseAction('GET /v1/things:batchGet/a~b@c'), { kind: 'http', method: 'GET', path: '/v1/things:batchGet/a~b@c' });
    assert.deepEqual(parseAction('GET //v1/%6Frders/1'), { kind: 'http', method: 'GET', path: '/v1/orders/1' });
    assert.throws(
      () => parseAction('GET /v1/../admin'),
      (e) => isWritError(e, 'ERR_ACTION_INVALID') && /"\.\." segment/.test((e as Error).message),
    );
  });
});

describe('gRPC calls', () => {
  const GRPC = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders-grpc }
spec:
  to: spiffe://prod.example/ns/orders/sa/grpc
  rules:
    - effect: allow
      from: [spiffe://prod.example/ns/web/**]
      actions: [{ grpc: ["/orders.v1.Orders/GetOrder", "/orders.v1.Orders/List"] }]
    - effect: allow
      name: ops-by-path
      from: [spiffe://prod.example/ns/ops/*]
      actions: [{ methods: [POST], paths: ["/orders.v1.Orders/*"] }]
    - effect: deny
      from: [spiffe://prod.example/ns/web/sa/intern]
      actions: [{ grpc: ["/orders.v1.Orders/List"] }]
`;
  const to = 'spiffe://prod.example/ns/orders/sa/grpc';

  it('a POST with a gRPC content type to /pkg.Service/Method is the gRPC action; anything else is HTTP', () => {
    assert.deepEqual(httpAction('POST', '/orders.v1.Orders/List', 'application/grpc', 443), { kind: 'grpc', method: '/orders.v1.Orders/List', port: 443 });
    for (const ct of ['application/grpc+proto', 'application/grpc-web+proto', 'Application/GRPC; charset=x'])
      assert.equal(httpAction('POST', '/a.B/C', ct).kind, 'grpc', ct);
    assert.equal(httpAction('POST', '/a.B/C', 'application/grpcx').kind, 'http');
    assert.equal(httpAction('POST', '/a.B/C', 'application/json').kind, 'http');
    assert.equal(httpAction('GET', '/a.B/C', 'application/grpc').kind, 'http');
    assert.equal(httpAction('POST', '/a/B/C', 'application/grpc').kind, 'http');
    assert.equal(httpAction('POST', '/a.B/C', undefined).kind, 'http');
  });

  it('gRPC rules decide gRPC calls; HTTP rules see them as the POST they are; denies still win', () => {
    const e = new PolicyEngine(parsePolicies(GRPC, { now: NOW }).policies, { revision: 1, clock: () => NOW });
    const call = (from: string, method: string) => e.decide({ from, to, action: httpAction('POST', method, 'application/grpc') });
    assert.equal(call('spiffe://prod.example/ns/web/sa/a', '/orders.v1.Orders/GetOrder').decision, 'allow');
    assert.equal(call('spiffe://prod.example/ns/web/sa/a', '/orders.v1.Orders/Delete').reason, 'NO_MATCHING_ALLOW');
    assert.equal(call('spiffe://prod.example/ns/ops/admin', '/orders.v1.Orders/Delete').rule?.name, 'ops-by-path');
    assert.equal(call('spiffe://prod.example/ns/web/sa/intern', '/orders.v1.Orders/List').reason, 'DENY_RULE');
    // The same path without a gRPC content type is plain HTTP: gRPC rules do not apply to it.
    assert.equal(
      e.decide({ from: 'spiffe://prod.example/ns/web/sa/a', to, action: httpAction('POST', '/orders.v1.Orders/GetOrder', 'application/json') }).reason,
      'NO_MATCHING_ALLOW',
    );
  });
});

describe('request paths in normal form', () => {
  it('decodes unreserved escapes, upper-cases the others, merges slashes, refuses dot segments and broken escapes', () => {
    for (const [raw, norm] of [
      ['/', '/'],
      ['/v1/orders/1', '/v1/orders/1'],
      ['/.well-known/spiffe', '/.well-known/spiffe'],
      ['/a/.b/..c', '/a/.b/..c'],
      ['/%61dmin', '/admin'],
      ['/%7Euser/%7e', '/~user/~'],
      ['/a%2fb', '/a%2Fb'],
      ['/a%2Fb/%20x', '/a%2Fb/%20x'],
      ['/%e2%82%ac', '/%E2%82%AC'],
      ['//admin', '/admin'],
      ['/a//b///c', '/a/b/c'],
      ['/a/b/', '/a/b/'],
      ['/a//', '/a/'],
      ['//', '/'],
      ['*', '*'],
    ] as const)
      assert.equal(normalizePath(raw), norm, raw);
    assert.throws(
      () => normalizePath(`/${'a'.repeat(70_000)}`),
      (e) => isWritError(e, 'ERR_PATH_INVALID'),
    );
    for (const raw of [
      '/..',
      '/a/../b',
      '/a/./b',
      '/a/.',
      '/%2e%2e/admin',
      '/a/%2E/b',
      '/.%2e/x',
      '/a%',
      '/a%2',
      '/a%zz',
      '/%%41',
      '/admin#x',
      '/v1\\admin',
      '/a/b\\',
    ])
      assert.throws(
        () => normalizePath(raw),
        (e) => isWritError(e, 'ERR_PATH_INVALID'),
        raw,
      );
  });

  it('property: any string either fails with ERR_PATH_INVALID or gives a path that is its own normal form', () => {
    const chars = fc.constantFrom('/', '.', '%', '2', 'e', 'E', 'f', 'F', 'a', '~', ':', ' ', 'z');
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 40 }),
          fc.array(chars, { maxLength: 40 }).map((c) => `/${c.join('')}`),
        ),
        (raw) => {
          let norm: string;
          try {
            norm = normalizePath(raw);
          } catch (e) {
            return assert.ok(isWritError(e, 'ERR_PATH_INVALID'), String(e));
          }
          assert.equal(normalizePath(norm), norm);
          if (raw.startsWith('/')) assert.doesNotMatch(norm, /\/\/|\/\.\.?(\/|$)/);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('property: normal form is a fixed point, and every spelling of a path gets the decision its normal form gets', () => {
    const e = engine();
    const seg = fc.stringMatching(/^[A-Za-z0-9_~:@-]{1,6}$/).filter((x) => x !== '.' && x !== '..');
    // Another spelling: some unreserved characters percent-encoded (":" and "@" are reserved: %3A is
    // not ":"), some slashes doubled.
    const respell = (segs: string[], picks: boolean[]): string =>
      segs
        .map(
          (s, k) =>
            `${picks[k] ? '/' : ''}/${[...s].map((c, j) => (picks[(j + k) % picks.length] && /[\w~-]/.test(c) ? `%${c.charCodeAt(0).toString(16)}` : c)).join('')}`,
        )
        .join('');
    fc.assert(
      fc.property(fc.array(seg, { maxLength: 5 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), (segs, picks) => {
        const plain = segs.length ? `/${segs.join('/')}` : '/';
        const other = segs.length ? respell(segs, picks) : '/';
        assert.equal(normalizePath(plain), plain);
        assert.equal(normalizePath(other), plain);
        assert.equal(normalizePath(normalizePath(other)), plain);
        for (const from of ['spiffe://prod.example/ns/web/sa/a', 'spiffe://prod.example/ns/legacy/x']) {
          const a = e.decide(req(from, ORD, `GET /v1/orders${plain}`));
          const b = e.decide(req(from, ORD, `GET /v1/orders${other}`));
          assert.equal(b.decision, a.decision);
          assert.equal(b.rule?.name, a.rule?.name);
        }
      }),
    );
  });
});
