/** Store conformance for the dashboard (issue 15, section 4): sessions and the service graph, on SQLite and PostgreSQL. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';
import type { DecisionRecord } from './types.ts';

const decision = (id: string, at: number, from: string, to: string, decision: DecisionRecord['decision'], rule: string): DecisionRecord => ({
  id,
  at,
  from,
  to,
  action: 'GET /orders',
  decision,
  reason: decision === 'allow' ? 'ALLOW_RULE' : 'DENY_RULE',
  policyRevision: 1,
  rule,
  reporter: 'spiffe://a.org/writ/agent/n1',
});

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, dashboard: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('a session is found while it and its token live, and never after sign-out, expiry or the token is revoked', async () => {
      const s = t.store;
      await s.createAdminToken({ id: 'tok-op', hash: 'h-op', role: 'operator', name: 'ui', createdAt: 1, expiresAt: null });
      await s.createAdminToken({ id: 'tok-short', hash: 'h-short', role: 'viewer', name: 'ui', createdAt: 1, expiresAt: 500 });
      await s.createUiSession({ idHash: 's1', tokenId: 'tok-op', csrfHash: 'c1', createdAt: 10, expiresAt: 1000 });
      await s.createUiSession({ idHash: 's2', tokenId: 'tok-short', csrfHash: 'c2', createdAt: 10, expiresAt: 1000 });
      await s.createUiSession({ idHash: 's3', tokenId: 'tok-op', csrfHash: 'c3', createdAt: 10, expiresAt: 1000 });

      const found = await s.findUiSession('s1', 20);
      assert.equal(found?.token.role, 'operator', 'the role comes from the token');
      assert.deepEqual(found?.session, { idHash: 's1', tokenId: 'tok-op', csrfHash: 'c1', createdAt: 10, expiresAt: 1000 });
      assert.equal(await s.findUiSession('s1', 1000), undefined, 'expired');
      assert.equal(await s.findUiSession('unknown', 20), undefined);
      assert.ok(await s.findUiSession('s2', 20));
      assert.equal(await s.findUiSession('s2', 600), undefined, 'its token expired first');

      assert.equal(await s.deleteUiSession('s1'), true);
      assert.equal(await s.findUiSession('s1', 20), undefined, 'signed out');
      assert.equal(await s.deleteUiSession('s1'), false);

      await s.deleteAdminToken('tok-op');
      assert.equal(await s.findUiSession('s3', 20), undefined, 'its token was revoked');
      // A new session sweeps the expired ones away.
      await s.createAdminToken({ id: 'tok-v', hash: 'h-v', role: 'viewer', name: 'ui', createdAt: 1, expiresAt: null });
      await s.createUiSession({ idHash: 's4', tokenId: 'tok-v', csrfHash: 'c4', createdAt: 2000, expiresAt: 3000 });
      assert.equal(await s.deleteUiSession('s2'), false, 'expired session removed when another was made');
    });

    it('the graph counts each edge by decision and rule within the window, filtered by ID prefix and substring, matched as text', async () => {
      const s = t.store;
      const web = 'spiffe://a.org/ns/shop/sa/web';
      const db = 'spiffe://a.org/ns/shop/sa/db';
      const other = 'spiffe://b.org/ns/ops/sa/job';
      await s.addDecisions([
        decision('g1', 100, web, db, 'allow', 'shop#0'),
        decision('g2', 200, web, db, 'allow', 'shop#0'),
        decision('g3', 300, web, db, 'deny', ''),
        decision('g4', 400, other, db, 'audit-would-deny', 'shop#1'),
        decision('g5', 50, other, web, 'allow', 'old#0'),
      ]);
      const rows = await s.graphEdges({ since: 100, limit: 100 });
      assert.deepEqual(
        rows.map((r) => [r.from, r.to, r.decision, r.rule, r.count, r.lastSeen]),
        [
          [web, db, 'allow', 'shop#0', 2, 200],
          [web, db, 'deny', '', 1, 300],
          [other, db, 'audit-would-deny', 'shop#1', 1, 400],
        ],
      );
      assert.equal((await s.graphEdges({ since: 0, limit: 100 })).length, 4, 'a longer window sees the older edge');
      assert.equal((await s.graphEdges({ since: 0, limit: 2 })).length, 2, 'bounded');
      assert.deepEqual(
        (await s.graphEdges({ since: 0, prefix: 'spiffe://b.org/', limit: 100 })).map((r) => r.from),
        [other, other],
        'trust domain b.org: the edges with an end in it',
      );
      assert.equal((await s.graphEdges({ since: 0, contains: '/ns/ops/', limit: 100 })).length, 2);
      assert.equal((await s.graphEdges({ since: 0, contains: '/ns/%/', limit: 100 })).length, 0, 'a % in a filter is a character, not a wildcard');
      assert.equal((await s.graphEdges({ since: 0, prefix: 'spiffe://a_org/', limit: 100 })).length, 0, 'so is _');
    });
  });
}
