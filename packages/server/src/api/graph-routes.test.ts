import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { GraphEdgeRow } from '../store/types.ts';
import { foldGraph, foldGraphColumns } from './graph-routes.ts';

const WEB = 'spiffe://a.org/ns/shop/sa/web';
const ORDERS = 'spiffe://a.org/ns/shop/sa/orders';
const row = (from: string, to: string, decision: 'allow' | 'deny' | 'audit-would-deny', rule: string, count: number, lastSeen: number): GraphEdgeRow => ({
  from,
  to,
  action: 'GET /v1/orders',
  rule,
  allow: decision === 'allow' ? count : 0,
  deny: decision === 'deny' ? count : 0,
  auditWouldDeny: decision === 'audit-would-deny' ? count : 0,
  lastSeen,
});

describe('foldGraph: the compact graph answer', () => {
  it('lists each identity and rule once, and edges name them by index with their counts', () => {
    const g = foldGraph(
      [
        row(WEB, ORDERS, 'allow', 'shop-reads', 5, 2000),
        row(WEB, ORDERS, 'deny', '', 2, 3000),
        row('', ORDERS, 'deny', '', 1, 1000),
        row(ORDERS, WEB, 'audit-would-deny', 'shop-reads', 1, 500),
      ],
      10,
    );
    assert.deepEqual(g.nodes, ['', ORDERS, WEB], 'sorted, unauthenticated callers as ""');
    assert.deepEqual(g.rules, ['', 'shop-reads']);
    const named = g.edges.map((e) => ({ ...e, from: g.nodes[e.from], to: g.nodes[e.to], rules: e.rules.map((r) => g.rules[r]) }));
    assert.deepEqual(named, [
      {
        from: WEB,
        to: ORDERS,
        action: 'GET /v1/orders',
        allow: 5,
        deny: 2,
        auditWouldDeny: 0,
        rules: ['shop-reads', ''],
        lastSeen: new Date(3000).toISOString(),
      },
      { from: '', to: ORDERS, action: 'GET /v1/orders', allow: 0, deny: 1, auditWouldDeny: 0, rules: [''], lastSeen: new Date(1000).toISOString() },
      { from: ORDERS, to: WEB, action: 'GET /v1/orders', allow: 0, deny: 0, auditWouldDeny: 1, rules: ['shop-reads'], lastSeen: new Date(500).toISOString() },
    ]);
    assert.equal(g.truncated, false);
  });

  it('stops at the limit, says so, and lists only the nodes and rules of the edges kept', () => {
    const g = foldGraph([row(WEB, ORDERS, 'allow', 'r1', 3, 1), row(ORDERS, WEB, 'allow', 'r2', 1, 1)], 1);
    assert.equal(g.edges.length, 1);
    assert.equal(g.truncated, true);
    assert.deepEqual(g.rules, ['r1']);
    assert.deepEqual([g.nodes[g.edges[0]!.from], g.nodes[g.edges[0]!.to]], [WEB, ORDERS]);
  });

  it('in columns (shape=columns): the same edges, an array per field, actions listed once, rules by offsets', () => {
    const rows = [
      row(WEB, ORDERS, 'allow', 'shop-reads', 5, 2000),
      row(WEB, ORDERS, 'deny', '', 2, 3000),
      row('', ORDERS, 'deny', '', 1, 1000),
      { ...row(ORDERS, WEB, 'audit-would-deny', 'shop-reads', 1, 500), action: 'POST /v1/refunds' },
    ];
    const g = foldGraph(rows, 10);
    const c = foldGraphColumns(rows, 10);
    assert.deepEqual([c.nodes, c.rules, c.actions], [g.nodes, g.rules, ['GET /v1/orders', 'POST /v1/refunds']]);
    const back = c.edges.from.map((from, i) => ({
      from,
      to: c.edges.to[i],
      action: c.actions[c.edges.action[i]!],
      allow: c.edges.allow[i],
      deny: c.edges.deny[i],
      auditWouldDeny: c.edges.auditWouldDeny[i],
      rules: c.edges.rules.slice(i > 0 ? c.edges.rulesEnd[i - 1] : 0, c.edges.rulesEnd[i]),
      lastSeen: new Date(c.edges.lastSeen[i]!).toISOString(),
    }));
    assert.deepEqual(back, g.edges);
    assert.equal(c.truncated, false);
  });
});
