import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { parseCosignKey, signatureRequirement, verifyCosign, verifySignature } from './cosign.ts';
import { COSIGN_KEY_KINDS, type CosignKey, type CosignKeyKind, cosignSign, makeCosignKey } from './testing/cosign.ts';
import { MEDIA_TYPES, startRegistry, type TestRegistry } from './testing/registry.ts';
import { RegistryClient } from './registry.ts';
import { registryConfig } from './registry-config.ts';
import type { Descriptor } from './types.ts';

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
