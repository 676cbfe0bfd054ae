/** Alerts in the store (issue 15, section 3), on SQLite and PostgreSQL alike. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, alerts: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    const edge = { from: 'spiffe://example.org/web', to: 'spiffe://example.org/db' };

    it('counts repeats of the same rule and key within the window into one open alert, and starts a new one after it', async () => {
      const s = t.store;
      const a = { id: 'a1', rule: 'new-edges', kind: 'new-edge', key: `${edge.from} ${edge.to}`, at: 1_000, details: edge };
      const first = await s.raiseAlert(a, 60_000);
      assert.equal(first.created, true);
      assert.deepEqual(first.alert, {
        id: 'a1',
        rule: 'new-edges',
        kind: 'new-edge',
        key: a.key,
        firstAt: 1_000,
        lastAt: 1_000,
        count: 1,
        state: 'open',
        ackedBy: null,
        ackedAt: null,
        details: edge,
        response: null,
      });
      const again = await s.raiseAlert({ ...a, id: 'a2', at: 30_000, details: { other: true } }, 60_000);
      assert.equal(again.created, false);
      assert.equal(again.alert.id, 'a1');
      assert.equal(again.alert.count, 2);
      assert.equal(again.alert.lastAt, 30_000);
      assert.deepEqual(again.alert.details, edge, 'details of the first occurrence');
      // Another key, another rule: alerts of their own.
      assert.equal((await s.raiseAlert({ ...a, id: 'a3', key: 'other', at: 31_000 }, 60_000)).created, true);
      assert.equal((await s.raiseAlert({ ...a, id: 'a4', rule: 'other-rule', at: 32_000 }, 60_000)).created, true);
      // Past the window (60 s after the last occurrence): a new alert.
      const later = await s.raiseAlert({ ...a, id: 'a5', at: 90_001 }, 60_000);
      assert.equal(later.created, true);
      assert.equal((await s.getAlert('a1'))!.count, 2);
      assert.deepEqual(
        (await s.listAlerts({ limit: 10 })).map((x) => x.id),
        ['a5', 'a4', 'a3', 'a1'],
        'newest first',
      );
      assert.deepEqual(
        (await s.listAlerts({ rule: 'new-edges', limit: 10 })).map((x) => x.id),
        ['a5', 'a3', 'a1'],
      );
      assert.deepEqual(
        (await s.listAlerts({ limit: 2 })).map((x) => x.id),
        ['a5', 'a4'],
      );
    });

    it('acks once, keeps the first ack, and an occurrence after an ack opens a new alert', async () => {
      const s = t.store;
      const a = { id: 'b1', rule: 'spikes', kind: 'deny-spike', key: 'k', at: 1_000, details: {} };
      await s.raiseAlert(a, 60_000);
      const acked = await s.ackAlert('b1', 'operator', 2_000);
      assert.equal(acked?.state, 'acked');
      assert.equal(acked?.ackedBy, 'operator');
      assert.equal(acked?.ackedAt, 2_000);
      assert.equal((await s.ackAlert('b1', 'admin', 3_000))?.ackedBy, 'operator', 'the first ack stands');
      assert.equal(await s.ackAlert('nope', 'operator', 3_000), undefined);
      const next = await s.raiseAlert({ ...a, id: 'b2', at: 4_000 }, 60_000);
      assert.equal(next.created, true, 'an acknowledged alert is not counted into');
      assert.deepEqual(
        (await s.listAlerts({ rule: 'spikes', state: 'open', limit: 10 })).map((x) => x.id),
        ['b2'],
      );
      assert.deepEqual(
        (await s.listAlerts({ rule: 'spikes', state: 'acked', limit: 10 })).map((x) => x.id),
        ['b1'],
      );
    });

    it('records what the response did, and prunes old alerts', async () => {
      const s = t.store;
      await s.raiseAlert({ id: 'c1', rule: 'resp', kind: 'new-edge', key: 'k', at: 5_000, details: {} }, 1);
      const r = { quarantined: 'spiffe://example.org/web', expiresAt: 905_000, undoneAt: null, undoneBy: null };
      assert.deepEqual((await s.setAlertResponse('c1', r))?.response, r);
      const undone = { ...r, undoneAt: 6_000, undoneBy: 'operator' };
      assert.deepEqual((await s.setAlertResponse('c1', undone))?.response, undone);
      assert.deepEqual((await s.getAlert('c1'))?.response, undone);
      assert.equal(await s.setAlertResponse('none', r), undefined);
      await s.raiseAlert({ id: 'c2', rule: 'resp', kind: 'new-edge', key: 'k2', at: 9_000_000, details: {} }, 1);
      assert.ok((await s.pruneAlerts(1_000_000)) >= 1);
      assert.equal(await s.getAlert('c1'), undefined);
      assert.ok(await s.getAlert('c2'));
    });
  });
}

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, edges and identities seen: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('knows the (caller, destination) pairs and identities of logged decisions, on any action', async () => {
      const d = {
        at: 1,
        decision: 'allow' as const,
        reason: 'RULE',
        policyRevision: 1,
        rule: '',
        reporter: 'spiffe://example.org/writ/agent/n1',
      };
      await t.store.addDecisions([
        { ...d, id: 'd1', from: 'spiffe://example.org/web', to: 'spiffe://example.org/api', action: 'GET /a' },
        { ...d, id: 'd2', from: 'spiffe://example.org/api', to: 'spiffe://example.org/db', action: 'tcp 5432' },
      ]);
      const seen = await t.store.seenEdges([
        { from: 'spiffe://example.org/web', to: 'spiffe://example.org/api' },
        { from: 'spiffe://example.org/api', to: 'spiffe://example.org/web' },
        { from: 'spiffe://example.org/web', to: 'spiffe://example.org/db' },
      ]);
      assert.deepEqual([...seen], ['spiffe://example.org/web\nspiffe://example.org/api']);
      const ids = await t.store.seenIdentities(['spiffe://example.org/web', 'spiffe://example.org/db', 'spiffe://example.org/new']);
      assert.deepEqual([...ids].sort(), ['spiffe://example.org/db', 'spiffe://example.org/web'], 'a caller, and one only ever called');
      // More than one statement's worth of lookups.
      const many = Array.from({ length: 450 }, (_, i) => ({ from: `spiffe://example.org/c${i}`, to: 'spiffe://example.org/api' }));
      many.push({ from: 'spiffe://example.org/web', to: 'spiffe://example.org/api' });
      assert.deepEqual([...(await t.store.seenEdges(many))], ['spiffe://example.org/web\nspiffe://example.org/api']);
      assert.deepEqual([...(await t.store.seenIdentities([...many.map((p) => p.from), 'spiffe://example.org/db']))].sort(), [
        'spiffe://example.org/db',
        'spiffe://example.org/web',
      ]);
    });
  });
}
