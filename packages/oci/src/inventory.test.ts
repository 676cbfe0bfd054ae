/**
 * readImage against the real registry (distribution 2.8 on loopback, TLS from a test CA): an image
 * with base annotations, an OCI index and a Docker manifest list (every platform, or the one asked
 * for), and the codes for what is not there.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { parsePlatform, readImage } from './inventory.ts';
import { registryConfig } from './registry-config.ts';
import { RegistryClient } from './registry.ts';
import { type TestRegistry, startRegistry } from './testing/registry.ts';

describe('readImage', () => {
  let reg: TestRegistry;
  let client: RegistryClient;
  before(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ config: registryConfig({ registries: { [reg.host]: { ca: reg.caPem } } }) });
  });
  after(async () => {
    client?.close();
    await reg?.stop();
  });

  it('a manifest: its digest, config digest, diff IDs, labels, created and base annotations', async () => {
    const base = await reg.pushImage('shop/base', '1', { layers: 1, seed: 'base' });
    const annotations = {
      'org.opencontainers.image.base.name': reg.ref('shop/base', '1'),
      'org.opencontainers.image.base.digest': base.digest,
      'org.opencontainers.image.source': 'https://git.example.com/shop/web',
      'org.opencontainers.image.revision': 'abc123',
    };
    const app = await reg.pushImage('shop/web', '2.0', { layers: 2, seed: 'web', extra: { annotations } });
    const [facts, ...rest] = await readImage(client, reg.ref('shop/web', '2.0'));
    assert.equal(rest.length, 0);
    assert.equal(facts!.digest, app.digest);
    assert.equal(facts!.name, `${reg.host}/shop/web`);
    assert.equal(facts!.tag, `${reg.host}/shop/web:2.0`);
    assert.equal(facts!.indexDigest, null);
    assert.equal(facts!.platform, 'linux/amd64');
    assert.equal(facts!.diffIds.length, 2);
    assert.match(facts!.configDigest, /^sha256:[0-9a-f]{64}$/);
    assert.deepEqual(facts!.labels, { 'dev.writ.test.seed': 'web' });
    assert.equal(facts!.created, '2026-01-01T00:00:00Z');
    assert.deepEqual(facts!.annotations, annotations);
    const byDigest = await readImage(client, reg.ref('shop/web', app.digest));
    assert.equal(byDigest[0]!.tag, null, 'a digest reference names no tag');
    assert.deepEqual(byDigest[0]!.diffIds, facts!.diffIds);
  });

  it('an index: every platform with the index digest, or only the platform asked for', async () => {
    const idx = await reg.pushIndex('shop/multi', '1', ['linux/amd64', 'linux/arm64/v8']);
    const all = await readImage(client, reg.ref('shop/multi', '1'));
    assert.deepEqual(
      all.map((f) => [f.digest, f.indexDigest, f.platform]),
      [
        [idx.children[0]!.digest, idx.digest, 'linux/amd64'],
        [idx.children[1]!.digest, idx.digest, 'linux/arm64/v8'],
      ],
    );
    const arm = await readImage(client, reg.ref('shop/multi', '1'), { platform: parsePlatform('linux/arm64') });
    assert.deepEqual(
      arm.map((f) => f.digest),
      [idx.children[1]!.digest],
    );
    const list = await reg.pushDockerList('shop/dlist', 'x');
    assert.equal((await readImage(client, reg.ref('shop/dlist', 'x'))).length, 2, 'a Docker manifest list too');
    await assert.rejects(
      readImage(client, reg.ref('shop/multi', '1'), { platform: parsePlatform('windows/amd64') }),
      (e) => isWritError(e, 'ERR_IMAGE_NOT_FOUND') && /without a manifest for windows\/amd64/.test(e.message),
    );
    assert.ok(list.digest);
  });

  it('an unknown tag or repository is ERR_IMAGE_NOT_FOUND; a bad platform ERR_IMAGE_REF_INVALID', async () => {
    await assert.rejects(readImage(client, reg.ref('shop/web', 'nope')), (e) => isWritError(e, 'ERR_IMAGE_NOT_FOUND'));
    await assert.rejects(readImage(client, reg.ref('no/such', '1')), (e) => isWritError(e, 'ERR_IMAGE_NOT_FOUND'));
    await assert.rejects(
      readImage(client, reg.ref('shop/web', '2.0'), { platform: parsePlatform('linux/arm64') }),
      (e) => isWritError(e, 'ERR_IMAGE_NOT_FOUND') && /is a linux\/amd64 image, not an index with a manifest for linux\/arm64/.test(e.message),
    );
    assert.equal((await readImage(client, reg.ref('shop/web', '2.0'), { platform: parsePlatform('linux/amd64') })).length, 1);
    assert.throws(
      () => parsePlatform('linux'),
      (e) => isWritError(e, 'ERR_IMAGE_REF_INVALID'),
    );
    assert.throws(
      () => parsePlatform('Linux/AMD64'),
      (e) => isWritError(e, 'ERR_IMAGE_REF_INVALID'),
    );
  });
});
