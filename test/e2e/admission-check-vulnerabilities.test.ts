/**
 * `writ admission check` and the vulnerability gate offline: without --report the control refuses,
 * saying it cannot be checked; with a Trivy report for the image's digest the verdict is the webhook's.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cleanup, writ } from './helpers.ts';
import { trivyReport } from './vuln-fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'writ-e2e-check-vulns-'));
after(() => cleanup(dir));
const DIGEST = `sha256:${'6d'.repeat(32)}`;
const NAME = 'registry.example.com/shop/api';

writeFileSync(
  join(dir, 'policy.yaml'),
  `apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: vulns }
spec:
  namespaces: [prod]
  images:
    vulnerabilities: { block: [critical], requireReport: true }
`,
);
writeFileSync(
  join(dir, 'pod.yaml'),
  `apiVersion: v1
kind: Pod
metadata: { name: api, namespace: prod }
spec:
  containers: [{ name: api, image: "${NAME}@${DIGEST}" }]
`,
);
writeFileSync(
  join(dir, 'trivy.json'),
  trivyReport({
    digest: DIGEST,
    name: NAME,
    createdAt: new Date(Date.now() - 60_000),
    vulns: [{ id: 'CVE-2026-7777', pkg: 'zlib', version: '1.3.1-r0', fixed: '1.3.1-r2', severity: 'CRITICAL' }],
  }),
);
writeFileSync(join(dir, 'clean.json'), trivyReport({ digest: DIGEST, name: NAME, createdAt: new Date(), vulns: [], packages: ['zlib@1.3.1-r2'] }));

describe('writ admission check --report', () => {
  it('without a report, the control refuses and says it cannot be checked offline', async () => {
    const r = await writ(undefined, ['admission', 'check', '-f', join(dir, 'pod.yaml'), '--policy', join(dir, 'policy.yaml')]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(
      r.stdout,
      /imageVulnerabilities: image ".*": vulnerabilities cannot be checked without the server's reports \(writ admission check --report FILE\) \(container "api"\)/,
    );
  });

  it('with the image’s Trivy report: denied naming the CVE (exit 3); a clean report admits (exit 0)', async () => {
    const r = await writ(undefined, [
      'admission',
      'check',
      '-f',
      join(dir, 'pod.yaml'),
      '--policy',
      join(dir, 'policy.yaml'),
      '--report',
      join(dir, 'trivy.json'),
    ]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stdout, /^DENIED +Pod prod\/api$/m);
    assert.match(
      r.stdout,
      /imageVulnerabilities: image ".*" has 1 critical vulnerability: CVE-2026-7777 \(critical, zlib 1\.3\.1-r0, fixed in 1\.3\.1-r2\) \(container "api"\)/,
    );
    const ok = await writ(undefined, [
      'admission',
      'check',
      '-f',
      join(dir, 'pod.yaml'),
      '--policy',
      join(dir, 'policy.yaml'),
      '--report',
      join(dir, 'clean.json'),
    ]);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  });

  it('a VulnException in a --policy file suppresses the finding, as on the server', async () => {
    writeFileSync(
      join(dir, 'exception.yaml'),
      `apiVersion: writ.dev/v1
kind: VulnException
metadata: { name: zlib-api }
spec:
  vulnerability: cve-2026-7777
  scope: { repository: ["${NAME}"] }
  reason: "TICKET-3: not reachable"
  expires: ${new Date(Date.now() + 86_400_000).toISOString()}
`,
    );
    const args = ['admission', 'check', '-f', join(dir, 'pod.yaml'), '--policy', join(dir, 'policy.yaml'), '--report', join(dir, 'trivy.json')];
    const r = await writ(undefined, [...args, '--policy', join(dir, 'exception.yaml')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^ADMITTED +Pod prod\/api$/m);
  });

  it('a report that is not one is an error naming the problem (exit 1)', async () => {
    writeFileSync(join(dir, 'bad.json'), '{"hello": 1}');
    const r = await writ(undefined, [
      'admission',
      'check',
      '-f',
      join(dir, 'pod.yaml'),
      '--policy',
      join(dir, 'policy.yaml'),
      '--report',
      join(dir, 'bad.json'),
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ERR_VULN_FORMAT_UNKNOWN/);
  });
});
