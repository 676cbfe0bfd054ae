/**
 * Issue 13's end-to-end case, as an operator lives it: two images sharing a base pushed to the real
 * registry fixture, workloads on both, a Trivy-format report that puts a CVE in the base layer.
 * `writ vuln affected` names both images, "base image", the base and the newer base without the
 * package, and the owners; a new base without the package replaces the images; `writ vuln rollout`
 * goes from not verified (old instances, then a replacement without a report) to verified as the
 * old workloads stop (`--watch` returns by itself). A real server process on a real PostgreSQL.
 *
 * What came from which tool: the images are built by this test (tar layers, OCI config and
 * manifest) and pushed to the registry fixture (`docker-registry`); the Trivy JSON (schema 2) is
 * written by the test in Trivy's exact schema for those digests and diff IDs (Trivy's database
 * cannot be downloaded here). The workloads are real processes (`writ svid watch`) attested by a
 * real agent with the k8s attestor against a fake kubelet speaking the real PodList format (pod
 * status `imageID` carries the digest), which reports them to the server; owners from the `team`
 * label through the server's owners config.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import { startRegistry, type TestRegistry } from '@writ/oci/testing';
import { Agent, WorkloadApiServer, k8sAttestor } from '../../packages/agent/src/index.ts';
import { type FakeKubelet, startFakeKubelet, startPodWorkload } from './fake-node.ts';
import { cleanup, run, type ServerProcess, startServerProcess, waitFor, WRIT, writ } from './helpers.ts';

const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const CVE = 'CVE-2026-31337';
const dir = mkdtempSync(join(tmpdir(), 'writ-vuln-response-'));
const dbName = `writ_e2e_vr_${process.pid}`;
const NODE = 'node-1';
const PARENT = `spiffe://e2e.test/writ/agent/${NODE}`;
const WEB_ID = 'spiffe://e2e.test/shop/web';
const API_ID = 'spiffe://e2e.test/shop/api';

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A one-file ustar archive: a real layer. */
function tar(name: string, content: string): Buffer {
  const body = Buffer.from(content);
  const h = Buffer.alloc(512);
  h.write(name, 0, 100);
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${body.length.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write('0', 156);
  h.write('ustar\u000000', 257);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([h, body, pad, Buffer.alloc(1024)]);
}

interface Layer {
  readonly tar: Buffer;
  readonly diffId: string;
}
const layer = (name: string, content: string): Layer => {
  const t = tar(name, content);
  return { tar: t, diffId: sha(t) };
};

interface Built {
  readonly repository: string;
  readonly tag: string;
  readonly digest: string;
  readonly diffIds: string[];
  readonly labels: Record<string, string>;
}

/** Pushes config + layers + OCI manifest; the config's diff IDs are what Trivy calls Layer.DiffID. */
async function push(reg: TestRegistry, repository: string, tag: string, layers: readonly Layer[], labels: Record<string, string>): Promise<Built> {
  const blobs = [];
  for (const l of layers) {
    const gz = gzipSync(l.tar);
    blobs.push({ digest: await reg.pushBlob(repository, gz), size: gz.length });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: labels['org.opencontainers.image.created'] ?? '2026-01-01T00:00:00Z',
      config: { Labels: labels },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const configDigest = await reg.pushBlob(repository, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: blobs.map((b) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: b.digest, size: b.size })),
    }),
  );
  const pushed = await reg.pushManifest(repository, tag, manifest, 'application/vnd.oci.image.manifest.v1+json');
  return { repository, tag, digest: pushed.digest, diffIds: layers.map((l) => l.diffId), labels };
}

interface Pkg {
  readonly name: string;
  readonly version: string;
  readonly layer: string;
  readonly cve?: { readonly fixed?: string };
}

/** A Trivy JSON report (schema 2) of one image, as `trivy image --format json` writes it. */
function trivyReport(reg: TestRegistry, img: Built, pkgs: readonly Pkg[], createdAt: string): string {
  const name = `${reg.host}/${img.repository}`;
  return JSON.stringify({
    SchemaVersion: 2,
    Trivy: { Version: '0.58.1' },
    CreatedAt: createdAt,
    ArtifactName: `${name}:${img.tag}`,
    ArtifactType: 'container_image',
    Metadata: {
      OS: { Family: 'alpine', Name: '3.20.3' },
      ImageID: sha(Buffer.from(img.digest)),
      DiffIDs: img.diffIds,
      RepoTags: [`${name}:${img.tag}`],
      RepoDigests: [`${name}@${img.digest}`],
      ImageConfig: { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: img.diffIds }, config: { Labels: img.labels } },
    },
    Results: [
      {
        Target: `${name}:${img.tag} (alpine 3.20.3)`,
        Class: 'os-pkgs',
        Type: 'alpine',
        Packages: pkgs.map((p) => ({
          ID: `${p.name}@${p.version}`,
          Name: p.name,
          Identifier: { PURL: `pkg:apk/alpine/${p.name}@${p.version}?arch=x86_64&distro=3.20.3` },
          Version: p.version,
          Layer: { DiffID: p.layer },
        })),
        Vulnerabilities: pkgs
          .filter((p) => p.cve !== undefined)
          .map((p) => ({
            VulnerabilityID: CVE,
            PkgID: `${p.name}@${p.version}`,
            PkgName: p.name,
            PkgIdentifier: { PURL: `pkg:apk/alpine/${p.name}@${p.version}?arch=x86_64&distro=3.20.3` },
            InstalledVersion: p.version,
            ...(p.cve?.fixed === undefined ? { Status: 'affected' } : { FixedVersion: p.cve.fixed, Status: 'fixed' }),
            Layer: { DiffID: p.layer },
            Severity: 'CRITICAL',
            Title: 'openssl: remote code execution in a test',
          })),
      },
    ],
  });
}

/** A pod on the fake kubelet: one container running `image`, its digest in the status's `imageID`. */
interface Pod {
  readonly name: string;
  readonly uid: string;
  readonly cid: string;
  readonly app: 'web' | 'api';
  readonly team: string;
  readonly image: Built;
}
let podSeq = 0;
function pod(name: string, app: 'web' | 'api', team: string, image: Built): Pod {
  podSeq++;
  const hex = podSeq.toString(16).padStart(2, '0');
  return { name, uid: `${hex.repeat(4)}-0000-4000-8000-${hex.repeat(6)}`, cid: hex.repeat(32), app, team, image };
}
const podJson = (p: Pod, host: string) => ({
  metadata: {
    name: p.name,
    namespace: 'shop',
    uid: p.uid,
    labels: { app: p.app, team: p.team },
    annotations: {},
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: p.name.replace(/-[^-]+$/, ''), uid: `rs-${p.uid}`, controller: true }],
  },
  spec: { serviceAccountName: p.app, nodeName: NODE, containers: [{ name: 'main', image: `${host}/${p.image.repository}:${p.image.tag}` }] },
  status: {
    phase: 'Running',
    containerStatuses: [
      {
        name: 'main',
        image: `${host}/${p.image.repository}:${p.image.tag}`,
        imageID: `${host}/${p.image.repository}@${p.image.digest}`,
        containerID: `containerd://${p.cid}`,
        ready: true,
      },
    ],
  },
});

let reg: TestRegistry;
let srv: ServerProcess;
let dbUrl: string;
let agent: Agent;
let workloadApi: WorkloadApiServer;
let kubelet: FakeKubelet | undefined;
const pods = new Map<string, Pod>();
const processes = new Map<string, ChildProcess>();
const proc = join(dir, 'proc');
const socket = join(dir, 'api.sock');

/** A workload: the pod on the kubelet, and `writ svid watch` on the agent's socket in it (its cgroup file names the pod). */
async function startPod(p: Pod): Promise<void> {
  pods.set(p.name, p);
  processes.set(p.name, await startPodWorkload({ socket, proc, uid: p.uid, cid: p.cid, name: p.name }));
}

/** The pod is deleted: its process ends (the agent reports it gone) and the kubelet no longer lists it. */
async function stopPod(name: string): Promise<void> {
  const child = processes.get(name)!;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  processes.delete(name);
  pods.delete(name);
}

interface WorkloadRow {
  podName: string | null;
  imageDigest: string | null;
}
/** Waits until the server's running set is exactly these pods (the agent reports changes within about a second). */
async function runningPods(...names: string[]): Promise<void> {
  const want = [...names].sort().join(',');
  await waitFor(
    `running pods ${want}`,
    async () => {
      const r = await writ(srv, ['workload', 'list', '-o', 'json']);
      const rows = (JSON.parse(r.stdout) as { workloads: WorkloadRow[] }).workloads;
      return rows
        .map((w) => w.podName)
        .sort()
        .join(',') === want
        ? true
        : undefined;
    },
    60_000,
  );
}
let base: Built;
let base2: Built;
let web: Built;
let api: Built;
let web2: Built;
let api2: Built;

const writJson = async <T>(args: string[]): Promise<{ code: number | null; json: T; stderr: string }> => {
  const r = await writ(srv, [...args, '-o', 'json']);
  return { code: r.code, json: (r.stdout.trim() ? JSON.parse(r.stdout) : null) as T, stderr: r.stderr };
};

async function ingest(name: string, doc: string): Promise<void> {
  const f = join(dir, `${name}.json`);
  writeFileSync(f, doc);
  const r = await writ(srv, ['vuln', 'ingest', '-f', f]);
  assert.equal(r.code, 0, r.stderr);
}

interface AffectedOut {
  vulnerability: string;
  images: Array<{
    digest: string;
    names: string[];
    affected: boolean;
    base: { digest: string | null; name: string | null; source: string } | null;
    packages: Array<{
      name: string;
      installed: string;
      fixed: string | null;
      fix: { where: string; base: { digest: string | null } | null; newerBases: Array<{ digest: string }> };
    }>;
  }>;
  counts: { images: number; workloads: number; owners: number };
  owners: Array<{ owner: string; workloads: Array<{ spiffeIds: string[]; node: string; namespace: string; pod: string }> }>;
}
interface RolloutOut {
  verified: boolean;
  owners: Array<{
    owner: string;
    identities: Array<{
      spiffeId: string;
      status: string;
      reason: string | null;
      affectedInstances: unknown[];
      replacements: Array<{ digest: string; state: string }>;
    }>;
  }>;
}
const identity = (r: RolloutOut, id: string) => r.owners.flatMap((o) => o.identities.map((i) => ({ owner: o.owner, ...i }))).find((i) => i.spiffeId === id);

before(async () => {
  await admin((c) => c.query(`CREATE DATABASE ${dbName}`));
  const u = new URL(PG_URL);
  u.pathname = `/${dbName}`;
  dbUrl = u.toString();
  reg = await startRegistry();
  writeFileSync(join(dir, 'server.yaml'), 'owners:\n  labels: [team]\n');
  srv = await startServerProcess({ args: ['--db', dbUrl, '--config', join(dir, 'server.yaml')] });

  const ssl = layer('lib/libssl.so.3', 'libssl3 3.1.0-r0\n');
  const ssl2 = layer('lib/libssl.so.3', 'libssl3 3.1.1-r0 (rebuilt base)\n');
  base = await push(reg, 'base/alpine', '3.20', [ssl], { 'org.opencontainers.image.created': '2026-01-01T00:00:00Z' });
  base2 = await push(reg, 'base/alpine', '3.20.1', [ssl2], { 'org.opencontainers.image.created': '2026-02-01T00:00:00Z' });
  const webApp = layer('app/web.js', 'web 1.0\n');
  const apiApp = layer('app/api.js', 'api 1.0\n');
  web = await push(reg, 'shop/web', '1.0', [ssl, webApp], {});
  // The api image says what it is built on in the OCI base annotations (as labels, as buildkit writes them).
  api = await push(reg, 'shop/api', '1.0', [ssl, apiApp], {
    'org.opencontainers.image.base.name': `${reg.host}/base/alpine:3.20`,
    'org.opencontainers.image.base.digest': base.digest,
  });
  web2 = await push(reg, 'shop/web', '1.1', [ssl2, webApp], {});
  api2 = await push(reg, 'shop/api', '1.1', [ssl2, apiApp], {});

  await ingest(
    'web',
    trivyReport(
      reg,
      web,
      [
        { name: 'libssl3', version: '3.1.0-r0', layer: ssl.diffId, cve: { fixed: '3.1.1-r0' } },
        { name: 'busybox-app', version: '1.0', layer: webApp.diffId },
      ],
      '2026-03-01T10:00:00Z',
    ),
  );
  await ingest('api', trivyReport(reg, api, [{ name: 'libssl3', version: '3.1.0-r0', layer: ssl.diffId, cve: { fixed: '3.1.1-r0' } }], '2026-03-01T10:00:00Z'));
  await ingest(
    'base',
    trivyReport(reg, base, [{ name: 'libssl3', version: '3.1.0-r0', layer: ssl.diffId, cve: { fixed: '3.1.1-r0' } }], '2026-03-01T10:00:00Z'),
  );
  await ingest('base2', trivyReport(reg, base2, [{ name: 'libssl3', version: '3.1.1-r0', layer: ssl2.diffId }], '2026-03-01T10:00:00Z'));

  // The node: a fake kubelet (real PodList JSON over TLS), a real agent joined with a token, its Workload API.
  kubelet = await startFakeKubelet(dir, () => [...pods.values()].map((p) => podJson(p, reg.host)));
  for (const [id, app] of [
    [WEB_ID, 'web'],
    [API_ID, 'api'],
  ] as const) {
    const r = await writ(srv, [
      'entry',
      'create',
      '--spiffe-id',
      id,
      '--parent-id',
      PARENT,
      '--selector',
      'k8s:ns:shop',
      '--selector',
      `k8s:pod-label:app:${app}`,
    ]);
    assert.equal(r.code, 0, r.stderr);
  }
  const token = await writ(srv, ['token', 'create', '--node-name', NODE, '-o', 'json']);
  assert.equal(token.code, 0, token.stderr);
  const log = pino({ level: 'silent' });
  agent = new Agent({
    serverUrl: srv.url,
    caPem: readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8'),
    joinToken: (JSON.parse(token.stdout) as { token: string }).token,
    dataDir: join(dir, 'agent'),
    log,
    syncWaitSeconds: 10,
    workloadReportMs: 2000,
  });
  workloadApi = new WorkloadApiServer({
    agent,
    socketPath: socket,
    log,
    attestors: [k8sAttestor({ kubeletUrl: kubelet.url, caFile: kubelet.caFile, proc, cacheMs: 0 })],
  });
  await agent.start();
  await workloadApi.listen();
  await startPod(pod('web-7d9f-a', 'web', 'payments', web));
  await startPod(pod('web-7d9f-b', 'web', 'payments', web));
  await startPod(pod('api-5c4b-a', 'api', 'search', api));
  await runningPods('web-7d9f-a', 'web-7d9f-b', 'api-5c4b-a');
});

after(async () => {
  for (const c of processes.values()) c.kill('SIGKILL');
  agent?.stop();
  await workloadApi?.close();
  kubelet?.server.close();
  await srv?.stop();
  await reg?.stop();
  cleanup(dir);
  await admin((c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`));
});

describe('vulnerable image response, end to end', () => {
  it('affected names both images, "base image", the base and the newer base without the package, and the owners', async () => {
    // The ID as people paste it: lower case, an en dash.
    const { code, json: a, stderr } = await writJson<AffectedOut>(['vuln', 'affected', 'cve\u20132026-31337']);
    assert.equal(code, 0, stderr);
    assert.equal(a.vulnerability, CVE);
    const apps = a.images.filter((i) => i.digest === web.digest || i.digest === api.digest);
    assert.equal(apps.length, 2, 'both images that share the base');
    for (const i of apps) {
      const p = i.packages.find((x) => x.name === 'libssl3')!;
      assert.deepEqual([p.installed, p.fixed, p.fix.where], ['3.1.0-r0', '3.1.1-r0', 'base image']);
      assert.equal(p.fix.base?.digest, base.digest);
      assert.deepEqual(
        p.fix.newerBases.map((b) => b.digest),
        [base2.digest],
        'the newer alpine without it',
      );
    }
    assert.equal(a.images.find((i) => i.digest === web.digest)?.base?.source, 'layers');
    assert.equal(a.images.find((i) => i.digest === api.digest)?.base?.source, 'annotation');
    assert.deepEqual(
      a.owners.map((o) => [o.owner, o.workloads.map((w) => `${w.spiffeIds[0]} ${w.node} ${w.namespace}/${w.pod}`)]),
      [
        ['payments', ['spiffe://e2e.test/shop/web node-1 shop/web-7d9f-a', 'spiffe://e2e.test/shop/web node-1 shop/web-7d9f-b']],
        ['search', ['spiffe://e2e.test/shop/api node-1 shop/api-5c4b-a']],
      ],
    );
    assert.deepEqual(a.counts, { images: 3, suppressedImages: 0, workloads: 3, owners: 2 });

    const table = await writ(srv, ['vuln', 'affected', CVE]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^CVE-2026-31337: 3 images affected, 3 workloads running them, 2 owners$/m);
    assert.match(
      table.stdout,
      new RegExp(`shop/web:1\\.0\\s+libssl3\\s+3\\.1\\.0-r0 -> 3\\.1\\.1-r0\\s+critical\\s+2\\s+base image ${reg.host}/base/alpine:3\\.20`),
    );
    assert.match(table.stdout, /newer base without it: .*base\/alpine:3\.20\.1/);
    assert.match(table.stdout, /^payments\s+spiffe:\/\/e2e\.test\/shop\/web\s+node-1\s+shop\/web-7d9f-a/m);
  });

  it('affected in pages: --limit 1 shows one image with the totals of all and how to go on; --all every one; a bad --limit or --after is refused', async () => {
    const full = await writJson<AffectedOut>(['vuln', 'affected', CVE]);
    const page = await writ(srv, ['vuln', 'affected', CVE, '--limit', '1']);
    assert.equal(page.code, 0, page.stderr);
    assert.match(page.stdout, /^CVE-2026-31337: 3 images affected, 3 workloads running them, 2 owners$/m, 'the counts cover every page');
    const first = full.json.images[0]!.digest;
    assert.match(page.stdout, new RegExp(`Showing 1 of 3 images and \\d+ of 3 workloads: --all for every one, --after ${first} for the next page\\.`));
    const next = await writJson<AffectedOut & { page: { next: string | null } }>(['vuln', 'affected', CVE, '--limit', '2', '--after', first]);
    assert.deepEqual(
      next.json.images.map((i) => i.digest),
      full.json.images.slice(1).map((i) => i.digest),
      'the page after the first image',
    );
    assert.equal(next.json.page.next, null);
    const all = await writJson<AffectedOut>(['vuln', 'affected', CVE, '--limit', '1', '--all']);
    assert.deepEqual(
      all.json.images.map((i) => i.digest),
      full.json.images.map((i) => i.digest),
    );
    const owners = (a: AffectedOut) => a.owners.map((o) => [o.owner, o.workloads.map((w) => `${w.spiffeIds[0]} ${w.pod}`).sort()]);
    assert.deepEqual(owners(all.json), owners(full.json), 'every workload, under its owner');
    const bad = await writ(srv, ['vuln', 'affected', CVE, '--limit', '0']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--limit must be a whole number from 1 to 1000/);
    const badAfter = await writ(srv, ['vuln', 'affected', CVE, '--after', 'latest']);
    assert.equal(badAfter.code, 1);
    assert.match(badAfter.stderr, /after must be an image digest .*\[ERR_FIELD_INVALID\]/);
  });

  it('a VulnException on the base repository: its finding shown suppressed with the reason, not counted', async () => {
    const expires = new Date(Date.now() + 30 * 86_400_000).toISOString().replace(/\.\d+Z$/, 'Z');
    const f = join(dir, 'exception.yaml');
    writeFileSync(
      f,
      `apiVersion: writ.dev/v1
kind: VulnException
metadata:
  name: base-alpine-accepted
spec:
  vulnerability: ${CVE.toLowerCase()}
  scope:
    repository: [${reg.host}/base/alpine]
  reason: "SEC-42: the base image itself runs nowhere"
  owner: platform
  expires: ${expires}
`,
    );
    const applied = await writ(srv, ['policy', 'apply', '-f', f]);
    assert.equal(applied.code, 0, applied.stderr);
    const { json: a } = await writJson<AffectedOut>(['vuln', 'affected', CVE]);
    const b = a.images.find((i) => i.digest === base.digest)!;
    assert.equal(b.affected, false);
    assert.deepEqual((b.packages[0] as unknown as { suppressed: unknown }).suppressed, {
      by: 'exception',
      name: 'base-alpine-accepted',
      reason: 'SEC-42: the base image itself runs nowhere',
      owner: 'platform',
      expires: new Date(expires).toISOString(),
      status: null,
    });
    assert.deepEqual(a.counts, { images: 2, suppressedImages: 1, workloads: 3, owners: 2 });
    const table = await writ(srv, ['vuln', 'affected', CVE]);
    assert.match(table.stdout, /^CVE-2026-31337: 2 images affected, 3 workloads running them, 2 owners \(1 image suppressed\)$/m);
    assert.match(table.stdout, /base\/alpine:3\.20\s+libssl3 .*suppressed by exception base-alpine-accepted: SEC-42/);
  });

  it('image show: the base, the lineage and the workloads running it; the base lists its children', async () => {
    const r = await writ(srv, ['image', 'show', web.digest]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^base\\s+${reg.host}/base/alpine:3\\.20@${base.digest} \\(from layers\\)$`, 'm'));
    assert.match(r.stdout, /^running\s+2 workloads$/m);
    assert.match(r.stdout, /payments {2}spiffe:\/\/e2e\.test\/shop\/web {2}node-1 {2}shop\/web-7d9f-a/);
    const { json } = await writJson<{ lineage: { children: Array<{ digest: string }> }; base: null }>(['image', 'show', base.digest]);
    assert.equal(json.base, null);
    assert.deepEqual(json.lineage.children.map((c) => c.digest).sort(), [web.digest, api.digest].sort());
  });

  it('vuln list: the CVE with its images, images running now, and fixed version; --running and --severity filter', async () => {
    const { code, json } = await writJson<{ vulnerabilities: Array<{ id: string; images: number; runningImages: number; fixedVersions: string[] }> }>([
      'vuln',
      'list',
      '--running',
      '--severity',
      'critical,high',
    ]);
    assert.equal(code, 0);
    assert.deepEqual(
      json.vulnerabilities.map((v) => [v.id, v.images, v.runningImages, v.fixedVersions]),
      [[CVE, 2, 2, ['3.1.1-r0']]],
    );
    const low = await writJson<{ vulnerabilities: unknown[] }>(['vuln', 'list', '--severity', 'low']);
    assert.deepEqual(low.json.vulnerabilities, []);
  });

  it('rollout: not verified while old instances run, "no report" for an unscanned replacement, verified once the old stop', async () => {
    let r = await writJson<RolloutOut>(['vuln', 'rollout', CVE]);
    assert.equal(r.code, 3, 'not verified');
    assert.equal(identity(r.json, 'spiffe://e2e.test/shop/web')?.status, 'not verified');
    assert.equal(identity(r.json, 'spiffe://e2e.test/shop/web')?.affectedInstances.length, 2);

    // The rebuilt web (on the new base) rolls out: one old instance left, then none; no report for it yet.
    await stopPod('web-7d9f-b');
    await startPod(pod('web-8e1a-a', 'web', 'payments', web2));
    await runningPods('web-7d9f-a', 'web-8e1a-a', 'api-5c4b-a');
    r = await writJson<RolloutOut>(['vuln', 'rollout', CVE]);
    assert.equal(identity(r.json, 'spiffe://e2e.test/shop/web')?.status, 'not verified');
    await stopPod('web-7d9f-a');
    await runningPods('web-8e1a-a', 'api-5c4b-a');
    r = await writJson<RolloutOut>(['vuln', 'rollout', CVE]);
    const webId = identity(r.json, 'spiffe://e2e.test/shop/web');
    assert.deepEqual(
      [webId?.status, webId?.reason, webId?.replacements],
      ['unverified', 'no report', [{ digest: web2.digest, state: 'no report', instances: 1 }]],
    );
    const table = await writ(srv, ['vuln', 'rollout', CVE]);
    assert.equal(table.code, 3);
    assert.match(table.stdout, /^payments\s+spiffe:\/\/e2e\.test\/shop\/web\s+unverified: no report\s+-\s+sha256:[0-9a-f]{12} \(no report\)$/m);
    assert.match(table.stdout, /^search\s+spiffe:\/\/e2e\.test\/shop\/api\s+not verified\s+shop\/api-5c4b-a sha256:[0-9a-f]{12}/m);

    // Its report comes in, free of the CVE: the web identity is verified; the api still runs the old image.
    await ingest('web2', trivyReport(reg, web2, [{ name: 'libssl3', version: '3.1.1-r0', layer: web2.diffIds[0]! }], '2026-03-02T10:00:00Z'));
    await ingest('api2', trivyReport(reg, api2, [{ name: 'libssl3', version: '3.1.1-r0', layer: api2.diffIds[0]! }], '2026-03-02T10:00:00Z'));
    r = await writJson<RolloutOut>(['vuln', 'rollout', CVE]);
    assert.equal(r.code, 3);
    assert.equal(identity(r.json, 'spiffe://e2e.test/shop/web')?.status, 'verified');
    assert.equal(identity(r.json, 'spiffe://e2e.test/shop/api')?.status, 'not verified');

    // --watch polls until the last old instance stops, and then exits 0 by itself.
    const watching = run(process.execPath, [WRIT, 'vuln', 'rollout', CVE, '--watch', '--interval', '0.2', '-o', 'json'], {
      env: { WRIT_SERVER: srv.url, WRIT_TOKEN: srv.adminToken, WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem') },
      timeoutMs: 60_000,
    });
    await startPod(pod('api-6d5c-a', 'api', 'search', api2));
    await stopPod('api-5c4b-a');
    const w = await watching;
    assert.equal(w.code, 0, w.stderr);
    const states = w.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as RolloutOut).verified);
    assert.equal(states.at(-1), true);
    r = await writJson<RolloutOut>(['vuln', 'rollout', CVE]);
    assert.equal(r.code, 0);
    assert.deepEqual(
      r.json.owners.map((o) => [o.owner, o.identities.map((i) => [i.spiffeId, i.status])]),
      [
        ['payments', [['spiffe://e2e.test/shop/web', 'verified']]],
        ['search', [['spiffe://e2e.test/shop/api', 'verified']]],
      ],
    );
    // Nothing affected runs now, so the running list no longer has it.
    const list = await writJson<{ vulnerabilities: Array<{ id: string }> }>(['vuln', 'list', '--running']);
    assert.deepEqual(list.json.vulnerabilities, []);
    const affected = await writJson<AffectedOut>(['vuln', 'affected', CVE]);
    assert.equal(affected.json.counts.workloads, 0);
  });

  it('bad input: a malformed ID or severity is a 400 with a stable code, and the server keeps serving', async () => {
    const r = await writ(srv, ['vuln', 'affected', 'CVE-26-1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\[ERR_VULN_ID_INVALID\]/);
    const l = await writ(srv, ['vuln', 'list', '--severity', 'urgent']);
    assert.equal(l.code, 1);
    assert.match(l.stderr, /severity must be one of critical, high, medium, low, negligible, unknown.*\[ERR_FIELD_INVALID\]/);
    const ok = await writ(srv, ['vuln', 'affected', 'GHSA-2345-6789-cfgh']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^GHSA-2345-6789-cfgh: 0 images affected/m);
    assert.ok(readFileSync(join(srv.dataDir, 'bundle.pem')).length > 0);
  });
});
