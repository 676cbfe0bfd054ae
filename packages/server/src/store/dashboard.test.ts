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

    it('the graph counts each edge and rule by decision within the window, filtered by ID prefix and substring, matched as text', async () => {
      const s = t.store;
      const web = 'spiffe://a.org/ns/shop/sa/web';
      const db = 'spiffe://a.org/ns/shop/sa/db';
      const other = 'spiffe://b.org/ns/ops/sa/job';
      const M = 60_000;
      const H = 3_600_000;
      // Counted as they arrive, per minute and per hour: a window reads the hours inside it and the minutes before them.
      const base = 10 * H;
      await s.addDecisions([
        decision('g1', base + 2 * H + 5 * M, web, db, 'allow', 'shop#0'),
        decision('g2', base + 2 * H + 5 * M + 1, web, db, 'allow', 'shop#0'),
        decision('g3', base + H - 10 * M, web, db, 'deny', ''),
        decision('g4', base + H - 30 * M, other, db, 'audit-would-deny', 'shop#1'),
        decision('g5', base + 20 * M, other, web, 'allow', 'old#0'),
      ]);
      // A second batch on an edge, in another request: added to its counts, not a row of its own.
      await s.addDecisions([decision('g6', base + 3 * H, web, db, 'allow', 'shop#0')]);
      const since = base + H - 30 * M + 30_000; // in the middle of g4's minute: counted from the start of the minute
      const rows = await s.graphEdges({ since, limit: 100 });
      assert.deepEqual(
        rows.map((r) => [r.from, r.to, r.rule, r.allow, r.deny, r.auditWouldDeny, r.lastSeen]),
        [
          [web, db, 'shop#0', 3, 0, 0, base + 3 * H],
          [web, db, '', 0, 1, 0, base + H - 10 * M],
          [other, db, 'shop#1', 0, 0, 1, base + H - 30 * M],
        ],
      );
      assert.equal((await s.graphEdges({ since: base + H - 29 * M, limit: 100 })).length, 2, 'a minute later: g4 is out');
      assert.equal((await s.graphEdges({ since: base + 3 * H + 1, limit: 100 })).length, 1, 'the last minute alone');
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

      // A retried batch is not counted twice.
      await s.addDecisions([decision('g6', base + 3 * H, web, db, 'allow', 'shop#0')]);
      assert.equal((await s.graphEdges({ since: base + 3 * H, limit: 100 }))[0]?.allow, 1);

      // Pruned with the decisions: what ended before the cut is gone from every window.
      await s.pruneDecisions(base + H);
      assert.deepEqual(
        (await s.graphEdges({ since: 0, limit: 100 })).map((r) => [r.from, r.rule, r.allow + r.deny + r.auditWouldDeny]),
        [[web, 'shop#0', 3]],
      );
    });
  });
}
