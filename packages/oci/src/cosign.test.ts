import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { isWritError, WritError } from '@writ/spiffe';
import { parseCosignKey, signatureRequirement, verifyCosign, verifySignature } from './cosign.ts';
import { COSIGN_KEY_KINDS, type CosignKey, type CosignKeyKind, cosignSign, makeCosignKey } from './testing/cosign.ts';
import { MEDIA_TYPES, startRegistry, type TestRegistry } from './testing/registry.ts';
import { RegistryClient } from './registry.ts';
import { registryConfig } from './registry-config.ts';
import type { Descriptor, Manifest, RegistryReader } from './types.ts';

function clientFor(r: TestRegistry): RegistryClient {
  return new RegistryClient({ config: registryConfig({ registries: { [r.host]: { ca: r.caPem } } }) });
}

let dir: string;
let registry: TestRegistry;
let withReferrers: TestRegistry;
let reader: RegistryClient;
let referrersReader: RegistryClient;
const keys = new Map<CosignKeyKind, CosignKey>();
let foreign: CosignKey;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-cosign-'));
  registry = await startRegistry();
  withReferrers = await startRegistry({ referrers: true });
  reader = clientFor(registry);
  referrersReader = clientFor(withReferrers);
  for (const kind of COSIGN_KEY_KINDS) keys.set(kind, await makeCosignKey(dir, kind));
  foreign = await makeCosignKey(mkdtempSync(join(dir, 'foreign-')), 'p256');
});

after(async () => {
  reader?.close();
  referrersReader?.close();
  await Promise.all([registry?.stop(), withReferrers?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

const key = (kind: CosignKeyKind): CosignKey => keys.get(kind) ?? assert.fail(`no ${kind} key`);
const requirement = (...ks: CosignKey[]) =>
  signatureRequirement(
    'release',
    ks.map((k) => parseCosignKey(k.pubPem)),
  );
const repoOf = (r: TestRegistry, repository: string) => ({ registry: r.host, repository });

describe('cosign signatures made by the real cosign CLI', () => {
  for (const version of ['v2', 'v3'] as const) {
    const layout = version === 'v2' ? 'simple-signing' : 'sigstore-bundle';
    for (const kind of COSIGN_KEY_KINDS) {
      test(`cosign ${version} with a ${kind} key: verified, ${layout}`, async () => {
        const image = await registry.pushImage(`sig/${version}-${kind}`, 'v1');
        await cosignSign(version, key(kind), image.ref, registry.caFile, dir);
        const result = await verifyCosign(reader, repoOf(registry, image.repository), image.digest, requirement(key(kind)));
        assert.deepEqual(result, { verified: true, layout, keyIndex: 0 });
        const other = await verifyCosign(reader, repoOf(registry, image.repository), image.digest, requirement(foreign));
        assert.equal(other.verified, false);
        assert.equal(!other.verified && other.reason, 'bad-signature');
      });
    }
  }

  test('a signature at the .sig tag that verifies: the referrers are not asked for (two fewer reads per first-seen image)', async () => {
    const image = await registry.pushImage('sig/fast-path', 'v1');
    await cosignSign('v2', key('p256'), image.ref, registry.caFile, dir);
    const asked: string[] = [];
    const counting = {
      manifest: (r: Parameters<RegistryClient['manifest']>[0], ref: string, sig?: AbortSignal) => (asked.push(`manifest ${ref}`), reader.manifest(r, ref, sig)),
      blob: (r: Parameters<RegistryClient['blob']>[0], d: string, max: number, sig?: AbortSignal) => (asked.push('blob'), reader.blob(r, d, max, sig)),
      referrers: (r: Parameters<RegistryClient['referrers']>[0], d: string, t?: string, sig?: AbortSignal) => (
        asked.push('referrers'), reader.referrers(r, d, t, sig)
      ),
    };
    const result = await verifyCosign(counting, repoOf(registry, image.repository), image.digest, requirement(key('p256')));
    assert.deepEqual(result, { verified: true, layout: 'simple-signing', keyIndex: 0 });
    assert.deepEqual(asked, [`manifest sha256-${image.digest.slice(7)}.sig`, 'blob']);
  });

  test('cosign v3 through the OCI 1.1 referrers API (no fallback tag written)', async () => {
    const image = await withReferrers.pushImage('sig/oci11', 'v1');
    await cosignSign('v3', key('p256'), image.ref, withReferrers.caFile, dir);
    assert.equal(
      await referrersReader.manifest(repoOf(withReferrers, image.repository), `sha256-${image.digest.slice(7)}`),
      null,
      'cosign used the API, not the tag',
    );
    const result = await verifyCosign(referrersReader, repoOf(withReferrers, image.repository), image.digest, requirement(foreign, key('p256')));
    assert.deepEqual(result, { verified: true, layout: 'sigstore-bundle', keyIndex: 1 });
  });

  for (const target of ['the referrers API', 'the sha256-<hex> tag fallback'] as const) {
    test(`cosign v2 simple signing pushed as an OCI 1.1 referrer, found through ${target}`, async () => {
      const r = target === 'the referrers API' ? withReferrers : registry;
      const client = target === 'the referrers API' ? referrersReader : reader;
      const image = await r.pushImage('sig/v2-referrer', target === 'the referrers API' ? 'api' : 'tag');
      await cosignSign('v2', key('rsa'), image.ref, r.caFile, dir, { referrers: true });
      assert.equal(await client.manifest(repoOf(r, image.repository), `sha256-${image.digest.slice(7)}.sig`), null, 'not at the .sig tag');
      const result = await verifyCosign(client, repoOf(r, image.repository), image.digest, requirement(key('rsa')));
      assert.deepEqual(result, { verified: true, layout: 'simple-signing', keyIndex: 0 });
    });
  }

  test('a referrers endpoint that fails does not hide a valid .sig signature, and never turns into "unsigned"', async () => {
    const image = await registry.pushImage('sig/broken-referrers', 'v1');
    const broken: RegistryReader = {
      manifest: (repo, reference, signal) => reader.manifest(repo, reference, signal),
      blob: (repo, digest, max, signal) => reader.blob(repo, digest, max, signal),
      referrers: async () => {
        throw new WritError('ERR_REGISTRY_RESPONSE_INVALID', 'referrers answer is not an index');
      },
    };
    const repo = repoOf(registry, image.repository);
    await assert.rejects(verifyCosign(broken, repo, image.digest, requirement(key('p256'))), (e: unknown) => isWritError(e, 'ERR_REGISTRY_RESPONSE_INVALID'));
    await cosignSign('v2', key('p256'), image.ref, registry.caFile, dir);
    assert.deepEqual(await verifyCosign(broken, repo, image.digest, requirement(key('p256'))), { verified: true, layout: 'simple-signing', keyIndex: 0 });
  });

  test('an unsigned image is refused as unsigned', async () => {
    const image = await registry.pushImage('sig/unsigned', 'v1');
    const result = await verifyCosign(reader, repoOf(registry, image.repository), image.digest, requirement(key('p256')));
    assert.equal(result.verified, false);
    assert.equal(!result.verified && result.reason, 'unsigned');
    assert.match(!result.verified ? result.message : '', /no cosign signature/);
  });

  test('a simple signature copied to another image never counts', async () => {
    const signed = await registry.pushImage('sig/copy', 'signed');
    const victim = await registry.pushImage('sig/copy', 'victim');
    await cosignSign('v2', key('p256'), signed.ref, registry.caFile, dir);
    const sig = await reader.manifest(repoOf(registry, 'sig/copy'), `sha256-${signed.digest.slice(7)}.sig`);
    assert.ok(sig);
    await registry.pushManifest('sig/copy', `sha256-${victim.digest.slice(7)}.sig`, sig.bytes, MEDIA_TYPES.ociManifest);
    const result = await verifyCosign(reader, repoOf(registry, 'sig/copy'), victim.digest, requirement(key('p256')));
    assert.equal(!result.verified && result.reason, 'other-image');
    assert.match(!result.verified ? result.message : '', new RegExp(signed.digest));
  });

  test('a sigstore bundle copied to another image never counts', async () => {
    const signed = await registry.pushImage('sig/copy3', 'signed');
    const victim = await registry.pushImage('sig/copy3', 'victim');
    await cosignSign('v3', key('p384'), signed.ref, registry.caFile, dir);
    const index = await reader.manifest(repoOf(registry, 'sig/copy3'), `sha256-${signed.digest.slice(7)}`);
    assert.ok(index);
    await registry.pushManifest('sig/copy3', `sha256-${victim.digest.slice(7)}`, index.bytes, MEDIA_TYPES.ociIndex);
    const result = await verifyCosign(reader, repoOf(registry, 'sig/copy3'), victim.digest, requirement(key('p384')));
    assert.equal(!result.verified && result.reason, 'other-image');
  });

  test('a tampered payload (digest rewritten to another image) and a tampered signature are refused', async () => {
    const signed = await registry.pushImage('sig/tamper', 'signed');
    const victim = await registry.pushImage('sig/tamper', 'victim');
    await cosignSign('v2', key('ed25519'), signed.ref, registry.caFile, dir);
    const sig = await reader.manifest(repoOf(registry, 'sig/tamper'), `sha256-${signed.digest.slice(7)}.sig`);
    assert.ok(sig);
    const layer = (sig.json.layers as Descriptor[])[0];
    assert.ok(layer);
    const payload = await reader.blob(repoOf(registry, 'sig/tamper'), layer.digest, 1 << 20);
    const forged = Buffer.from(payload.toString().replace(signed.digest, victim.digest));
    const forgedDigest = await registry.pushBlob('sig/tamper', forged);
    const withLayer = (l: Descriptor) => Buffer.from(JSON.stringify({ ...sig.json, layers: [l] }));
    await registry.pushManifest(
      'sig/tamper',
      `sha256-${victim.digest.slice(7)}.sig`,
      withLayer({ ...layer, digest: forgedDigest, size: forged.length }),
      MEDIA_TYPES.ociManifest,
    );
    const r1 = await verifyCosign(reader, repoOf(registry, 'sig/tamper'), victim.digest, requirement(key('ed25519')));
    assert.equal(!r1.verified && r1.reason, 'bad-signature');

    const original = layer.annotations?.['dev.cosignproject.cosign/signature'] ?? assert.fail('no signature annotation');
    const flipped = Buffer.from(original, 'base64');
    flipped[10] = (flipped[10] ?? 0) ^ 1;
    const annotations = { 'dev.cosignproject.cosign/signature': flipped.toString('base64') };
    await registry.pushManifest('sig/tamper', `sha256-${signed.digest.slice(7)}.sig`, withLayer({ ...layer, annotations }), MEDIA_TYPES.ociManifest);
    const r2 = await verifyCosign(reader, repoOf(registry, 'sig/tamper'), signed.digest, requirement(key('ed25519')));
    assert.equal(!r2.verified && r2.reason, 'bad-signature');
  });
});

describe('hostile signature manifests (an in-memory registry: the real one refuses to store them)', () => {
  const digest = `sha256:${'a'.repeat(64)}`;
  const hex = 'a'.repeat(64);
  const json = (v: unknown): Manifest => {
    const bytes = Buffer.from(JSON.stringify(v));
    return {
      digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
      mediaType: MEDIA_TYPES.ociManifest,
      bytes,
      json: v as Record<string, unknown>,
    };
  };
  const fake = (manifests: Record<string, Manifest>, referrers: Descriptor[] | null, blobs: Record<string, Buffer> = {}): RegistryReader => ({
    manifest: async (_repo, reference) => manifests[reference] ?? null,
    blob: async (_repo, d, max) => {
      const b = blobs[d];
      if (b === undefined) throw new WritError('ERR_IMAGE_NOT_FOUND', 'no such blob');
      if (b.length > max) throw new WritError('ERR_BLOB_TOO_LARGE', 'too large');
      return b;
    },
    referrers: async () => referrers,
  });
  const repo = { registry: 'registry.example.com', repository: 'team/app' };
  const req = () => signatureRequirement('k', [generateKeyPairSync('ed25519').publicKey]);

  test('junk descriptors, missing and oversized payloads, bundles that are not bundles: not signed, never an exception', async () => {
    const huge = `sha256:${'b'.repeat(64)}`;
    const sig = json({
      layers: [
        {
          mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
          digest: '../../../v2/_catalog',
          annotations: { 'dev.cosignproject.cosign/signature': 'AAAA' },
        },
        { mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', digest: huge, annotations: { 'dev.cosignproject.cosign/signature': 'AAAA' } },
        {
          mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
          digest: `sha256:${'c'.repeat(64)}`,
          annotations: { 'dev.cosignproject.cosign/signature': 7 },
        },
        'not a descriptor',
        null,
      ],
    });
    const bundleManifest = json({ layers: [{ mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json', digest: `sha256:${'d'.repeat(64)}` }] });
    const reader = fake(
      { [`sha256-${hex}.sig`]: sig, [bundleManifest.digest]: bundleManifest },
      [
        { mediaType: MEDIA_TYPES.ociManifest, digest: bundleManifest.digest, size: 1, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' },
        { mediaType: MEDIA_TYPES.ociManifest, digest: 'sha256:short', size: 1, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' },
      ],
      { [huge]: Buffer.alloc(2 * 1024 * 1024), [`sha256:${'d'.repeat(64)}`]: Buffer.from('{"mediaType": 42}') },
    );
    const result = await verifyCosign(reader, repo, digest, req());
    assert.equal(result.verified, false);
    assert.equal(!result.verified && result.reason, 'malformed');
  });

  test('property: a payload changed in any byte never verifies; random bundles and envelopes never verify and never throw', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const requirementP256 = signatureRequirement('k', [publicKey]);
    const payload = Buffer.from(
      JSON.stringify({
        critical: {
          identity: { 'docker-reference': 'registry.example.com/team/app' },
          image: { 'docker-manifest-digest': digest },
          type: 'cosign container image signature',
        },
        optional: null,
      }),
    );
    const signature = sign('sha256', payload, privateKey).toString('base64');
    const simple = (bytes: Buffer): RegistryReader => {
      const blobDigest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      const layer = {
        mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
        digest: blobDigest,
        size: bytes.length,
        annotations: { 'dev.cosignproject.cosign/signature': signature },
      };
      return fake({ [`sha256-${hex}.sig`]: json({ layers: [layer] }) }, [], { [blobDigest]: bytes });
    };
    assert.equal((await verifyCosign(simple(payload), repo, digest, requirementP256)).verified, true, 'the untouched payload verifies');
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: payload.length - 1 }), fc.integer({ min: 1, max: 255 }), async (at, xor) => {
        const changed = Buffer.from(payload);
        changed[at] = (changed[at] ?? 0) ^ xor;
        const r = await verifyCosign(simple(changed), repo, digest, requirementP256);
        assert.equal(r.verified, false);
      }),
      { numRuns: 200 },
    );
    const bundleDigest = `sha256:${'e'.repeat(64)}`;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.jsonValue(),
          fc.record({
            mediaType: fc.constant('application/vnd.dev.sigstore.bundle.v0.3+json'),
            dsseEnvelope: fc.jsonValue(),
            messageSignature: fc.jsonValue(),
          }),
        ),
        async (bundle) => {
          const m = json({ layers: [{ mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json', digest: bundleDigest, size: 1 }] });
          const reader = fake(
            { [m.digest]: m, [digest]: json({}) },
            [{ mediaType: MEDIA_TYPES.ociManifest, digest: m.digest, size: 1, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' }],
            {
              [bundleDigest]: Buffer.from(JSON.stringify(bundle) ?? 'null'),
            },
          );
          const r = await verifyCosign(reader, repo, digest, requirementP256);
          assert.equal(r.verified, false);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('a messageSignature bundle (signature over the manifest bytes) verifies when it names this digest', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const image = json({ schemaVersion: 2, config: {}, layers: [] });
    const bundleFor = (named: string, signature: Buffer) =>
      Buffer.from(
        JSON.stringify({
          mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
          verificationMaterial: { publicKey: { hint: 'x' } },
          messageSignature: {
            messageDigest: { algorithm: 'SHA2_256', digest: Buffer.from(named.slice(7), 'hex').toString('base64') },
            signature: signature.toString('base64'),
          },
        }),
      );
    const readerWith = (bundle: Buffer): RegistryReader => {
      const blobDigest = `sha256:${createHash('sha256').update(bundle).digest('hex')}`;
      const m = json({ layers: [{ mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json', digest: blobDigest, size: bundle.length }] });
      return fake(
        { [m.digest]: m, [image.digest]: image },
        [{ mediaType: MEDIA_TYPES.ociManifest, digest: m.digest, size: 1, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' }],
        {
          [blobDigest]: bundle,
        },
      );
    };
    const good = sign('sha256', image.bytes, privateKey);
    const r = signatureRequirement('k', [publicKey]);
    assert.deepEqual(await verifyCosign(readerWith(bundleFor(image.digest, good)), repo, image.digest, r), {
      verified: true,
      layout: 'sigstore-bundle',
      keyIndex: 0,
    });
    const elsewhere = await verifyCosign(readerWith(bundleFor(`sha256:${'0'.repeat(64)}`, good)), repo, image.digest, r);
    assert.equal(!elsewhere.verified && elsewhere.reason, 'other-image');
    const forged = await verifyCosign(readerWith(bundleFor(image.digest, sign('sha256', Buffer.from('other'), privateKey))), repo, image.digest, r);
    assert.equal(!forged.verified && forged.reason, 'bad-signature');
  });

  test("a digest that is not sha256 hex is the caller's mistake (TypeError), not a registry question", async () => {
    await assert.rejects(verifyCosign(fake({}, null), repo, 'sha256:ABC', req()), TypeError);
  });
});

describe('verifySignature: the hashes cosign uses per key type', () => {
  const data = Buffer.from('payload');
  test('ECDSA P-384 signed with SHA-384 (cosign v3) or SHA-256 (cosign v2), not SHA-1', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    assert.ok(verifySignature(publicKey, data, sign('sha384', data, privateKey)));
    assert.ok(verifySignature(publicKey, data, sign('sha256', data, privateKey)));
    assert.equal(verifySignature(publicKey, data, sign('sha1', data, privateKey)), false);
    assert.equal(verifySignature(publicKey, Buffer.from('other'), sign('sha384', data, privateKey)), false);
  });
  test('P-256 only with SHA-256', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    assert.ok(verifySignature(publicKey, data, sign('sha256', data, privateKey)));
    assert.equal(verifySignature(publicKey, data, sign('sha384', data, privateKey)), false);
  });
  test('garbage signatures are false, not exceptions', () => {
    const { publicKey } = generateKeyPairSync('ed25519');
    assert.equal(verifySignature(publicKey, data, Buffer.from('x')), false);
    assert.equal(verifySignature(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, data, Buffer.alloc(0)), false);
  });
});

describe('parseCosignKey', () => {
  const refused = (pem: string, pattern: RegExp): void => {
    assert.throws(
      () => parseCosignKey(pem),
      (e: unknown) => isWritError(e, 'ERR_KEY_INVALID') && pattern.test(e.message),
    );
  };
  test('refuses private keys, weak keys, unsupported curves, garbage and huge input', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    refused(ec.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), /public key/);
    const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    refused(rsa1024, /1024 bits/);
    const k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    refused(k1, /secp256k1/);
    refused('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n', /does not parse/);
    refused(`-----BEGIN PUBLIC KEY-----\n${'A'.repeat(20000)}\n-----END PUBLIC KEY-----\n`, /larger than/);
  });
  test('a requirement fingerprint changes with the key set, not with its order', () => {
    const a = generateKeyPairSync('ed25519').publicKey;
    const b = generateKeyPairSync('ed25519').publicKey;
    assert.equal(signatureRequirement('x', [a, b]).fingerprint, signatureRequirement('x', [b, a]).fingerprint);
    assert.notEqual(signatureRequirement('x', [a]).fingerprint, signatureRequirement('x', [a, b]).fingerprint);
  });
});
