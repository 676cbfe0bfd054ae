/**
 * The admission inventory recorder with a real SQLite store and a fake registry (a RegistryReader
 * serving manifests and configs from memory, counting what it is asked): one registry read per
 * digest, every name and tag it was admitted under, a bare digest when the registry fails or no
 * policy checked the image, a store that refuses retried.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { Manifest, RegistryReader } from '@writ/oci';
import { WritError } from '@writ/spiffe';
import { AdmissionInventoryRecorder } from './image-sources.ts';
import { sqliteTestStore, type TestStore } from './testing/stores.ts';
import type { Store } from './store/types.ts';

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const DIFF = `sha256:${'d1'.repeat(32)}`;

/** One image in memory: its config blob and manifest. */
class FakeRegistry implements RegistryReader {
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, Manifest>();
  asked = 0;
  down = false;

  push(seed: string): string {
    const config = Buffer.from(
      JSON.stringify({ os: 'linux', architecture: 'amd64', created: '2026-02-03T04:05:06Z', config: { Labels: { seed } }, rootfs: { diff_ids: [DIFF] } }),
    );
    this.blobs.set(sha(config), config);
    const json = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [],
      annotations: { 'org.opencontainers.image.base.name': 'registry.example/base:1' },
    };
    const bytes = Buffer.from(JSON.stringify(json));
    const digest = sha(bytes);
    this.manifests.set(digest, { digest, mediaType: json.mediaType, bytes, json });
    return digest;
  }

  async manifest(_repo: unknown, reference: string): Promise<Manifest | null> {
    this.asked++;
    if (this.down) throw new WritError('ERR_REGISTRY_UNREACHABLE', 'registry.example: connection refused');
    return this.manifests.get(reference) ?? null;
  }

  async blob(_repo: unknown, digest: string): Promise<Buffer> {
    this.asked++;
    const b = this.blobs.get(digest);
    if (b === undefined) throw new WritError('ERR_IMAGE_NOT_FOUND', `blob ${digest} not found`);
    return b;
  }

  async referrers(): Promise<null> {
    return null;
  }
}

describe('AdmissionInventoryRecorder', () => {
  let t: TestStore;
  const log = pino({ level: 'silent' });
  before(async () => {
    t = await sqliteTestStore();
  });
  after(async () => t.dispose());

  it('reads a digest from the registry once, and records every name and tag it is admitted under', async () => {
    const reg = new FakeRegistry();
    const d = reg.push('one');
    const r = new AdmissionInventoryRecorder({ store: t.store, registry: reg, clock: () => 5000, log });
    r.record([{ image: `registry.example/shop/web:1@${d}`, digest: d }], true);
    await r.idle();
    r.record(
      [{ image: `registry.example/shop/web:latest@${d}`, digest: d }, { image: 'registry.example/shop/tagged:1', signedBy: [] } as { image: string }],
      true,
    );
    await r.idle();
    assert.equal(reg.asked, 2, 'one manifest and one config read, for both admissions');
    const img = (await t.store.getImage(d))!.image;
    assert.deepEqual(img.tags, ['registry.example/shop/web:1', 'registry.example/shop/web:latest']);
    assert.deepEqual([img.layers, img.labels, img.platform, img.created], [[DIFF], { seed: 'one' }, 'linux/amd64', Date.parse('2026-02-03T04:05:06Z')]);
    assert.equal(img.annotations['org.opencontainers.image.base.name'], 'registry.example/base:1');
    await r.close();
  });

  it('without an enforce policy the registry is not asked; a registry that fails leaves the bare digest, read again next time', async () => {
    const reg = new FakeRegistry();
    const d = reg.push('two');
    const r = new AdmissionInventoryRecorder({ store: t.store, registry: reg, clock: () => 6000, log });
    r.record([{ image: `registry.example/shop/plain@${d}`, digest: d }], false);
    await r.idle();
    assert.equal(reg.asked, 0);
    assert.deepEqual((await t.store.getImage(d))!.image.names, ['registry.example/shop/plain']);
    assert.deepEqual((await t.store.getImage(d))!.image.layers, []);
    reg.down = true;
    r.record([{ image: `registry.example/shop/plain@${d}`, digest: d }], true);
    await r.idle();
    assert.deepEqual((await t.store.getImage(d))!.image.layers, [], 'still bare');
    reg.down = false;
    r.record([{ image: `registry.example/shop/plain@${d}`, digest: d }], true);
    await r.idle();
    assert.deepEqual((await t.store.getImage(d))!.image.layers, [DIFF], 'read once the registry is back');
    await r.close();
  });

  it('a store that refuses is tried again, and record() itself never throws', async () => {
    const reg = new FakeRegistry();
    const d = reg.push('three');
    let refusals = 1;
    const flaky = new Proxy(t.store, {
      get(target, prop, receiver) {
        if (prop === 'recordImages')
          return (...args: Parameters<Store['recordImages']>) => {
            if (refusals-- > 0) return Promise.reject(new WritError('ERR_STORE_UNAVAILABLE', 'the database is away'));
            return target.recordImages(...args);
          };
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const r = new AdmissionInventoryRecorder({ store: flaky, registry: reg, clock: () => 7000, log });
    r.record(
      [
        { image: 'not a reference', digest: d },
        { image: `registry.example/shop/flaky@${d}`, digest: d },
      ],
      true,
    );
    await r.idle();
    assert.equal(await t.store.getImage(d), undefined, 'refused the first time');
    await new Promise<void>((resolve) => {
      const poll = async (): Promise<void> => ((await t.store.getImage(d)) ? resolve() : void setTimeout(() => void poll(), 50));
      void poll();
    });
    assert.deepEqual((await t.store.getImage(d))!.image.names, ['registry.example/shop/flaky']);
    await r.close();
  });
});
