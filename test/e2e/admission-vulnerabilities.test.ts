/**
 * The admission gate on vulnerabilities end to end: a real `writ server` child with its admission
 * listener, a Trivy report ingested with `writ vuln ingest`, an AdmissionPolicy with
 * `images.vulnerabilities`, and AdmissionReviews as kube-apiserver sends them: a deny that names
 * the CVE, an AdmissionException that admits the image, an image without a report refused under
 * requireReport, and the verdicts read back with `writ admission events`.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startRegistry, type PushedImage, type TestRegistry } from '@writ/oci/testing';
import { applyPolicy, cleanup, startServerProcess, writ, type ServerProcess } from './helpers.ts';
import { trivyReport } from './vuln-fixtures.ts';

const DNS = 'writ-admission.writ-system.svc';
const VULNERABLE = `sha256:${'5a'.repeat(32)}`;
const CLEAN = `sha256:${'5b'.repeat(32)}`;
const UNSCANNED = `sha256:${'5c'.repeat(32)}`;
const NAME = 'registry.example.com/shop/web';
const dir = mkdtempSync(join(tmpdir(), 'writ-e2e-gate-'));
let srv: ServerProcess;
let port = 0;
let ca = '';
let registry: TestRegistry;
let pushed: PushedImage;

const POLICY = `apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: prod-vulns }
spec:
  namespaces: [prod]
  mode: enforce
  images:
    vulnerabilities: { block: [critical, high], fixableOnly: true, requireReport: true, maxReportAge: 7d }
---
apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: staging-vulns }
spec:
  namespaces: [staging]
  mode: warn
  images:
    vulnerabilities: { block: [critical] }
`;

before(async () => {
  // A real registry serving a tag: the webhook resolves it, and judges the digest it resolved to.
  registry = await startRegistry({});
  pushed = await registry.pushImage('shop/web', 'v2');
  writeFileSync(join(dir, 'registries.yaml'), `registries:\n  "${registry.host}": { ca: ${registry.caFile} }\n`);
  srv = await startServerProcess({ args: ['--admission-listen', '127.0.0.1:0', '--admission-dns', DNS, '--registry-config', join(dir, 'registries.yaml')] });
  const line = srv.logs.map((l) => JSON.parse(l) as { msg?: string; admissionUrl?: string }).find((l) => l.msg === 'writ server listening');
  port = Number(new URL(line!.admissionUrl!).port);
  const m = await writ(srv, ['admission', 'manifests', '--ca-file', join(srv.dataDir, 'bundle.pem'), '-o', 'json']);
  assert.equal(m.code, 0, m.stderr);
  const items = (JSON.parse(m.stdout) as { items: Array<{ webhooks: Array<{ clientConfig: { caBundle: string } }> }> }).items;
  ca = Buffer.from(items[0]!.webhooks[0]!.clientConfig.caBundle, 'base64').toString();
  const hourAgo = new Date(Date.now() - 3_600_000);
  const reports = {
    vulnerable: trivyReport({
      digest: VULNERABLE,
      name: NAME,
      createdAt: hourAgo,
      vulns: [
        { id: 'CVE-2026-31337', pkg: 'libcrypto3', version: '3.3.2-r0', fixed: '3.3.2-r4', severity: 'CRITICAL' },
        { id: 'CVE-2026-0404', pkg: 'busybox', version: '1.36.1-r29', severity: 'HIGH' },
        { id: 'CVE-2026-0500', pkg: 'musl', version: '1.2.5-r0', fixed: '1.2.5-r1', severity: 'MEDIUM' },
      ],
    }),
    clean: trivyReport({ digest: CLEAN, name: NAME, createdAt: hourAgo, vulns: [], packages: ['musl@1.2.5-r1'] }),
    pushed: trivyReport({
      digest: pushed.digest,
      name: `${registry.host}/shop/web`,
      createdAt: hourAgo,
      vulns: [{ id: 'CVE-2026-4242', pkg: 'zlib', version: '1.3.1-r0', fixed: '1.3.1-r2', severity: 'HIGH' }],
    }),
  };
  for (const [name, text] of Object.entries(reports)) {
    writeFileSync(join(dir, `${name}.json`), text);
    const r = await writ(srv, ['vuln', 'ingest', '-f', join(dir, `${name}.json`)]);
    assert.equal(r.code, 0, r.stderr);
  }
  await applyPolicy(srv, dir, POLICY);
});
after(async () => {
  await srv?.stop();
  await registry?.stop();
  cleanup(dir);
});

let uid = 0;
/** A Pod CREATE review as kube-apiserver sends it, POSTed over TLS to the Service name, checked against the caBundle. */
function admit(namespace: string, image: string): Promise<{ allowed: boolean; status?: { message: string }; warnings?: string[]; uid: string }> {
  const body = JSON.stringify({
    kind: 'AdmissionReview',
    apiVersion: 'admission.k8s.io/v1',
    request: {
      uid: `7c1e0a5c-1f3e-4c21-9a0e-${String(++uid).padStart(12, '0')}`,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      name: 'web',
      namespace,
      operation: 'CREATE',
      userInfo: { username: 'kubernetes-admin', groups: ['system:authenticated'] },
      object: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace }, spec: { containers: [{ name: 'app', image }] } },
      oldObject: null,
      dryRun: false,
      options: { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' },
    },
  });
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        servername: DNS,
        path: '/v1/admission/validate',
        method: 'POST',
        ca,
        agent: false,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          assert.equal(res.statusCode, 200, text);
          resolve((JSON.parse(text) as { response: { allowed: boolean; status?: { message: string }; uid: string } }).response);
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('admission: images.vulnerabilities', () => {
  it('denies an image whose report has a fixable critical CVE, naming it; the unfixable high one is left alone (fixableOnly)', async () => {
    const r = await admit('prod', `${NAME}@${VULNERABLE}`);
    assert.equal(r.allowed, false);
    assert.equal(
      r.status!.message,
      `violates AdmissionPolicy "prod-vulns": image "${NAME}@${VULNERABLE}" has 1 fixable critical/high vulnerability: CVE-2026-31337 (critical, libcrypto3 3.3.2-r0, fixed in 3.3.2-r4) (container "app")`,
    );
  });

  it('a tag is judged by the digest the registry resolves it to', async () => {
    const tag = registry.ref('shop/web', 'v2');
    const r = await admit('prod', tag);
    assert.equal(r.allowed, false);
    assert.equal(
      r.status!.message,
      `violates AdmissionPolicy "prod-vulns": image "${tag}" (${pushed.digest.slice(0, 19)}) has 1 fixable critical/high vulnerability: CVE-2026-4242 (high, zlib 1.3.1-r0, fixed in 1.3.1-r2) (container "app")`,
    );
  });

  it('a VulnException for the CVE on that digest suppresses the finding: the image is admitted; the deny of another image still names it', async () => {
    const expires = new Date(Date.now() + 86_400_000).toISOString();
    await applyPolicy(
      srv,
      dir,
      `apiVersion: writ.dev/v1
kind: VulnException
metadata: { name: zlib-web-v2 }
spec:
  vulnerability: CVE-2026-4242
  scope: { digest: ["${pushed.digest}"] }
  reason: "TICKET-12: zlib's inflate is not reachable from this service"
  owner: shop-team
  expires: ${expires}
`,
    );
    const r = await admit('prod', registry.ref('shop/web', 'v2'));
    assert.equal(r.allowed, true, r.status?.message);
    // The exception is scoped to the digest: the same CVE elsewhere still refuses.
    const other = await admit('prod', `${NAME}@${VULNERABLE}`);
    assert.equal(other.allowed, false);
    assert.match(other.status!.message, /CVE-2026-31337/);
  });

  it('admits an image whose report has nothing blocking', async () => {
    const r = await admit('prod', `${NAME}@${CLEAN}`);
    assert.equal(r.allowed, true, r.status?.message);
  });

  it('requireReport: an image no scanner reported on is refused, saying what to do', async () => {
    const r = await admit('prod', `${NAME}@${UNSCANNED}`);
    assert.equal(r.allowed, false);
    assert.match(
      r.status!.message,
      /image ".*@sha256:5c5c.*" has no vulnerability report \(the policy requires one: scan the image and send the report with writ vuln ingest\)/,
    );
  });

  it('warn mode admits with a warning naming the CVE', async () => {
    const r = await admit('staging', `${NAME}@${VULNERABLE}`);
    assert.equal(r.allowed, true);
    assert.match(r.warnings?.[0] ?? '', /^would violate AdmissionPolicy "staging-vulns": .* has 1 critical vulnerability: CVE-2026-31337/);
  });

  it('an AdmissionException for imageVulnerabilities on that digest admits it, and the event names the exception', async () => {
    const expires = new Date(Date.now() + 86_400_000).toISOString();
    await applyPolicy(
      srv,
      dir,
      `apiVersion: writ.dev/v1
kind: AdmissionException
metadata: { name: web-cve-31337 }
spec:
  namespaces: [prod]
  controls: [imageVulnerabilities]
  images: ["${VULNERABLE}"]
  owner: shop-team
  reason: "TICKET-9: libcrypto3 is not reachable from the app; rebuild tomorrow"
  expires: ${expires}
`,
    );
    const ok = await admit('prod', `${NAME}@${VULNERABLE}`);
    assert.equal(ok.allowed, true, ok.status?.message);
    // The exception is for that digest only.
    assert.equal((await admit('prod', `${NAME}@${UNSCANNED}`)).allowed, false);
    const ev = await writ(srv, ['admission', 'events', '--namespace', 'prod', '-o', 'json']);
    assert.equal(ev.code, 0, ev.stderr);
    const events = JSON.parse(ev.stdout) as Array<{
      uid: string;
      allowed: boolean;
      controls: string[];
      exceptions: Array<{ name: string; controls: string[] }>;
    }>;
    const mine = events.find((e) => e.uid === ok.uid);
    assert.deepEqual(mine?.exceptions, [{ name: 'web-cve-31337', controls: ['imageVulnerabilities'], containers: ['app'] }]);
    assert.ok(events.some((e) => !e.allowed && e.controls.includes('imageVulnerabilities')));
  });
});
