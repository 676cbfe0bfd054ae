/** The admitted images in the sync contract: what the server encodes the agent decodes; anything else is refused whole. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWritError } from '@writ/spiffe';
import {
  decodeSyncAnswer,
  encodeEntry,
  encodeSyncAnswer,
  entryProblem,
  imageDigestsOf,
  parseImagesVersion,
  toJson,
  type AdmittedImagesState,
  type EntryRecord,
  type QuarantineState,
  type SyncBundles,
} from './index.ts';

const D = `sha256:${'ab'.repeat(32)}`;
const record: EntryRecord = {
  id: 'e1',
  spiffeId: 'spiffe://p.test/web',
  parentId: 'spiffe://p.test/writ/agent/n1',
  selectors: ['k8s:ns:shop'],
  x509SvidTtl: 0,
  jwtSvidTtl: 0,
  dnsNames: [],
  federatesWith: [],
  admin: false,
  hint: '',
  expiresAt: null,
  revision: 1,
  createdAt: 0,
  updatedAt: 0,
};
const parts = {
  quarantine: toJson<QuarantineState>({ version: '1', ids: [], breakGlass: [] }),
  revision: 1,
  full: false,
  entries: [],
  removed: [],
  bundlesVersion: 'b1',
  bundles: toJson<SyncBundles>({ bundle: { keys: [] }, federatedBundles: {} }),
  policy: undefined,
};
const decode = (text: string) => decodeSyncAnswer(JSON.parse(text), 'p.test', 'b1');
const refused = (v: unknown, why: RegExp) =>
  assert.throws(
    () => decodeSyncAnswer(v, 'p.test', 'b1'),
    (e) => isWritError(e, 'ERR_REQUEST_FAILED') && why.test(e.message),
  );

describe('entries that require an admitted image', () => {
  it('carry requireAdmittedImage only when it is set, and the agent refuses any other value', () => {
    assert.equal(encodeEntry({ ...record, requireAdmittedImage: true }).requireAdmittedImage, true);
    assert.ok(!('requireAdmittedImage' in encodeEntry({ ...record, requireAdmittedImage: false })), 'false stays off the wire');
    assert.ok(!('requireAdmittedImage' in encodeEntry(record)));
    const wire = { ...encodeEntry(record) };
    assert.equal(entryProblem({ ...wire, requireAdmittedImage: true }), undefined);
    for (const v of [false, 'true', 1, null]) assert.equal(entryProblem({ ...wire, requireAdmittedImage: v }), 'entry e1: requireAdmittedImage', String(v));
  });
});

describe('admitted images in the sync answer', () => {
  it('decode to what was encoded; absent when not sent', () => {
    const images = toJson<AdmittedImagesState>({ version: '1.2', full: true, digests: [D, `sha512:${'0'.repeat(128)}`] });
    const a = decode(encodeSyncAnswer({ ...parts, admittedImages: images, requireAdmittedImage: true }));
    assert.deepEqual(a.admittedImages, JSON.parse(images));
    assert.equal(a.requireAdmittedImage, true);
    const lean = encodeSyncAnswer({ ...parts, admittedImages: undefined, requireAdmittedImage: false });
    assert.ok(!lean.includes('admittedImages') && !lean.includes('requireAdmittedImage'), 'a lean answer stays lean');
    const b = decode(lean);
    assert.equal(b.admittedImages, undefined);
    assert.equal(b.requireAdmittedImage, undefined);
  });

  it('a malformed set is refused whole, naming what is wrong', () => {
    const base = JSON.parse(encodeSyncAnswer(parts)) as Record<string, unknown>;
    const good = { version: '1.2', full: false, digests: [D] };
    refused({ ...base, admittedImages: [] }, /admittedImages/);
    refused({ ...base, admittedImages: { ...good, version: '12' } }, /admittedImages\.version/);
    refused({ ...base, admittedImages: { ...good, version: 1.2 } }, /admittedImages\.version/);
    refused({ ...base, admittedImages: { ...good, full: 'no' } }, /admittedImages\.full/);
    refused({ ...base, admittedImages: { ...good, digests: D } }, /admittedImages\.digests/);
    for (const d of [D.toUpperCase(), `sha256:${'a'.repeat(63)}`, 'sha256:', `${'a'.repeat(64)}`, `md5:${'a'.repeat(32)}`, 7])
      refused({ ...base, admittedImages: { ...good, digests: [D, d] } }, /admittedImages\.digests\[1\]/);
    refused({ ...base, requireAdmittedImage: false }, /requireAdmittedImage/);
  });

  it('any value in their place is decoded or refused with ERR_REQUEST_FAILED, never another error', () => {
    const base = JSON.parse(encodeSyncAnswer(parts)) as Record<string, unknown>;
    fc.assert(
      fc.property(
        fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.record({ version: fc.string({ maxLength: 12 }), full: fc.boolean(), digests: fc.array(fc.string()) })),
        (v) => {
          try {
            decodeSyncAnswer({ ...base, admittedImages: v }, 'p.test', 'b1');
          } catch (e) {
            assert.ok(isWritError(e, 'ERR_REQUEST_FAILED'), String(e));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('versions are EPOCH.SEQ', () => {
    assert.deepEqual(parseImagesVersion('3.1500'), { epoch: 3, seq: 1500 });
    for (const v of ['', '3', '3.', '.5', '3.5.1', '-1.2', '1.2x', undefined]) assert.equal(parseImagesVersion(v), undefined, String(v));
  });
});

describe('image digests of a workload', () => {
  it('come from the runtime and kubelet selectors that name what a registry served', () => {
    const e = `sha256:${'e'.repeat(64)}`;
    assert.deepEqual(
      imageDigestsOf([
        'unix:uid:0',
        `docker:image_digest:${D}`,
        `docker:image_config_digest:sha256:${'c'.repeat(64)}`,
        `containerd:image_digest:${e}`,
        `k8s:container-image-id:registry.example:5000/shop/web@${D}`,
        `k8s:container-image-id:docker-pullable://registry.example/shop/web@${e}`,
      ]),
      [D, e],
    );
  });

  it('ignore image IDs, malformed digests and lookalikes', () => {
    assert.deepEqual(
      imageDigestsOf([
        `k8s:container-image-id:sha256:${'c'.repeat(64)}`,
        `k8s:container-image:registry.example/shop/web@${D}`,
        `docker:image_digest:${D.toUpperCase()}`,
        `docker:image_digest:${D}x`,
        `unix:path:/x@${D}`,
        `docker:label:image_digest:${D}`,
      ]),
      [],
    );
  });
});
