/**
 * `writ admission check --policy` with image requirements, against a real registry (Debian's
 * docker-registry with TLS from a test CA, @writ/oci's fixture) and signatures made by the real
 * cosign CLI: the same ImageVerifier the webhook uses, run offline by the CLI.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanup, ROOT, writ } from './helpers.ts';

// The fixtures live in @writ/oci's testing folder; loaded by path so this file builds without them.
const FIXTURES = { registry: join(ROOT, 'packages/oci/src/testing/registry.ts'), cosign: join(ROOT, 'packages/oci/src/testing/cosign.ts') };
const haveFixtures = existsSync(FIXTURES.registry) && existsSync(FIXTURES.cosign);

interface Registry {
  readonly host: string;
  readonly caFile: string;
  ref(repository: string, tagOrDigest?: string): string;
  pushImage(repository: string, tag?: string): Promise<{ readonly digest: string }>;
  stop(): Promise<void>;
}
interface Key {
  readonly keyFile: string;
  readonly pubFile: string;
}

describe('writ admission check with image signatures (real registry, real cosign)', {
  skip: haveFixtures ? false : '@writ/oci test fixtures not in this tree',
}, () => {
  let work: string;
  let registry: Registry;
  let release: Key;
  let foreign: Key;
  let signed: string;
  let unsigned: string;
  let config: string;

  before(async () => {
    const fx = (await import(FIXTURES.registry)) as { startRegistry(): Promise<Registry> };
    const cs = (await import(FIXTURES.cosign)) as {
      makeCosignKey(dir: string, kind: 'p256' | 'p384' | 'rsa' | 'ed25519'): Promise<Key>;
      cosignSign(version: 'v2' | 'v3', key: Key, ref: string, caFile: string, dir: string): Promise<void>;
    };
    work = mkdtempSync(join(tmpdir(), 'writ-admission-images-'));
    registry = await fx.startRegistry();
    release = await cs.makeCosignKey(work, 'p256');
    foreign = await cs.makeCosignKey(mkdtempSync(join(work, 'foreign-')), 'ed25519');
    const a = await registry.pushImage('team/app', 'v1');
    const b = await registry.pushImage('team/other', 'v1');
    signed = registry.ref('team/app', a.digest);
    unsigned = registry.ref('team/other', b.digest);
    await cs.cosignSign('v2', release, signed, registry.caFile, work);
    await cs.cosignSign('v2', foreign, unsigned, registry.caFile, work);
    config = join(work, 'registries.yaml');
    writeFileSync(config, `registries:\n  "${registry.host}":\n    ca: ${JSON.stringify(registry.caFile)}\n`);
  });
  after(async () => {
    await registry?.stop();
    if (work) cleanup(work);
  });

  const policy = (requireDigest: boolean) => `apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: images }
spec:
  namespaces: [prod]
  images:
    requireDigest: ${requireDigest}
    registries: ["${registry.host}/team/"]
    signatures: [{ name: release-key, keys: [{ file: ${release.pubFile} }] }]
`;
  const pod = (name: string, image: string) =>
    `apiVersion: v1\nkind: Pod\nmetadata: { name: ${name}, namespace: prod }\nspec:\n  containers: [{ name: app, image: "${image}" }]\n`;
  const check = async (manifest: string, requireDigest = true) => {
    const f = join(work, `m-${Math.random().toString(36).slice(2)}.yaml`);
    const p = join(work, `p-${requireDigest}.yaml`);
    writeFileSync(f, manifest);
    writeFileSync(p, policy(requireDigest));
    const r = await writ(undefined, ['admission', 'check', '-f', f, '--policy', p, '--registry-config', config, '-o', 'json']);
    return {
      code: r.code,
      stderr: r.stderr,
      results: (
        JSON.parse(r.stdout || '{"results":[]}') as {
          results: Array<{
            name: string;
            allowed: boolean;
            violations: Array<{ control: string; message: string }>;
            pinned: Array<{ image: string; pinned: string }>;
          }>;
        }
      ).results,
    };
  };

  it('an image signed by the release key is admitted; one signed by another key is denied, saying so', async () => {
    const r = await check(`${pod('good', signed)}---\n${pod('bad', unsigned)}`);
    assert.equal(r.code, 3, r.stderr);
    assert.deepEqual(
      r.results.map((x) => [x.name, x.allowed, x.violations.map((v) => v.control)]),
      [
        ['good', true, []],
        ['bad', false, ['imageSignature']],
      ],
    );
  });

  it('a tag under requireDigest: judged by the digest it resolves to, as the mutating webhook pins it; a tag that does not resolve is denied', async () => {
    const tag = registry.ref('team/app', 'v1');
    const pinned = await check(pod('tag', tag));
    assert.equal(pinned.code, 0, pinned.stderr);
    assert.deepEqual(pinned.results[0]!.pinned, [{ image: tag, pinned: signed }]);
    // The table says which images were judged by their digest.
    const f = join(work, 'tag.yaml');
    writeFileSync(f, pod('tag', tag));
    const table = await writ(undefined, ['admission', 'check', '-f', f, '--policy', join(work, 'p-true.yaml'), '--registry-config', config]);
    assert.equal(table.code, 0, table.stderr);
    assert.ok(table.stdout.includes(`  pinned: ${tag} -> ${signed}\n`), table.stdout);
    // The tag of an image signed by another key: pinned, and then denied for its signature.
    const other = await check(pod('other', registry.ref('team/other', 'v1')));
    assert.equal(other.code, 3, other.stderr);
    assert.deepEqual(
      other.results[0]!.violations.map((v) => v.control),
      ['imageSignature'],
    );
    const missing = await check(pod('missing', registry.ref('team/app', 'no-such-tag')));
    assert.equal(missing.code, 3, missing.stderr);
    assert.ok(
      missing.results[0]!.violations.some((v) => v.control === 'imageDigest'),
      JSON.stringify(missing.results),
    );
    assert.deepEqual(missing.results[0]!.pinned, []);
    const resolved = await check(pod('tag', tag), false);
    assert.equal(resolved.code, 0, resolved.stderr);
  });

  it('a registry whose CA is not given: denied, and the message names the --registry-config flag', async () => {
    const f = join(work, 'noca.yaml');
    writeFileSync(f, pod('noca', signed));
    const r = await writ(undefined, ['admission', 'check', '-f', f, '--policy', join(work, 'p-true.yaml'), '-o', 'json']);
    assert.equal(r.code, 3, r.stderr);
    const [res] = (JSON.parse(r.stdout) as { results: Array<{ violations: Array<{ control: string; message: string }> }> }).results;
    assert.ok(
      res!.violations.some((v) => v.message.includes('--registry-config')),
      JSON.stringify(res),
    );
  });

  it('an image from another registry is refused before any request', async () => {
    const r = await check(pod('elsewhere', `registry.invalid/team/app@sha256:${'a'.repeat(64)}`));
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.results[0]!.violations[0]!.control, 'imageRegistry');
  });
});
