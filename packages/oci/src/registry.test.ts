/**
 * The registry client against Debian's real docker-registry (distribution 2.8) on loopback with TLS
 * from a test CA, in every auth mode, and against hostile fakes: each bad answer gets its code
 * within its budget, and the client keeps working afterwards.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { inspect } from 'node:util';
import { isWritError } from '@writ/spiffe';
import { parseImageRef } from './reference.ts';
import { registryConfig } from './registry-config.ts';
import { RegistryClient, parseWwwAuthenticate } from './registry.ts';
import { type HostileKind, type PushedImage, type TestRegistry, makeTestCa, sha256Digest, startHostileRegistry, startRegistry } from './testing/registry.ts';

function clientFor(
  reg: { host: string; caPem: string },
  creds: { username?: string; password?: string } = {},
  extra: ConstructorParameters<typeof RegistryClient>[0] = {},
): RegistryClient {
  return new RegistryClient({ config: registryConfig({ registries: { [reg.host]: { ca: reg.caPem, ...creds } } }), ...extra });
}

async function rejectsWith(p: Promise<unknown>, code: string, message?: RegExp): Promise<Error> {
  try {
    await p;
  } catch (err) {
    assert.ok(isWritError(err, code), `expected ${code}, got ${inspect(err)}`);
    if (message !== undefined) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

describe('against the real registry, no auth', () => {
  let reg: TestRegistry;
  let client: RegistryClient;
  let app: PushedImage;
  let index: PushedImage;
  let list: PushedImage;
  let docker: PushedImage;
  before(async () => {
    reg = await startRegistry();
    client = clientFor(reg);
    app = await reg.pushImage('team/app', 'v1', { layers: 2 });
    index = await reg.pushIndex('team/multi', 'v1');
    list = await reg.pushDockerList('team/dlist', 'v1');
    docker = await reg.pushImage('team/docker', 'v1', { docker: true });
  });
  after(async () => {
    client.close();
    await reg.stop();
  });

  // Speed on loopback is printed; judging it is bench/admission.ts's business.
  it('resolves a tag to the manifest digest the registry stored, the first time and 50 times more (prints loopback times)', async (t) => {
    const fresh = clientFor(reg);
    const t0 = performance.now();
    const r = await fresh.resolve(reg.ref('team/app', 'v1'));
    const first = performance.now() - t0;
    assert.deepEqual(r, { digest: app.digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: app.size });
    const warm: number[] = [];
    for (let i = 0; i < 50; i++) {
      const s = performance.now();
      assert.equal((await fresh.resolve(reg.ref('team/app', 'v1'))).digest, app.digest);
      warm.push(performance.now() - s);
    }
    warm.sort((a, b) => a - b);
    t.diagnostic(`resolve on loopback: first ${first.toFixed(1)} ms, warm p50 ${warm[25]!.toFixed(2)} ms, p99 ${warm[49]!.toFixed(2)} ms`);
    fresh.close();
  });

  it('pins an OCI index and a Docker manifest list by the top-level digest, and finds a platform inside', async () => {
    const r = await client.resolve(reg.ref('team/multi', 'v1'), { platform: { os: 'linux', architecture: 'arm64' } });
    assert.equal(r.digest, index.digest);
    assert.equal(r.mediaType, 'application/vnd.oci.image.index.v1+json');
    assert.equal(r.platformManifest?.digest, index.children[1]?.digest);
    const l = await client.resolve(reg.ref('team/dlist', 'v1'));
    assert.equal(l.digest, list.digest);
    assert.equal(l.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
    await rejectsWith(
      client.resolve(reg.ref('team/multi', 'v1'), { platform: { os: 'windows', architecture: 'amd64' } }),
      'ERR_IMAGE_NOT_FOUND',
      /no manifest for windows\/amd64/,
    );
  });

  it('resolves a Docker v2 manifest', async () => {
    const r = await client.resolve(reg.ref('team/docker', 'v1'));
    assert.equal(r.digest, docker.digest);
    assert.equal(r.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
  });

  it('checks that a digest reference exists; name:tag@digest goes by the digest', async () => {
    assert.equal((await client.resolve(reg.ref('team/app', app.digest))).digest, app.digest);
    assert.equal((await client.resolve(`${reg.host}/team/app:no-such-tag@${app.digest}`)).digest, app.digest);
    await rejectsWith(client.resolve(`${reg.host}/team/app@sha256:${'0'.repeat(64)}`), 'ERR_IMAGE_NOT_FOUND', /not found/);
    await rejectsWith(client.resolve(reg.ref('team/app', 'v2')), 'ERR_IMAGE_NOT_FOUND', /team\/app:v2 not found/);
    await rejectsWith(client.resolve(reg.ref('team/nothing', 'v1')), 'ERR_IMAGE_NOT_FOUND');
  });

  it('reads manifests (null when absent) and blobs with their digest checked and a size limit', async () => {
    const repo = parseImageRef(reg.ref('team/app'));
    const m = await client.manifest(repo, 'v1');
    assert.ok(m);
    assert.equal(m.digest, app.digest);
    assert.deepEqual(m.bytes, app.bytes);
    assert.equal(await client.manifest(repo, 'missing'), null);
    const config = m.json.config as { digest: string; size: number };
    const blob = await client.blob(repo, config.digest, 1024 * 1024);
    assert.equal(blob.length, config.size);
    await rejectsWith(client.blob(repo, config.digest, 10), 'ERR_BLOB_TOO_LARGE');
    await rejectsWith(client.blob(repo, `sha256:${'1'.repeat(64)}`, 1024), 'ERR_IMAGE_NOT_FOUND');
  });

  it('says the registry has no referrers API (distribution 2.8): null, so callers use the tag fallback', async () => {
    assert.equal(await client.referrers(parseImageRef(reg.ref('team/app')), app.digest), null);
  });

  it('refuses a registry whose certificate it was not told to trust, naming the fix', async () => {
    const untrusting = new RegistryClient();
    await rejectsWith(untrusting.resolve(reg.ref('team/app', 'v1')), 'ERR_REGISTRY_UNREACHABLE', /TLS certificate not trusted.*ca in the registry config/);
    untrusting.close();
  });

  it('refuses bad tags, repositories and registries before any request', async () => {
    await rejectsWith(client.manifest(parseImageRef(reg.ref('team/app')), '../../etc'), 'ERR_IMAGE_REF_INVALID');
    await rejectsWith(client.manifest({ registry: reg.host, repository: '../../v2/_catalog' }, 'v1'), 'ERR_IMAGE_REF_INVALID', /invalid repository/);
    await rejectsWith(client.manifest({ registry: 'evil.example.com/x?', repository: 'a' }, 'v1'), 'ERR_IMAGE_REF_INVALID', /invalid registry/);
    await rejectsWith(client.blob(parseImageRef(reg.ref('team/app')), 'sha256:abc', 10), 'ERR_IMAGE_REF_INVALID');
  });
});

describe('basic auth (htpasswd in the real registry)', () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startRegistry({ auth: 'basic' });
    await reg.pushImage('team/app', 'v1');
  });
  after(() => reg.stop());

  it('resolves with the configured credentials', async () => {
    const c = clientFor(reg, { username: reg.username, password: reg.password });
    assert.match((await c.resolve(reg.ref('team/app', 'v1'))).digest, /^sha256:[0-9a-f]{64}$/);
    assert.match((await c.resolve(reg.ref('team/app', 'v1'))).digest, /^sha256:/);
    c.close();
  });

  it('without credentials or with wrong ones: ERR_REGISTRY_AUTH, and the password is in no message', async () => {
    const none = clientFor(reg);
    await rejectsWith(none.resolve(reg.ref('team/app', 'v1')), 'ERR_REGISTRY_AUTH', /asks for credentials \(basic\) and none are configured/);
    none.close();
    const wrongPassword = 'not-the-password-4711';
    const wrong = clientFor(reg, { username: reg.username, password: wrongPassword });
    const err = await rejectsWith(wrong.resolve(reg.ref('team/app', 'v1')), 'ERR_REGISTRY_AUTH', /refused/);
    assert.doesNotMatch(`${err.message} ${inspect(err)} ${JSON.stringify(err)}`, new RegExp(wrongPassword));
    wrong.close();
  });
});

describe('bearer tokens (the fixture’s token front before the real registry)', () => {
  let reg: TestRegistry;
  let app: PushedImage;
  before(async () => {
    reg = await startRegistry({ auth: 'bearer', tokenTtlSeconds: 300 });
    app = await reg.pushImage('team/app', 'v1');
    await reg.pushImage('team/other', 'v1');
  });
  after(() => reg.stop());

  it('fetches a token with the basic credentials, caches it per scope, and 50 concurrent first requests share one fetch', async () => {
    const c = clientFor(reg, { username: reg.username, password: reg.password });
    const before = reg.stats.tokenRequests;
    const all = await Promise.all(Array.from({ length: 50 }, () => c.resolve(reg.ref('team/app', 'v1'))));
    assert.ok(all.every((r) => r.digest === app.digest));
    assert.equal(reg.stats.tokenRequests - before, 1);
    await c.resolve(reg.ref('team/app', 'v1'));
    assert.equal(reg.stats.tokenRequests - before, 1, 'a cached token is reused');
    await c.resolve(reg.ref('team/other', 'v1'));
    assert.equal(reg.stats.tokenRequests - before, 2, 'another repository is another scope');
    c.close();
  });

  it('asks for a new token once the old one has expired (clock injected)', async () => {
    let now = Date.now();
    const c = clientFor(reg, { username: reg.username, password: reg.password }, { now: () => now });
    const before = reg.stats.tokenRequests;
    await c.resolve(reg.ref('team/app', 'v1'));
    now += 299_000;
    await c.resolve(reg.ref('team/app', 'v1'));
    assert.equal(reg.stats.tokenRequests - before, 2, 'a token within 5 s of its expiry is not used');
    c.close();
  });

  it('a caller whose budget runs out while a shared token fetch is slow fails alone; the others get the token', async () => {
    const slow = await startRegistry({ auth: 'bearer', tokenDelayMs: 300 });
    const c = clientFor(slow, { username: slow.username, password: slow.password });
    try {
      const img = await slow.pushImage('team/app', 'v1');
      const hurried = c.resolve(slow.ref('team/app', 'v1'), { signal: AbortSignal.timeout(100) });
      const patient = c.resolve(slow.ref('team/app', 'v1'), { signal: AbortSignal.timeout(5000) });
      await rejectsWith(hurried, 'ERR_REGISTRY_TIMEOUT');
      assert.equal((await patient).digest, img.digest);
      assert.equal(slow.stats.tokenRequests, 1);
    } finally {
      c.close();
      await slow.stop();
    }
  });

  it('anonymous bearer tokens, as Docker Hub hands out for public images: no credentials configured, none sent', async () => {
    const pub = await startRegistry({ auth: 'bearer', anonymousPull: true });
    const c = clientFor(pub);
    try {
      const img = await pub.pushImage('library/nginx', 'latest');
      assert.equal((await c.resolve(`${pub.host}/library/nginx`)).digest, img.digest);
      assert.equal(pub.stats.tokenRequests, 1);
    } finally {
      c.close();
      await pub.stop();
    }
  });

  it('wrong or no credentials at the token endpoint: ERR_REGISTRY_AUTH', async () => {
    const wrong = clientFor(reg, { username: reg.username, password: 'wrong-password-xyz' });
    const err = await rejectsWith(wrong.resolve(reg.ref('team/app', 'v1')), 'ERR_REGISTRY_AUTH', /token endpoint .* refused the credentials/);
    assert.doesNotMatch(err.message, /wrong-password-xyz/);
    const none = clientFor(reg);
    await rejectsWith(none.resolve(reg.ref('team/app', 'v1')), 'ERR_REGISTRY_AUTH');
    wrong.close();
    none.close();
  });
});

describe('OCI 1.1 referrers (through the fixture’s front)', () => {
  let reg: TestRegistry;
  let app: PushedImage;
  let sbom: PushedImage;
  let sig: PushedImage;
  before(async () => {
    reg = await startRegistry({ referrers: true });
    app = await reg.pushImage('team/app', 'v1');
    const subject = { mediaType: app.mediaType, digest: app.digest, size: app.size };
    sig = await reg.pushImage('team/app', undefined, { extra: { subject, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' } });
    sbom = await reg.pushImage('team/app', undefined, { extra: { subject, artifactType: 'application/spdx+json' } });
  });
  after(() => reg.stop());

  it('lists the referrers of a digest, filtered by artifactType', async () => {
    const c = clientFor(reg);
    const repo = parseImageRef(reg.ref('team/app'));
    const all = await c.referrers(repo, app.digest);
    assert.deepEqual(all?.map((d) => d.digest).sort(), [sig.digest, sbom.digest].sort());
    const bundles = await c.referrers(repo, app.digest, 'application/vnd.dev.sigstore.bundle.v0.3+json');
    assert.deepEqual(
      bundles?.map((d) => d.digest),
      [sig.digest],
    );
    assert.deepEqual(await c.referrers(repo, sig.digest), []);
    const m = await c.manifest(repo, sig.digest);
    assert.ok(m);
    assert.equal((m.json.subject as { digest: string }).digest, app.digest);
    c.close();
  });
});

describe('IPv6 loopback', () => {
  it('resolves [::1]:PORT/repo:tag against the real registry listening there', async () => {
    const reg = await startRegistry({ ipv6: true });
    try {
      const img = await reg.pushImage('team/app', 'v1');
      assert.match(reg.host, /^\[::1\]:\d+$/);
      const c = clientFor(reg);
      assert.equal((await c.resolve(`${reg.host}/team/app:v1`)).digest, img.digest);
      c.close();
    } finally {
      await reg.stop();
    }
  });

  it('fetches a bearer token from a realm on [::1] and lists referrers there', async () => {
    const reg = await startRegistry({ ipv6: true, auth: 'bearer', referrers: true });
    try {
      const img = await reg.pushImage('team/app', 'v1');
      const c = clientFor(reg, { username: reg.username, password: reg.password });
      assert.equal((await c.resolve(`${reg.host}/team/app:v1`)).digest, img.digest);
      assert.deepEqual(await c.referrers(parseImageRef(reg.ref('team/app')), img.digest), []);
      assert.equal(reg.stats.tokenRequests, 1);
      c.close();
    } finally {
      await reg.stop();
    }
  });
});

describe('hostile registries: each answer within its budget, with its code', () => {
  const cases: [HostileKind, string, RegExp][] = [
    ['slow', 'ERR_REGISTRY_TIMEOUT', /did not answer within the time allowed/],
    ['slow-body', 'ERR_REGISTRY_TIMEOUT', /did not answer/],
    ['garbage', 'ERR_REGISTRY_RESPONSE_INVALID', /not JSON/],
    ['not-a-manifest', 'ERR_REGISTRY_RESPONSE_INVALID', /malformed .*config is not an object/],
    ['wrong-media-type', 'ERR_REGISTRY_RESPONSE_INVALID', /Content-Type "text\/html"/],
    ['redirect-loop', 'ERR_REGISTRY_RESPONSE_INVALID', /redirects in a loop/],
    ['redirect-chain', 'ERR_REGISTRY_RESPONSE_INVALID', /redirected more than 5 times/],
    ['huge-manifest', 'ERR_MANIFEST_TOO_LARGE', /announced 67108864 bytes/],
    ['endless-manifest', 'ERR_MANIFEST_TOO_LARGE', /more than the 4194304 bytes/],
    ['wrong-digest', 'ERR_DIGEST_MISMATCH', /Docker-Content-Digest sha256:b{64}/],
    ['unavailable', 'ERR_REGISTRY_UNREACHABLE', /answered 503/],
    ['auth-loop', 'ERR_REGISTRY_AUTH', /refused the credentials/],
    ['not-http', 'ERR_REGISTRY_RESPONSE_INVALID', /malformed HTTP \(HPE_/],
    ['truncated', 'ERR_REGISTRY_UNREACHABLE', /closed the connection in the middle of its answer|broke off/],
    ['endless-error', 'ERR_IMAGE_NOT_FOUND', /not found/],
    ['bad-token', 'ERR_REGISTRY_AUTH', /token endpoint .* not JSON/],
  ];
  for (const [kind, code, message] of cases) {
    it(`${kind}: ${code}`, async () => {
      const h = await startHostileRegistry(kind);
      const c = clientFor(h);
      try {
        // A registry that never ends its answer is ended by the caller's signal: its code says so (ERR_REGISTRY_TIMEOUT).
        await rejectsWith(c.resolve(`${h.host}/team/app:v1`, { signal: AbortSignal.timeout(500) }), code, message);
      } finally {
        c.close();
        await h.stop();
      }
    });
  }

  it('a digest reference whose bytes hash to something else is refused', async () => {
    const h = await startHostileRegistry('wrong-digest');
    const c = clientFor(h);
    try {
      await rejectsWith(c.resolve(`${h.host}/team/app@sha256:${'c'.repeat(64)}`), 'ERR_DIGEST_MISMATCH', /bytes that hash to sha256:/);
    } finally {
      c.close();
      await h.stop();
    }
  });

  it('the per-request timeout holds without a caller budget', async () => {
    const h = await startHostileRegistry('slow');
    const c = clientFor(h, {}, { requestTimeoutMs: 200 });
    try {
      await rejectsWith(c.resolve(`${h.host}/team/app:v1`), 'ERR_REGISTRY_TIMEOUT', /within 200 ms/);
    } finally {
      c.close();
      await h.stop();
    }
  });

  it('an already spent budget asks nothing; a refused port is unreachable; the client still serves afterwards', async () => {
    const reg = await startRegistry();
    const c = clientFor(reg);
    try {
      const img = await reg.pushImage('team/app', 'v1');
      await rejectsWith(c.resolve(reg.ref('team/app', 'v1'), { signal: AbortSignal.abort() }), 'ERR_REGISTRY_TIMEOUT');
      await rejectsWith(c.resolve('127.0.0.1:1/team/app:v1'), 'ERR_REGISTRY_UNREACHABLE', /connection refused/);
      assert.equal((await c.resolve(reg.ref('team/app', 'v1'))).digest, img.digest);
    } finally {
      c.close();
      await reg.stop();
    }
  });
});

describe('other answers: referrers and blobs from hostile fakes, plain HTTP only when configured', () => {
  it('a garbage referrers list and a blob with the wrong bytes are refused', async () => {
    const garbage = await startHostileRegistry('garbage');
    const wrong = await startHostileRegistry('wrong-digest');
    const g = clientFor(garbage);
    const w = clientFor(wrong);
    try {
      await rejectsWith(g.referrers(parseImageRef(`${garbage.host}/team/app`), `sha256:${'a'.repeat(64)}`), 'ERR_REGISTRY_RESPONSE_INVALID', /not JSON/);
      await rejectsWith(w.blob(parseImageRef(`${wrong.host}/team/app`), `sha256:${'a'.repeat(64)}`, 1024), 'ERR_DIGEST_MISMATCH', /hash to sha256:/);
    } finally {
      g.close();
      w.close();
      await garbage.stop();
      await wrong.stop();
    }
  });

  it('speaks plain HTTP to a registry marked insecureHttp, and only then', async () => {
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'a'.repeat(64)}`, size: 2 },
        layers: [],
      }),
    );
    const server = createHttpServer((req, res) => {
      if (req.url === '/v2/team/app/manifests/v1') res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(manifest);
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const host = `127.0.0.1:${(server.address() as { port: number }).port}`;
    const plain = new RegistryClient({ config: registryConfig({ registries: { [host]: { insecureHttp: true } } }) });
    const strict = new RegistryClient({ requestTimeoutMs: 1000 });
    try {
      assert.equal((await plain.resolve(`${host}/team/app:v1`)).digest, sha256Digest(manifest));
      await rejectsWith(strict.resolve(`${host}/team/app:v1`), 'ERR_REGISTRY_UNREACHABLE');
    } finally {
      plain.close();
      strict.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it('credentials go only to the registry itself: a redirect to another host gets no Authorization', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-redirect-'));
    const ca = makeTestCa(dir);
    const seen: { host: string; authorization: string | undefined }[] = [];
    const server = createHttpsServer({ cert: ca.certPem, key: ca.keyPem }, (req, res) => {
      seen.push({ host: req.headers.host ?? '', authorization: req.headers.authorization });
      if (req.headers.host?.startsWith('127.0.0.1') && req.headers.authorization === undefined) {
        return void res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end();
      }
      if (req.headers.host?.startsWith('127.0.0.1')) return void res.writeHead(307, { location: `https://localhost:${port}/storage/blob` }).end();
      res.writeHead(200).end('{}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const c = new RegistryClient({
      config: registryConfig({ registries: { [`127.0.0.1:${port}`]: { ca: ca.caPem, username: 'u', password: 'p' } }, default: { ca: ca.caPem } }),
    });
    try {
      const blob = await c.blob(parseImageRef(`127.0.0.1:${port}/team/app`), sha256Digest(Buffer.from('{}')), 1024);
      assert.equal(blob.toString(), '{}');
      assert.deepEqual(
        seen.map((s) => [s.host.split(':')[0], s.authorization !== undefined]),
        [
          ['127.0.0.1', false],
          ['127.0.0.1', true],
          ['localhost', false],
        ],
      );
    } finally {
      c.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a configured registry token that the registry refuses is ERR_REGISTRY_AUTH', async () => {
    const reg = await startRegistry({ auth: 'bearer' });
    const c = new RegistryClient({ config: registryConfig({ registries: { [reg.host]: { ca: reg.caPem, token: 'not-a-valid-token' } } }) });
    try {
      await reg.pushImage('team/app', 'v1');
      const err = await rejectsWith(c.resolve(reg.ref('team/app', 'v1')), 'ERR_REGISTRY_AUTH', /refused the configured credentials/);
      assert.doesNotMatch(err.message, /not-a-valid-token/);
    } finally {
      c.close();
      await reg.stop();
    }
  });
});

describe('parseWwwAuthenticate', () => {
  it('reads Bearer and Basic challenges with quoted, escaped and comma-holding values', () => {
    assert.deepEqual(parseWwwAuthenticate('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'), [
      { scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push' } },
    ]);
    assert.deepEqual(parseWwwAuthenticate('Basic realm="x \\"y\\""'), [{ scheme: 'basic', params: { realm: 'x "y"' } }]);
    assert.deepEqual(parseWwwAuthenticate(''), []);
  });
});
