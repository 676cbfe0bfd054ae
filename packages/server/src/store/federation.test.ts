/** Store conformance for federation relationships (issue 14): every case on SQLite and PostgreSQL. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';
import type { FederationRelationship, StoreChange } from './types.ts';

const rel = (trustDomain: string, over: Partial<FederationRelationship> = {}): FederationRelationship => ({
  trustDomain,
  bundleEndpointUrl: `https://${trustDomain}:8443/`,
  profile: 'https_spiffe',
  endpointSpiffeId: `spiffe://${trustDomain}/writ/server`,
  createdAt: 1000,
  lastSuccessAt: null,
  lastError: null,
  lastErrorCode: null,
  lastErrorAt: null,
  sequence: null,
  refreshHint: null,
  nextRefreshAt: 1000,
  ...over,
});

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, federation relationships: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('creates, lists in trust domain order, and refuses a second relationship for a trust domain', async () => {
      await t.store.createFederation(rel('peer-b.test'));
      await t.store.createFederation(rel('peer-a.test', { profile: 'https_web', endpointSpiffeId: null }));
      assert.deepEqual(
        (await t.store.listFederations()).map((f) => [f.trustDomain, f.profile, f.endpointSpiffeId]),
        [
          ['peer-a.test', 'https_web', null],
          ['peer-b.test', 'https_spiffe', 'spiffe://peer-b.test/writ/server'],
        ],
      );
      await assert.rejects(t.store.createFederation(rel('peer-a.test')), (e) => isWritError(e, 'ERR_FEDERATION_EXISTS'));
      assert.deepEqual(await t.store.getFederation('peer-b.test'), rel('peer-b.test'));
    });

    it('records a fetch: a success clears nothing it is not given, an error keeps the sequence seen', async () => {
      const changes: StoreChange[] = [];
      const off = t.store.onChange((c) => changes.push(c));
      assert.equal(await t.store.updateFederation('peer-b.test', { lastSuccessAt: 2000, sequence: 7, refreshHint: 300, nextRefreshAt: 302_000 }), true);
      assert.equal(
        await t.store.updateFederation('peer-b.test', { lastError: 'no answer within 10s', lastErrorCode: 'ERR_BUNDLE_ENDPOINT_TIMEOUT', lastErrorAt: 3000 }),
        true,
      );
      off();
      const f = (await t.store.getFederation('peer-b.test'))!;
      assert.deepEqual(
        [f.lastSuccessAt, f.sequence, f.refreshHint, f.nextRefreshAt, f.lastError, f.lastErrorCode, f.lastErrorAt],
        [2000, 7, 300, 302_000, 'no answer within 10s', 'ERR_BUNDLE_ENDPOINT_TIMEOUT', 3000],
      );
      assert.ok(changes.some((c) => c.kind === 'federation'));
      assert.equal(await t.store.updateFederation('nobody.test', { lastSuccessAt: 1 }), false);
    });

    it('deletes the relationship and leaves the federated bundle it fetched', async () => {
      await t.store.setFederatedBundle({ trustDomain: 'peer-a.test', bundle: '{"keys":[]}', updatedAt: 5 });
      assert.equal(await t.store.deleteFederation('peer-a.test'), true);
      assert.equal(await t.store.deleteFederation('peer-a.test'), false);
      assert.equal(await t.store.getFederation('peer-a.test'), undefined);
      assert.equal((await t.store.getFederatedBundle('peer-a.test'))?.bundle, '{"keys":[]}');
    });
  });
}
