/** The hub's admitted-images feed on a real store: each agent gets what is new since its version, the whole set after a prune. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type AdmittedImagesState, parseImagesVersion } from '@writ/protocol';
import { sqliteTestStore, type TestStore } from '../testing/stores.ts';
import { AdmittedImagesFeed } from './admitted-images.ts';

const digest = (n: number): string => `sha256:${n.toString(16).padStart(64, '0')}`;
const part = (json: string | undefined): AdmittedImagesState | undefined => (json === undefined ? undefined : (JSON.parse(json) as AdmittedImagesState));

describe('admitted images feed', () => {
  let t: TestStore;
  before(async () => {
    t = await sqliteTestStore();
  });
  after(() => t.dispose());

  it('sends the whole set to a new agent, what is new to one that follows, nothing to one that is current', async () => {
    const feed = new AdmittedImagesFeed(t.store);
    const empty = await feed.read();
    assert.deepEqual(part(empty.forAgent('')), { version: empty.version, full: true, digests: [] });
    assert.equal(empty.forAgent(empty.version), undefined);
    await t.store.recordAdmittedImages([digest(1), digest(2)], 1);
    const v1 = await feed.read();
    assert.deepEqual(part(v1.forAgent(''))?.digests, [digest(1), digest(2)]);
    assert.deepEqual(part(v1.forAgent(empty.version)), { version: v1.version, full: false, digests: [digest(1), digest(2)] });
    await t.store.recordAdmittedImages([digest(3)], 2);
    const v2 = await feed.read();
    assert.deepEqual(part(v2.forAgent(v1.version)), { version: v2.version, full: false, digests: [digest(3)] });
    assert.equal(v2.forAgent(v2.version), undefined);
    assert.deepEqual(part(v1.forAgent(empty.version))?.digests, [digest(1), digest(2)], 'an older view is not changed by later arrivals');
  });

  it('an agent ahead of the store, of another epoch or with a malformed version gets the whole set', async () => {
    const feed = new AdmittedImagesFeed(t.store);
    const v = await feed.read();
    const { epoch, seq } = parseImagesVersion(v.version)!;
    for (const other of [`${epoch}.${seq + 5}`, `${epoch + 1}.${seq}`, 'garbage', '1']) assert.equal(part(v.forAgent(other))?.full, true, other);
    await t.store.pruneAdmittedImages(2);
    const pruned = await feed.read();
    assert.notEqual(parseImagesVersion(pruned.version)!.epoch, epoch);
    assert.deepEqual(part(pruned.forAgent(v.version)), { version: pruned.version, full: true, digests: [digest(3)] }, 'after a prune: the set as it is now');
  });

  it('10,000 digests: one incremental read after each arrival, a small delta for a follower', async () => {
    const feed = new AdmittedImagesFeed(t.store);
    const batch = Array.from({ length: 10_000 }, (_, i) => digest(100 + i));
    for (let i = 0; i < batch.length; i += 500) await t.store.recordAdmittedImages(batch.slice(i, i + 500), 10);
    let t0 = performance.now();
    const big = await feed.read();
    const firstRead = performance.now() - t0;
    t0 = performance.now();
    const full = big.forAgent('')!;
    const encode = performance.now() - t0;
    await t.store.recordAdmittedImages([digest(99_999)], 11);
    t0 = performance.now();
    const next = await feed.read();
    const incremental = performance.now() - t0;
    const delta = next.forAgent(big.version)!;
    assert.equal(part(full)!.digests.length, 10_001);
    assert.deepEqual(part(delta)!.digests, [digest(99_999)]);
    assert.ok(delta.length < 200, `a delta of one digest is ${delta.length} bytes`);
    assert.equal(next.forAgent(big.version), delta, 'serialised once per version asked for');
    process.stdout.write(
      `# 10,001 digests: full answer ${(full.length / 1024).toFixed(0)} KiB; first read ${firstRead.toFixed(1)} ms, encode ${encode.toFixed(1)} ms, read after one arrival ${incremental.toFixed(2)} ms, delta ${delta.length} bytes\n`,
    );
  });
});
