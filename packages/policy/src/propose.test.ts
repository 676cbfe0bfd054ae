import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { PolicyEngine, parseAction } from './engine.ts';
import { parsePolicies } from './model.ts';
import { generalisePath, proposePolicy, siblingParent, type ObservedEdge } from './propose.ts';

const TO = 'spiffe://td/ns/orders/sa/api';
const edge = (from: string, action: string, seen = 1): ObservedEdge => ({ from, to: TO, action, seen });
/** The proposal's YAML read back by the parser and replayed by the engine, independently of proposePolicy's own replay. */
const engineOf = (yaml: string): PolicyEngine => new PolicyEngine(parsePolicies(yaml, { file: 't' }).policies);
const allows = (e: PolicyEngine, from: string, action: string): boolean => e.decide({ from, to: TO, action: parseAction(action) }).decision === 'allow';

test('siblings under one parent become parent/*; ID-like path segments become *', () => {
  const p = proposePolicy(
    [
      edge('spiffe://td/ns/shop/sa/a', 'GET /v1/orders/42', 10),
      edge('spiffe://td/ns/shop/sa/b', 'GET /v1/orders/0b5e7c1a-1f2e-4a3b-9c4d-5e6f708192a3', 5),
      edge('spiffe://td/ns/billing/sa/x', 'POST /v1/orders/deadbeef01/refund', 2),
      edge('spiffe://td/ns/billing/sa/x', 'grpc /orders.v1.Orders/Get', 1),
    ],
    { to: TO, name: 'orders-api' },
  );
  assert.deepEqual(
    p.groups.map((g) => g.pattern),
    ['spiffe://td/ns/billing/sa/x', 'spiffe://td/ns/shop/sa/*'],
  );
  const e = engineOf(p.yaml);
  assert.ok(allows(e, 'spiffe://td/ns/shop/sa/c', 'GET /v1/orders/99'), 'a sibling at the same level');
  assert.ok(!allows(e, 'spiffe://td/ns/shop/sa/c/d', 'GET /v1/orders/99'), 'not deeper');
  assert.ok(!allows(e, 'spiffe://td/ns/shop/other', 'GET /v1/orders/99'), 'not the parent level');
  assert.ok(!allows(e, 'spiffe://td/ns/shop/sa/a', 'DELETE /v1/orders/99'), 'not another method');
  assert.ok(allows(e, 'spiffe://td/ns/billing/sa/x', 'POST /v1/orders/77/refund'));
  assert.ok(allows(e, 'spiffe://td/ns/billing/sa/x', 'grpc /orders.v1.Orders/Get'));
  assert.ok(!allows(e, 'spiffe://td/ns/billing/sa/y', 'grpc /orders.v1.Orders/Get'), 'a lone caller stays exact');
  assert.deepEqual(p.coverage, { requests: 18, allowed: 18, share: 1, edges: 4, allowedEdges: 4, deniedEdges: 0, denied: [] });
});

test('minCount leaves out rare edges and the coverage names them', () => {
  const edges = [edge('spiffe://td/ns/web/sa/front', 'GET /v1/orders/1', 119_997), edge('spiffe://td/ns/ops/sa/debug', 'DELETE /v1/orders/1', 3)];
  const p = proposePolicy(edges, { to: TO, name: 'orders-api', minCount: 10 });
  assert.equal(p.coverage.requests, 120_000);
  assert.equal(p.coverage.allowed, 119_997);
  assert.deepEqual(p.coverage.denied, [edges[1]]);
  assert.ok(!allows(engineOf(p.yaml), 'spiffe://td/ns/ops/sa/debug', 'DELETE /v1/orders/1'));
  const share = proposePolicy(edges, { to: TO, name: 'orders-api', minShare: 0.001 });
  assert.equal(share.coverage.deniedEdges, 1);
});

test('never groups under a bare trust domain; words are not IDs', () => {
  const p = proposePolicy([edge('spiffe://td/a', 'GET /healthz'), edge('spiffe://td/b', 'GET /v1/accounts/facade')], { to: TO, name: 'x' });
  assert.deepEqual(p.groups.map((g) => g.pattern).sort(), ['spiffe://td/a', 'spiffe://td/b']);
  assert.equal(generalisePath('/v1/accounts/facade'), '/v1/accounts/facade');
  assert.equal(generalisePath('/v1/x/12345/y/'), '/v1/x/*/y/');
  assert.equal(generalisePath('/v1/files/a%2Fb'), '/v1/files/*');
  assert.equal(siblingParent('spiffe://td/a'), undefined);
});

test('an anonymous caller or an unreadable action is never allowed, and counted as denied', () => {
  const p = proposePolicy([edge('', 'GET /x', 4), edge('spiffe://td/ns/a/sa/b', 'GET /v1/cut-sho', 1), edge('spiffe://td/ns/a/sa/b', 'BREW /pot', 2)], {
    to: TO,
    name: 'x',
  });
  assert.equal(p.coverage.allowed, 1);
  assert.equal(p.coverage.deniedEdges, 2);
});

// ---------------------------------------------------------------- properties

const seg = fc.constantFrom('a', 'b', 'c', 'web', 'shop', 'sa', 'ns', '7', 'x-1');
const caller = fc.array(seg, { minLength: 1, maxLength: 4 }).map((s) => `spiffe://td/${s.join('/')}`);
const pathSeg = fc.oneof(
  fc.constantFrom('v1', 'orders', 'items', 'refund', 'deadbeef01', '0b5e7c1a-1f2e-4a3b-9c4d-5e6f708192a3', 'Ab_cd', 'x.y'),
  fc.nat(100_000).map(String),
);
const action = fc.oneof(
  fc.tuple(fc.constantFrom('GET', 'POST', 'DELETE'), fc.array(pathSeg, { maxLength: 4 })).map(([m, s]) => `${m} /${s.join('/')}`),
  fc.constantFrom('grpc /orders.v1.Orders/Get', 'grpc /orders.v1.Orders/List', 'tcp 5432', 'tcp 6379'),
);
const edges = fc.array(fc.record({ from: caller, to: fc.constant(TO), action, seen: fc.integer({ min: 1, max: 1000 }) }), { minLength: 1, maxLength: 30 });

test('property: the proposal parses, allows every observed edge it keeps, and its coverage is what the engine decides', () => {
  fc.assert(
    fc.property(edges, fc.integer({ min: 0, max: 500 }), (es, minCount) => {
      const p = proposePolicy(es, { to: TO, name: 'p', minCount });
      if (p.yaml === '') return p.coverage.allowed === 0;
      const e = engineOf(p.yaml);
      let allowed = 0;
      for (const x of es) if (allows(e, x.from, x.action)) allowed += x.seen;
      assert.equal(p.coverage.allowed, allowed);
      if (minCount === 0) assert.equal(allowed, p.coverage.requests, 'with no threshold everything observed is allowed');
      for (const d of p.coverage.denied) assert.ok(!allows(e, d.from, d.action));
      return true;
    }),
    { numRuns: 300 },
  );
});

test('property: never allows a caller that is neither observed nor a sibling of two observed callers', () => {
  fc.assert(
    fc.property(edges, caller, action, (es, probe, act) => {
      const p = proposePolicy(es, { to: TO, name: 'p' });
      if (p.yaml === '' || !allows(engineOf(p.yaml), probe, act)) return true;
      const observed = new Set(es.map((x) => x.from));
      if (observed.has(probe)) return true;
      const parent = siblingParent(probe);
      assert.ok(parent !== undefined, `${probe} is allowed but has no parent to be grouped under`);
      const siblings = [...observed].filter((c) => siblingParent(c) === parent);
      assert.ok(siblings.length >= 2, `${probe} is allowed through ${parent}/* with ${siblings.length} observed sibling(s)`);
      return true;
    }),
    { numRuns: 500 },
  );
});
