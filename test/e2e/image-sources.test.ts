/**
 * How images enter the inventory, end to end: a real `writ server` child with --registry-config
 * and the admission listener, the real registry fixture (distribution 2.8, TLS from a test CA)
 * holding an image with OCI base annotations and a multi-platform index, the real CLI.
 * `writ image add` reads manifests and configs into the inventory (an index: every platform, or
 * the one asked for); registry failures are clear codes and store nothing; images an AdmissionReview
 * admits are recorded after the answer (from the registry when an enforce policy checked them,
 * as a bare digest with its name otherwise), and denied or dry-run ones are not.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type PushedImage, type TestRegistry, startRegistry } from '@writ/oci/testing';
import { cleanup, type ServerProcess, startServerProcess, waitFor, writ } from './helpers.ts';

const DNS = 'writ-admission.writ-system.svc';
const dir = mkdtempSync(join(tmpdir(), 'writ-image-sources-'));
let reg: TestRegistry;
let locked: TestRegistry;
let srv: ServerProcess;
let webhookPort = 0;
let webhookCa = '';
let base: PushedImage;
let web: PushedImage;
let multi: PushedImage;

const BASE_ANNOTATIONS = (host: string, baseDigest: string) => ({
  'org.opencontainers.image.base.name': `${host}/shop/base:1`,
  'org.opencontainers.image.base.digest': baseDigest,
  'org.opencontainers.image.source': 'https://git.example.com/shop/web',
  'org.opencontainers.image.revision': '4f2c1a9',
  'org.opencontainers.image.authors': 'shop-team@example.com',
});

before(async () => {
  [reg, locked] = await Promise.all([startRegistry(), startRegistry({ auth: 'basic' })]);
  base = await reg.pushImage('shop/base', '1', { layers: 1, seed: 'base' });
  web = await reg.pushImage('shop/web', '1.0', { layers: 2, seed: 'web', extra: { annotations: BASE_ANNOTATIONS(reg.host, base.digest) } });
  multi = await reg.pushIndex('shop/multi', '2', ['linux/amd64', 'linux/arm64']);
  await locked.pushImage('private/app', '1');
  // The locked registry's CA but none of its credentials: it refuses.
  writeFileSync(join(dir, 'registries.yaml'), `registries:\n  "${reg.host}": { ca: ${reg.caFile} }\n  "${locked.host}": { ca: ${locked.caFile} }\n`);
  srv = await startServerProcess({
    args: ['--registry-config', join(dir, 'registries.yaml'), '--admission-listen', '127.0.0.1:0', '--admission-dns', DNS],
  });
  const line = srv.logs.map((l) => JSON.parse(l) as { msg?: string; admissionUrl?: string }).find((l) => l.msg === 'writ server listening');
  webhookPort = Number(new URL(line!.admissionUrl!).port);
  const m = await writ(srv, ['admission', 'manifests', '--ca-file', join(srv.dataDir, 'bundle.pem'), '-o', 'json']);
  assert.equal(m.code, 0, m.stderr);
  const items = (JSON.parse(m.stdout) as { items: Array<{ webhooks: Array<{ clientConfig: { caBundle: string } }> }> }).items;
  webhookCa = Buffer.from(items[0]!.webhooks[0]!.clientConfig.caBundle, 'base64').toString();
});
after(async () => {
  await srv?.stop();
  await Promise.all([reg?.stop(), locked?.stop()]);
  cleanup(dir);
});

function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, srv.url),
      {
        method,
        ca: readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8'),
        checkServerIdentity: () => undefined,
        headers: {
          authorization: `Bearer ${srv.adminToken}`,
          ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
        },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

interface ImageJson {
  digest: string;
  configDigest: string | null;
  indexDigest: string | null;
  platform: string | null;
  names: string[];
  tags: string[];
  layers: string[];
  annotations: Record<string, string>;
  labels: Record<string, string>;
  created: string | null;
}

async function image(digest: string): Promise<ImageJson | undefined> {
  const r = await api('GET', `/v1/images/${encodeURIComponent(digest)}`);
  return r.status === 200 ? (r.json as unknown as ImageJson) : undefined;
}

describe('writ image add', () => {
  it('reads an image with base annotations: digest, config digest, diff IDs, labels, created, annotations', async () => {
    const r = await writ(srv, ['image', 'add', reg.ref('shop/web', '1.0')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^DIGEST\s+PLATFORM\s+LAYERS\s+BASE\s+INDEX$/m);
    assert.match(r.stdout, new RegExp(`^${web.digest}\\s+linux/amd64\\s+2\\s+${reg.host}/shop/base:1\\s+-$`, 'm'));
    const shown = await writ(srv, ['image', 'show', web.digest, '-o', 'json']);
    assert.equal(shown.code, 0, shown.stderr);
    const d = JSON.parse(shown.stdout) as ImageJson;
    assert.deepEqual(d.names, [`${reg.host}/shop/web`]);
    assert.deepEqual(d.tags, [`${reg.host}/shop/web:1.0`]);
    assert.equal(d.layers.length, 2);
    for (const l of d.layers) assert.match(l, /^sha256:[0-9a-f]{64}$/);
    assert.match(d.configDigest ?? '', /^sha256:[0-9a-f]{64}$/);
    assert.deepEqual(d.labels, { 'dev.writ.test.seed': 'web' });
    assert.equal(d.created, '2026-01-01T00:00:00.000Z');
    assert.deepEqual(d.annotations, BASE_ANNOTATIONS(reg.host, base.digest));
    const table = await writ(srv, ['image', 'show', web.digest]);
    assert.match(table.stdout, new RegExp(`^base\\s+${reg.host}/shop/base:1@${base.digest}( |$)`, 'm'), 'image show names the base');
  });

  it('an index: every platform with the index digest, or only --platform; again is 200 with nothing added', async () => {
    const one = await writ(srv, ['image', 'add', reg.ref('shop/multi', '2'), '--platform', 'linux/arm64', '-o', 'json']);
    assert.equal(one.code, 0, one.stderr);
    const a = JSON.parse(one.stdout) as { images: ImageJson[]; added: number };
    assert.deepEqual(
      a.images.map((i) => [i.digest, i.platform, i.indexDigest]),
      [[multi.children[1]!.digest, 'linux/arm64', multi.digest]],
    );
    assert.equal(a.added, 1);
    assert.equal(await image(multi.children[0]!.digest), undefined, 'the other platform was not asked for');
    const all = await writ(srv, ['image', 'add', reg.ref('shop/multi', '2')]);
    assert.equal(all.code, 0, all.stderr);
    for (const [i, p] of ['linux/amd64', 'linux/arm64'].entries())
      assert.match(all.stdout, new RegExp(`^${multi.children[i]!.digest}\\s+${p}\\s+1\\s+-\\s+${multi.digest}$`, 'm'));
    const again = await api('POST', '/v1/images', { reference: reg.ref('shop/multi', '2') });
    assert.equal(again.status, 200, JSON.stringify(again.json));
    assert.deepEqual([again.json['added'], again.json['changed']], [0, 0]);
    const amd = (await image(multi.children[0]!.digest))!;
    assert.deepEqual([amd.indexDigest, amd.platform, amd.tags], [multi.digest, 'linux/amd64', [`${reg.host}/shop/multi:2`]]);
  });

  it('registry failures are clear codes, and store nothing', async () => {
    const before = (await api('GET', '/v1/images?pageSize=1000')).json['images'] as unknown[];
    const cases: Array<[string[], number, string, RegExp]> = [
      [[reg.ref('shop/web', 'nope')], 404, 'ERR_IMAGE_NOT_FOUND', /shop\/web:nope not found/],
      [[reg.ref('no/such', '1')], 404, 'ERR_IMAGE_NOT_FOUND', /no\/such:1 not found/],
      [['127.0.0.1:1/shop/web:1'], 502, 'ERR_REGISTRY_UNREACHABLE', /127\.0\.0\.1:1/],
      [[locked.ref('private/app', '1')], 502, 'ERR_REGISTRY_AUTH', /asks for credentials .* none are configured/],
      [[reg.ref('shop/multi', '2'), '--platform', 'windows/amd64'], 404, 'ERR_IMAGE_NOT_FOUND', /without a manifest for windows\/amd64/],
      [['Shop/Web:1'], 400, 'ERR_IMAGE_REF_INVALID', /\(at reference\)/],
      [[reg.ref('shop/web', '1.0'), '--platform', 'amd64'], 400, 'ERR_FIELD_INVALID', /os\/architecture.*\(at platform\)/],
    ];
    for (const [args, status, code, message] of cases) {
      const r = await writ(srv, ['image', 'add', ...args]);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
      assert.match(r.stderr, new RegExp(`\\[${code}\\]$`, 'm'), args.join(' '));
      assert.match(r.stderr, message, args.join(' '));
      const raw = await api('POST', '/v1/images', { reference: args[0], ...(args[2] ? { platform: args[2] } : {}) });
      assert.deepEqual([raw.status, raw.json['code']], [status, code], args.join(' '));
    }
    const list = (await api('GET', '/v1/images?pageSize=1000')).json['images'] as unknown[];
    assert.equal(list.length, before.length, 'nothing was stored');
    const viewer = JSON.parse((await writ(srv, ['admin-token', 'create', '--role', 'viewer', '--name', 'v', '-o', 'json'])).stdout) as { token: string };
    const refused = await writ(srv, ['image', 'add', reg.ref('shop/base', '1')], { token: viewer.token });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /\[ERR_FORBIDDEN\]/, 'adding needs the operator role');
  });
});

let uid = 0;
function review(namespace: string, images: readonly string[], dryRun = false): Record<string, unknown> {
  const gvk = { group: '', version: 'v1', kind: 'Pod' };
  return {
    kind: 'AdmissionReview',
    apiVersion: 'admission.k8s.io/v1',
    request: {
      uid: `7a1c0e2d-5b3f-4e8a-9c6d-${String(++uid).padStart(12, '0')}`,
      kind: gvk,
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: gvk,
      name: `pod-${uid}`,
      namespace,
      operation: 'CREATE',
      userInfo: { username: 'kubernetes-admin' },
      object: {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `pod-${uid}`, namespace },
        spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) },
      },
      oldObject: null,
      dryRun,
    },
  };
}

function admit(body: object, hook: 'validate' | 'mutate' = 'validate'): Promise<{ allowed: boolean; message: string; patch: Array<{ value: string }> }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: webhookPort,
        servername: DNS,
        path: `/v1/admission/${hook}`,
        method: 'POST',
        ca: webhookCa,
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          const r = (JSON.parse(text) as { response: { allowed: boolean; status?: { message: string }; patch?: string } }).response;
          const patch = r.patch ? (JSON.parse(Buffer.from(r.patch, 'base64').toString()) as Array<{ value: string }>) : [];
          resolve({ allowed: r.allowed, message: r.status?.message ?? '', patch });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

describe('images from admission', () => {
  before(async () => {
    writeFileSync(
      join(dir, 'policy.yaml'),
      `apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: shop }
spec:
  namespaces: [shop]
  mode: enforce
  images: { requireDigest: true, registries: ["${reg.host}/shop/"] }
`,
    );
    const r = await writ(srv, ['policy', 'apply', '-f', join(dir, 'policy.yaml')]);
    assert.equal(r.code, 0, r.stderr);
  });

  it('records every image an enforce policy admitted, read from the registry: tag, layers, an index as its platforms', async () => {
    const app = await reg.pushImage('shop/admitted', '3', { layers: 3, seed: 'admitted', extra: { annotations: BASE_ANNOTATIONS(reg.host, base.digest) } });
    const idx = await reg.pushIndex('shop/admitted-multi', '1');
    const denied = await reg.pushImage('shop/denied', '1');
    const dry = await reg.pushImage('shop/dry', '1');
    // Refused (an image from a registry the policy does not allow beside it), and a dry run: neither records anything.
    const no = await admit(review('shop', [`${reg.host}/shop/denied:1@${denied.digest}`, `${reg.host}/elsewhere/x@${denied.digest}`]));
    assert.equal(no.allowed, false);
    assert.match(no.message, /not from an allowed registry/);
    assert.equal((await admit(review('shop', [`${reg.host}/shop/dry:1@${dry.digest}`], true))).allowed, true);
    const yes = await admit(review('shop', [`${reg.host}/shop/admitted:3@${app.digest}`, `${reg.host}/shop/admitted-multi@${idx.digest}`]));
    assert.equal(yes.allowed, true, yes.message);

    const recorded = await waitFor('the admitted images in the inventory', async () => {
      const [a, b, c] = await Promise.all([image(app.digest), image(idx.children[0]!.digest), image(idx.children[1]!.digest)]);
      return a && b && c ? ([a, b, c] as const) : undefined;
    });
    const [a, amd, arm] = recorded;
    assert.deepEqual(a.tags, [`${reg.host}/shop/admitted:3`]);
    assert.deepEqual(a.names, [`${reg.host}/shop/admitted`]);
    assert.equal(a.layers.length, 3, 'diff IDs read from the config');
    assert.equal(a.annotations['org.opencontainers.image.base.digest'], base.digest);
    assert.deepEqual(a.labels, { 'dev.writ.test.seed': 'admitted' });
    assert.deepEqual([amd.indexDigest, amd.platform, arm.indexDigest, arm.platform], [idx.digest, 'linux/amd64', idx.digest, 'linux/arm64']);
    assert.deepEqual(amd.names, [`${reg.host}/shop/admitted-multi`]);
    assert.equal(await image(idx.digest), undefined, 'an index is not an image of the inventory: its platforms are');
    // The refused and the dry-run reviews came first; what came after them is in, so they left nothing.
    assert.equal(await image(denied.digest), undefined, 'a denied image is not recorded');
    assert.equal(await image(dry.digest), undefined, 'a dry run records nothing');
  });

  it('a tag the mutating hook pinned is recorded with the digest the validating hook admitted', async () => {
    const tagged = await reg.pushImage('shop/tagged', '5', { layers: 1, seed: 'tagged' });
    const m = await admit(review('shop', [reg.ref('shop/tagged', '5')]), 'mutate');
    assert.equal(m.allowed, true, m.message);
    assert.deepEqual(
      m.patch.map((p) => p.value),
      [`${reg.host}/shop/tagged@${tagged.digest}`],
    );
    // What kube-apiserver sends the validating hook: the pod as the mutating hook patched it.
    assert.equal((await admit(review('shop', [m.patch[0]!.value]))).allowed, true);
    const got = await waitFor('the pinned image', () => image(tagged.digest));
    assert.deepEqual([got.tags, got.layers.length], [[`${reg.host}/shop/tagged:5`], 1]);
  });

  it('an image no policy checked is recorded with its name and tag only: the registry is not asked (no config, no layers)', async () => {
    const other = await reg.pushImage('shop/unchecked', '7');
    const r = await admit(review('dev', [`${reg.host}/shop/unchecked:7@${other.digest}`]));
    assert.equal(r.allowed, true);
    const got = await waitFor('the unchecked image', () => image(other.digest));
    assert.deepEqual([got.names, got.tags, got.layers, got.configDigest], [[`${reg.host}/shop/unchecked`], [`${reg.host}/shop/unchecked:7`], [], null]);
  });
});
