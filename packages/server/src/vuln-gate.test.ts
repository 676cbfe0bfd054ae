/** The gate's view of an image's vulnerabilities, from the store (SQLite and PostgreSQL). */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Report } from '@writ/vuln';
import { STORE_FACTORIES, type TestStore } from './testing/stores.ts';
import { storeVulnerabilityChecker } from './vuln-gate.ts';

const dg = (c: string): string => `sha256:${c.repeat(64)}`;
const INDEX = dg('9');
const AMD = dg('a');
const ARM = dg('b');

function report(digest: string, over: Partial<Report> = {}, vulns: string[] = ['CVE-2024-1000']): Report {
  return {
    format: 'trivy',
    scanner: { name: 'trivy' },
    scannedAt: '2026-03-01T00:00:00.000Z',
    image: { digest, names: ['registry.example/app'], repoTags: [], repoDigests: [], diffIds: [], annotations: {}, labels: {} },
    packages: [{ id: 'p0', name: 'openssl', version: '3.0.0', type: 'apk' }],
    findings: vulns.map((id) => ({ id, aliases: [], severity: 'critical' as const, packageRef: 'p0', installed: '3.0.0', status: 'affected' as const })),
    vex: [],
    vulnerabilityData: true,
    ...over,
  };
}

const platform = (digest: string, p: string) => ({
  digest,
  configDigest: null,
  indexDigest: INDEX,
  platform: p,
  names: ['registry.example/app'],
  tags: [],
  layers: [],
  annotations: {},
  labels: {},
  created: null,
  firstSeen: 1,
  lastSeen: 1,
});

for (const factory of STORE_FACTORIES) {
  describe(`vulnerability gate checker: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('a tag resolved to an image index is judged by its platforms: findings of any (once each), the oldest scan', async () => {
      await t.store.recordImages([platform(AMD, 'linux/amd64'), platform(ARM, 'linux/arm64')], 1);
      await t.store.putReport(report(AMD), 2);
      await t.store.putReport(report(ARM, { scannedAt: '2026-02-01T00:00:00.000Z' }), 2);
      const v = await storeVulnerabilityChecker(t.store, () => Date.parse('2026-03-02T00:00:00Z')).vulnerabilities(INDEX);
      assert.deepEqual(
        v.report?.findings.map((f) => f.id),
        ['CVE-2024-1000'],
      );
      assert.equal(v.report?.scannedAt, Date.parse('2026-02-01T00:00:00.000Z'));
    });

    it('a CycloneDX scan with an empty vulnerabilities list is a clean report; an SBOM alone is no report', async () => {
      const check = storeVulnerabilityChecker(t.store, () => Date.parse('2026-03-02T00:00:00Z'));
      await t.store.putReport(report(dg('c'), { format: 'cyclonedx', vulnerabilityData: true }, []), 3);
      assert.deepEqual((await check.vulnerabilities(dg('c'))).report?.findings, []);
      await t.store.putReport(report(dg('d'), { format: 'spdx', vulnerabilityData: false }, []), 3);
      assert.equal((await check.vulnerabilities(dg('d'))).report, undefined);
    });
  });
}
