/** Store conformance for images recorded from admission and the registry (issue 13): every case on SQLite and PostgreSQL. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';
import type { InventoryImage } from './types.ts';

const D1 = `sha256:${'51'.repeat(32)}`;
const D2 = `sha256:${'52'.repeat(32)}`;
const IDX = `sha256:${'5f'.repeat(32)}`;

const img = (digest: string, over: Partial<InventoryImage> = {}): InventoryImage => ({
  digest,
  configDigest: null,
  indexDigest: null,
  platform: null,
  names: [],
  tags: [],
  layers: [],
  annotations: {},
  labels: {},
  created: null,
  firstSeen: 0,
  lastSeen: 0,
  ...over,
});

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, image sources: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('records images, merges what a later source adds, and keeps first seen', async () => {
      const admitted = img(D1, { names: ['registry.example/shop/web'], tags: ['registry.example/shop/web:1'] });
      assert.deepEqual(await t.store.recordImages([admitted], 1000), { added: 1, changed: 0 });
      assert.deepEqual(await t.store.recordImages([admitted], 2000), { added: 0, changed: 0 }, 'seen again: nothing new');
      const fromRegistry = img(D1, {
        configDigest: `sha256:${'c1'.repeat(32)}`,
        indexDigest: IDX,
        platform: 'linux/amd64',
        names: ['registry.example/shop/web'],
        tags: ['registry.example/shop/web:latest'],
        layers: [`sha256:${'a1'.repeat(32)}`, `sha256:${'a2'.repeat(32)}`],
        annotations: { 'org.opencontainers.image.base.name': 'registry.example/base:1' },
        labels: { team: 'payments' },
        created: Date.parse('2026-01-01T00:00:00Z'),
      });
      assert.deepEqual(await t.store.recordImages([fromRegistry, img(D2, { indexDigest: IDX, platform: 'linux/arm64' })], 3000), { added: 1, changed: 1 });
      const d = (await t.store.getImage(D1))!.image;
      assert.deepEqual(d.tags, ['registry.example/shop/web:1', 'registry.example/shop/web:latest']);
      assert.deepEqual(
        [d.configDigest, d.indexDigest, d.platform, d.layers.length, d.labels['team']],
        [fromRegistry.configDigest, IDX, 'linux/amd64', 2, 'payments'],
      );
      assert.equal(d.annotations['org.opencontainers.image.base.name'], 'registry.example/base:1');
      assert.deepEqual([d.firstSeen, d.lastSeen, d.created], [1000, 3000, fromRegistry.created]);
    });

    it('a bad digest stores nothing of the batch', async () => {
      const D3 = `sha256:${'53'.repeat(32)}`;
      await assert.rejects(t.store.recordImages([img(D3), img('sha256:nope')], 1), (e) => isWritError(e, 'ERR_FIELD_INVALID'));
      assert.equal(await t.store.getImage(D3), undefined);
    });
  });
}
