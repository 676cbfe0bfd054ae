import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseCosignKey, signatureRequirement } from './cosign.ts';
import { type ImageSource, ImageVerifier, registryAllowed } from './images.ts';
import { RegistryClient } from './registry.ts';
import { registryConfig } from './registry-config.ts';
import { type CosignKey, cosignSign, makeCosignKey } from './testing/cosign.ts';
import { startHostileRegistry, startRegistry, type TestRegistry } from './testing/registry.ts';
import type { Descriptor, ImageRef, ImageRequirements, Manifest } from './types.ts';

/** The real client, counting what is asked of the registry, optionally slowed down. */
class Counting implements ImageSource {
  readonly calls = { resolve: 0, manifest: 0, blob: 0, referrers: 0 };
  /** While set, tag resolutions and manifest reads wait for it: a registry that has not answered yet. */
  gate: Promise<void> | undefined;
  readonly #inner: RegistryClient;
  constructor(inner: RegistryClient) {
    this.#inner = inner;
  }
  async #wait(): Promise<void> {
    await this.gate;
  }
  async resolve(ref: ImageRef, opts?: { signal?: AbortSignal }): Promise<{ digest: string }> {
    this.calls.resolve++;
    await this.#wait();
    return this.#inner.resolve(ref, opts?.signal === undefined ? {} : { signal: opts.signal });
  }
  async manifest(repo: Pick<ImageRef, 'registry' | 'repository'>, reference: string, signal?: AbortSignal): Promise<Manifest | null> {
    this.calls.manifest++;
    await this.#wait();
    return this.#inner.manifest(repo, reference, signal);
  }
  async blob(repo: Pick<ImageRef, 'registry' | 'repository'>, digest: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
    this.calls.blob++;
    return this.#inner.blob(repo, digest, maxBytes, signal);
  }
  async referrers(repo: Pick<ImageRef, 'registry' | 'repository'>, digest: string, artifactType?: string, signal?: AbortSignal): Promise<Descriptor[] | null> {
    this.calls.referrers++;
    return this.#inner.referrers(repo, digest, artifactType, signal);
  }
  get total(): number {
    return this.calls.resolve + this.calls.manifest + this.calls.blob + this.calls.referrers;
  }
}

let dir: string;
let registry: TestRegistry;
let client: RegistryClient;
let release: CosignKey;
let other: CosignKey;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-images-'));
  registry = await startRegistry();
  client = new RegistryClient({ config: registryConfig({ registries: { [registry.host]: { ca: registry.caPem } } }) });
  release = await makeCosignKey(dir, 'p256');
  other = await makeCosignKey(mkdtempSync(join(dir, 'other-')), 'ed25519');
});

after(async () => {
  client?.close();
  await registry?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const requirements = (over: Partial<ImageRequirements> = {}, ...keys: CosignKey[]): ImageRequirements => ({
  requireDigest: false,
  registries: [],
  signatures: [
    signatureRequirement(
      'release-key',
      (keys.length > 0 ? keys : [release]).map((k) => parseCosignKey(k.pubPem)),
    ),
  ],
  ...over,
});

describe('ImageVerifier against a real registry and real cosign signatures', () => {
  test('a signed tag resolves to its digest, is pinned, and says who signed it', async () => {
    const image = await registry.pushImage('team/app', 'v1');
    await cosignSign('v2', release, image.ref, registry.caFile, dir);
    const verifier = new ImageVerifier({ registry: client });
    const verdict = await verifier.check(registry.ref('team/app', 'v1'), requirements());
    assert.deepEqual(verdict, {
      image: registry.ref('team/app', 'v1'),
      digest: image.digest,
      pinned: `${registry.host}/team/app@${image.digest}`,
      violations: [],
      signedBy: ['release-key'],
    });
  });

  test('a multi-arch index and a Docker manifest list: the signature on the top-level digest is what counts', async () => {
    const verifier = new ImageVerifier({ registry: client });
    for (const [version, pushed] of [
      ['v3', await registry.pushIndex('team/multi', 'v1')],
      ['v2', await registry.pushDockerList('team/list', 'v1')],
    ] as const) {
      await cosignSign(version, release, pushed.ref, registry.caFile, dir);
      const verdict = await verifier.check(registry.ref(pushed.repository, 'v1'), requirements());
      assert.deepEqual(verdict.violations, [], `${pushed.mediaType}`);
      assert.equal(verdict.digest, pushed.digest);
      const child = pushed.children[0] ?? assert.fail('no child');
      const childVerdict = await verifier.check(`${registry.host}/${pushed.repository}@${child.digest}`, requirements());
      assert.equal(childVerdict.violations[0]?.control, 'imageSignature', 'a platform manifest is not signed by signing its index');
    }
  });

  test('a bearer-token registry: cosign signs with credentials, the verifier reads .sig tags and referrers with its own token', async () => {
    const bearer = await startRegistry({ auth: 'bearer', referrers: true });
    const bearerClient = new RegistryClient({
      config: registryConfig({ registries: { [bearer.host]: { ca: bearer.caPem, username: bearer.username, password: bearer.password } } }),
    });
    try {
      const auth = { host: bearer.host, username: bearer.username, password: bearer.password };
      const v2 = await bearer.pushImage('team/private', 'v2');
      const v3 = await bearer.pushImage('team/private', 'v3');
      await cosignSign('v2', release, v2.ref, bearer.caFile, dir, { auth });
      await cosignSign('v3', release, v3.ref, bearer.caFile, dir, { auth });
      const verifier = new ImageVerifier({ registry: bearerClient });
      for (const tag of ['v2', 'v3']) {
        const verdict = await verifier.check(bearer.ref('team/private', tag), requirements());
        assert.deepEqual(verdict.violations, [], tag);
        assert.deepEqual(verdict.signedBy, ['release-key']);
      }
      assert.ok(bearer.stats.tokenRequests > 0, 'tokens were asked for');
    } finally {
      bearerClient.close();
      await bearer.stop();
    }
  });

  test('requireDigest refuses a tag but still reports the digest the mutating webhook would pin', async () => {
    const image = await registry.pushImage('team/tagged', 'v1');
    const verdict = await new ImageVerifier({ registry: client }).check(
      registry.ref('team/tagged', 'v1'),
      requirements({ requireDigest: true, signatures: [] }),
    );
    assert.deepEqual(
      verdict.violations.map((v) => v.control),
      ['imageDigest'],
    );
    assert.equal(verdict.pinned, `${registry.host}/team/tagged@${image.digest}`);
    const pinned = await new ImageVerifier({ registry: client }).check(image.ref, requirements({ requireDigest: true, signatures: [] }));
    assert.deepEqual(pinned.violations, []);
    // The mutating webhook's request: no digest required, but the tag resolved so it can pin it.
    const mutate = await new ImageVerifier({ registry: client }).check(registry.ref('team/tagged', 'v1'), requirements({ signatures: [], pinTags: true }));
    assert.deepEqual(mutate.violations, []);
    assert.equal(mutate.pinned, `${registry.host}/team/tagged@${image.digest}`);
    const untouched = await new ImageVerifier({ registry: client }).check(registry.ref('team/tagged', 'v1'), requirements({ signatures: [] }));
    assert.equal(untouched.pinned, undefined, 'nothing asked of the image: the registry is not asked either');
  });

  test('registry prefixes match on path boundaries', () => {
    assert.ok(registryAllowed('registry.example.com/team/app', ['registry.example.com/team/']));
    assert.ok(registryAllowed('registry.example.com/team/app', ['registry.example.com/team']));
    assert.ok(registryAllowed('registry.example.com/team/app', ['registry.example.com']));
    assert.ok(!registryAllowed('registry.example.com/teamx/app', ['registry.example.com/team']));
    assert.ok(!registryAllowed('registry.example.com.evil.io/team/app', ['registry.example.com']));
    assert.ok(registryAllowed('anything/at/all', []));
  });

  test('a registry outside the allowed prefixes is refused without being contacted', async () => {
    const counting = new Counting(client);
    const verifier = new ImageVerifier({ registry: counting });
    const verdict = await verifier.check(registry.ref('teamx/app', 'v1'), requirements({ registries: [`${registry.host}/team`] }));
    assert.deepEqual(
      verdict.violations.map((v) => v.control),
      ['imageRegistry'],
    );
    assert.equal(counting.total, 0);
    const inside = await verifier.check(registry.ref('team/app', 'v1'), requirements({ registries: [`${registry.host}/team`] }));
    assert.deepEqual(inside.violations, []);
  });

  test('unsigned, foreign-key and unresolvable images get their own violation', async () => {
    const image = await registry.pushImage('team/unsigned', 'v1');
    const verifier = new ImageVerifier({ registry: client });
    const unsigned = await verifier.check(image.ref, requirements());
    assert.equal(unsigned.violations[0]?.control, 'imageSignature');
    assert.match(unsigned.violations[0]?.message ?? '', /not signed by release-key: no cosign signature/);
    await cosignSign('v3', other, image.ref, registry.caFile, dir);
    const foreign = await new ImageVerifier({ registry: client }).check(image.ref, requirements());
    assert.match(foreign.violations[0]?.message ?? '', /does not verify with any key/);
    const missing = await verifier.check(registry.ref('team/unsigned', 'nope'), requirements());
    assert.equal(missing.violations[0]?.control, 'imageResolve');
    assert.match(missing.violations[0]?.message ?? '', /ERR_IMAGE_NOT_FOUND/);
    assert.equal(missing.violations[0]?.code, undefined, 'a missing tag is a verdict, not a failure to check');
    const bad = await verifier.check('Registry.example.com/UPPER/app', requirements());
    assert.equal(bad.violations[0]?.control, 'imageResolve');
    assert.match(bad.violations[0]?.message ?? '', /not a valid reference/);
  });

  test('every requirement must be met: two keys, one signature, one violation', async () => {
    const image = await registry.pushImage('team/two', 'v1');
    await cosignSign('v2', release, image.ref, registry.caFile, dir);
    const req = requirements();
    const both = { ...req, signatures: [...req.signatures, signatureRequirement('audit-key', [parseCosignKey(other.pubPem)])] };
    const verdict = await new ImageVerifier({ registry: client }).check(image.ref, both);
    assert.deepEqual(verdict.signedBy, ['release-key']);
    assert.deepEqual(
      verdict.violations.map((v) => v.control),
      ['imageSignature'],
    );
    assert.match(verdict.violations[0]?.message ?? '', /audit-key/);
  });

  test('the second check of a digest asks the registry nothing; 500 concurrent first checks share one verification', async () => {
    const image = await registry.pushImage('team/cached', 'v1');
    await cosignSign('v2', release, image.ref, registry.caFile, dir);
    const counting = new Counting(client);
    const verifier = new ImageVerifier({ registry: counting });
    const ref = registry.ref('team/cached', 'v1');
    const verdicts = await Promise.all(Array.from({ length: 500 }, () => verifier.check(ref, requirements())));
    assert.ok(verdicts.every((v) => v.violations.length === 0 && v.digest === image.digest));
    assert.equal(counting.calls.resolve, 1, 'one tag resolution for 500 concurrent checks');
    const firstCalls = counting.total;
    assert.ok(firstCalls <= 6, `one verification's requests, got ${JSON.stringify(counting.calls)}`);
    // How fast a cached check is, is measured by bench/admission.ts (case b); here: it asks the registry nothing.
    const req = requirements();
    for (let i = 0; i < 2000; i++) await verifier.check(ref, req);
    assert.equal(counting.total, firstCalls, 'cached checks make no registry request');
  });

  test('a changed key takes effect at once; a new signature counts once the short refusal memory has passed', async () => {
    let now = 1_000_000;
    const image = await registry.pushImage('team/rotate', 'v1');
    const verifier = new ImageVerifier({ registry: client, now: () => now });
    const before = await verifier.check(image.ref, requirements());
    assert.equal(before.violations[0]?.control, 'imageSignature');
    await cosignSign('v2', release, image.ref, registry.caFile, dir);
    const remembered = await verifier.check(image.ref, requirements());
    assert.equal(remembered.violations[0]?.control, 'imageSignature', 'the refusal is remembered for a few seconds');
    now += 5_001;
    const signed = await verifier.check(image.ref, requirements());
    assert.deepEqual(signed.violations, []);
    // The same digest under another key set: another fingerprint, checked again, refused at once.
    const rotated = await verifier.check(image.ref, requirements({}, other));
    assert.equal(rotated.violations[0]?.control, 'imageSignature');
  });

  // The gate opens only after the late caller's verdict: a budget not honoured would hang until the test's timeout.
  test("a caller's budget bounds its wait; the shared work finishes and serves the next caller", { timeout: 30_000 }, async () => {
    const image = await registry.pushImage('team/slow', 'v1');
    await cosignSign('v2', release, image.ref, registry.caFile, dir);
    const counting = new Counting(client);
    let answer = (): void => undefined;
    counting.gate = new Promise((r) => (answer = r));
    const verifier = new ImageVerifier({ registry: counting });
    // The registry has not answered (it cannot: the gate is shut), yet the caller has its verdict.
    const late = await verifier.check(image.ref, requirements(), AbortSignal.timeout(50));
    assert.match(late.violations[0]?.message ?? '', /did not answer within the decision budget/);
    const asked = counting.total;
    assert.ok(asked > 0, 'the registry was asked, and has not answered');
    answer();
    // A caller with no budget of its own joins the work the first one started: nothing asked twice.
    const joined = await verifier.check(image.ref, requirements());
    assert.deepEqual(joined.violations, []);
    const calls = counting.total;
    const ready = await verifier.check(image.ref, requirements(), AbortSignal.timeout(50));
    assert.deepEqual(ready.violations, []);
    assert.equal(counting.total, calls, 'served from what the shared work found');
  });

  test('a registry that never answers gives a deny within the budget, and the verifier keeps serving', async () => {
    const hostile = await startHostileRegistry('slow');
    const slowClient = new RegistryClient({ config: registryConfig({ registries: { [hostile.host]: { ca: hostile.caPem } } }) });
    try {
      // The verifier's own work would wait a minute: only the caller's budget can end this check.
      const verifier = new ImageVerifier({ registry: slowClient, workTimeoutMs: 600_000 });
      const verdict = await verifier.check(`${hostile.host}/team/app:v1`, requirements(), AbortSignal.timeout(200));
      assert.equal(verdict.violations[0]?.control, 'imageResolve');
      assert.match(verdict.violations[0]?.message ?? '', /did not answer within the decision budget/);
      assert.equal(verdict.violations[0]?.code, 'ERR_REGISTRY_TIMEOUT');
      const image = await registry.pushImage('team/after', 'v1');
      const ok = await new ImageVerifier({ registry: client }).check(image.ref, requirements({ signatures: [] }));
      assert.deepEqual(ok.violations, []);
    } finally {
      slowClient.close();
      await hostile.stop();
    }
  });

  // The test's timeout is far below the verifier's own (10 minutes): a check the budget did not end would time it out.
  test('every kind of hostile registry: a verdict with a problem within the 2 s budget, never an exception', { timeout: 120_000 }, async () => {
    const kinds = [
      'slow',
      'slow-body',
      'garbage',
      'not-a-manifest',
      'wrong-media-type',
      'redirect-loop',
      'redirect-chain',
      'huge-manifest',
      'endless-manifest',
      'wrong-digest',
      'unavailable',
      'auth-loop',
      'not-http',
      'truncated',
      'endless-error',
      'bad-token',
    ] as const;
    for (const kind of kinds) {
      const hostile = await startHostileRegistry(kind);
      const hostileClient = new RegistryClient({
        config: registryConfig({ registries: { [hostile.host]: { ca: hostile.caPem, username: 'u', password: 'p' } } }),
      });
      try {
        const verifier = new ImageVerifier({ registry: hostileClient, workTimeoutMs: 600_000 });
        for (const ref of [`${hostile.host}/team/app:v1`, `${hostile.host}/team/app@sha256:${'f'.repeat(64)}`]) {
          const verdict = await verifier.check(ref, requirements(), AbortSignal.timeout(2000));
          assert.ok(verdict.violations.length > 0, `${kind} ${ref}: refused`);
          assert.ok(verdict.signedBy.length === 0);
        }
      } finally {
        hostileClient.close();
        await hostile.stop();
      }
    }
  });

  // Its latency is measured by bench/admission.ts (case c).
  test('ten first-seen signed images each verify (resolve + both layouts looked up)', async () => {
    const verifier = new ImageVerifier({ registry: client });
    for (let i = 0; i < 10; i++) {
      const image = await registry.pushImage('team/first', `v${i}`);
      await cosignSign('v2', release, image.ref, registry.caFile, dir);
      const v = await verifier.check(registry.ref('team/first', `v${i}`), requirements());
      assert.deepEqual(v.violations, []);
      assert.deepEqual(v.signedBy, ['release-key']);
    }
  });
});
