/** Store conformance for what runs where (issue 13): every case on SQLite and PostgreSQL. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';
import { RUNNING_GRACE_MS, type WorkloadInput } from './types.ts';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

const w = (key: string, over: Partial<WorkloadInput> = {}): WorkloadInput => ({
  key,
  spiffeIds: ['spiffe://example.org/web'],
  containerId: key,
  containerName: 'web',
  podUid: 'pod-1',
  podName: 'web-1',
  namespace: 'shop',
  podOwner: 'ReplicaSet/web-7d9f',
  imageDigest: D1,
  imageName: 'registry.example/shop/web',
  labels: { team: 'payments' },
  annotations: {},
  owner: 'payments',
  ...over,
});

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, workloads: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('keeps what an agent runs now: first seen kept, the unlisted ended, a stale agent no longer running', async () => {
      const agent = 'spiffe://example.org/writ/agent/n1';
      assert.deepEqual(await t.store.putAgentWorkloads(agent, 'n1', [w('c1'), w('c2', { imageDigest: D2 })], 1000), { started: 2, ended: 0 });
      assert.deepEqual(await t.store.putAgentWorkloads(agent, 'n1', [w('c1')], 2000), { started: 0, ended: 1 });
      const running = await t.store.listWorkloads({ running: true, now: 2000, limit: 100 });
      assert.deepEqual(
        running.map((x) => [x.key, x.firstSeen, x.lastSeen, x.endedAt, x.node, x.owner]),
        [['c1', 1000, 2000, null, 'n1', 'payments']],
      );
      const all = await t.store.listWorkloads({ running: false, now: 2000, limit: 100 });
      assert.deepEqual(
        all.map((x) => [x.key, x.endedAt]),
        [
          ['c1', null],
          ['c2', 2000],
        ],
      );
      assert.deepEqual((await t.store.listWorkloads({ running: true, now: 2000, imageDigests: [D2], limit: 10 })).length, 0);
      assert.equal((await t.store.listWorkloads({ running: true, now: 2000, spiffeId: 'spiffe://example.org/web', limit: 10 })).length, 1);
      assert.equal((await t.store.listWorkloads({ running: true, now: 2000, spiffeId: 'spiffe://example.org/we', limit: 10 })).length, 0);
      // An agent that stops reporting: its workloads leave "running now" after the grace period.
      assert.equal((await t.store.listWorkloads({ running: true, now: 2000 + RUNNING_GRACE_MS + 1, limit: 10 })).length, 0);
      // Digests from agents enter the inventory under the name the runtime reported.
      assert.deepEqual((await t.store.getImage(D2))?.image.names, ['registry.example/shop/web']);
      // A heartbeat that changes a field stores it; one that changes nothing only moves last seen.
      await t.store.putAgentWorkloads(agent, 'n1', [w('c1', { labels: { team: 'shop' }, owner: 'shop' })], 2500);
      const c1 = (await t.store.listWorkloads({ running: true, now: 2500, limit: 10 }))[0];
      assert.deepEqual([c1?.labels, c1?.owner, c1?.firstSeen, c1?.lastSeen], [{ team: 'shop' }, 'shop', 1000, 2500]);
      await t.store.putAgentWorkloads(agent, 'n1', [w('c1')], 2600);
      // c2 reported again within the grace period after it ended (its agent restarted): it continues.
      assert.deepEqual(await t.store.putAgentWorkloads(agent, 'n1', [w('c1'), w('c2', { imageDigest: D2 })], 3000), { started: 0, ended: 0 });
      const back = (await t.store.listWorkloads({ running: true, now: 3000, limit: 10 })).find((x) => x.key === 'c2');
      assert.deepEqual([back?.firstSeen, back?.endedAt], [1000, null]);
      await t.store.putAgentWorkloads(agent, 'n1', [w('c1')], 4000);
      // Long after it ended, the same key is a new start.
      assert.deepEqual(await t.store.putAgentWorkloads(agent, 'n1', [w('c1'), w('c2', { imageDigest: D2 })], 4000 + RUNNING_GRACE_MS + 1), {
        started: 1,
        ended: 0,
      });
      assert.equal(
        (await t.store.listWorkloads({ running: true, now: 4000 + RUNNING_GRACE_MS + 1, limit: 10 })).find((x) => x.key === 'c2')?.firstSeen,
        4000 + RUNNING_GRACE_MS + 1,
      );
      await t.store.putAgentWorkloads(agent, 'n1', [w('c1')], 5000 + RUNNING_GRACE_MS);
      assert.equal(await t.store.pruneWorkloads(1500), 0, 'nothing last seen before');
      assert.equal(await t.store.pruneWorkloads(5000 + RUNNING_GRACE_MS), 1, 'the ended one, last seen before');
      assert.deepEqual(
        (await t.store.listWorkloads({ running: false, now: 5000 + RUNNING_GRACE_MS, limit: 10 })).map((x) => x.key),
        ['c1'],
      );
    });
  });
}
