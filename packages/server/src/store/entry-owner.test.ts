/** Store conformance: an entry's optional owner (issue 13) is stored, changed and cleared, on SQLite and PostgreSQL. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';
import type { EntryInput } from './types.ts';

const input = (over: Partial<EntryInput> = {}): EntryInput => ({
  spiffeId: 'spiffe://example.org/web',
  parentId: 'spiffe://example.org/writ/agent/n1',
  selectors: ['k8s:ns:shop'],
  x509SvidTtl: 0,
  jwtSvidTtl: 0,
  dnsNames: [],
  federatesWith: [],
  admin: false,
  hint: '',
  expiresAt: null,
  ...over,
});

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, entry owner: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('keeps the owner through create, read, sync, update; an entry without one has none', async () => {
      const [withOwner, without] = await t.store.createEntries([input({ owner: 'team-shop' }), input({ spiffeId: 'spiffe://example.org/db' })], 1000);
      assert.equal(withOwner!.owner, 'team-shop');
      assert.equal((await t.store.getEntry(withOwner!.id))!.owner, 'team-shop');
      assert.equal((await t.store.getEntry(without!.id))!.owner, undefined);
      const synced = (await t.store.syncEntries('spiffe://example.org/writ/agent/n1', 0)).entries;
      assert.deepEqual(synced.map((e) => [e.spiffeId, e.owner]).sort(), [
        ['spiffe://example.org/db', undefined],
        ['spiffe://example.org/web', 'team-shop'],
      ]);
      const changed = await t.store.updateEntry(withOwner!.id, input({ owner: 'team-web' }), 2000);
      assert.equal(changed.owner, 'team-web');
      assert.equal((await t.store.getEntry(withOwner!.id))!.owner, 'team-web');
      await t.store.updateEntry(withOwner!.id, input(), 3000);
      assert.equal((await t.store.getEntry(withOwner!.id))!.owner, undefined, 'cleared');
    });
  });
}
