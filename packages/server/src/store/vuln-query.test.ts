/** Store conformance for the answers (issue 13, section 4): every case on SQLite and PostgreSQL. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Report } from '@writ/vuln';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';
import type { WorkloadInput } from './types.ts';

const dg = (c: string): string => `sha256:${c.repeat(64)}`;
const layer = (c: string): string => `sha256:${c.repeat(64)}`;
const BASE = dg('a');
const BASE2 = dg('b');
const WEB = dg('c');
const API = dg('d');
const L1 = layer('1');
const L2 = layer('2');
const L3 = layer('3');
const L4 = layer('4');
const L5 = layer('5');

interface Pkg {
  readonly name: string;
  readonly version: string;
  readonly layer: string;
  readonly vulns?: readonly { id: string; aliases?: string[]; fixed?: string; severity?: 'critical' | 'high' | 'low' }[];
}

function report(digest: string, names: string[], diffIds: string[], pkgs: readonly Pkg[], scannedAt: string, annotations: Record<string, string> = {}): Report {
  return {
    format: 'trivy',
    formatVersion: '2',
    scanner: { name: 'trivy', version: '0.58.0' },
    scannedAt,
    image: { digest, names, repoTags: names.map((n) => `${n}:1`), repoDigests: [], diffIds, annotations, labels: {} },
    packages: pkgs.map((p, i) => ({
      id: `p${i}`,
      name: p.name,
      version: p.version,
      type: 'apk',
      purl: `pkg:apk/alpine/${p.name}@${p.version}`,
      layer: p.layer,
    })),
    findings: pkgs.flatMap((p, i) =>
      (p.vulns ?? []).map((v) => ({
        id: v.id,
        aliases: v.aliases ?? [],
        severity: v.severity ?? 'high',
        packageRef: `p${i}`,
        installed: p.version,
        ...(v.fixed === undefined ? {} : { fixed: v.fixed }),
        status: 'affected' as const,
      })),
    ),
    vex: [],
    vulnerabilityData: true,
  };
}

const w = (key: string, digest: string, spiffeId: string, owner: string): WorkloadInput => ({
  key,
  spiffeIds: [spiffeId],
  containerId: key,
  containerName: 'main',
  podUid: `uid-${key}`,
  podName: `pod-${key}`,
  namespace: 'shop',
  podOwner: 'ReplicaSet/x',
  imageDigest: digest,
  imageName: 'registry.example/shop/x',
  labels: {},
  annotations: {},
  owner,
});

const SSL = (vulns: Pkg['vulns']): Pkg => ({ name: 'libssl3', version: '3.1.0-r0', layer: L1, ...(vulns === undefined ? {} : { vulns }) });

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, answers: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
      const s = t.store;
      const cve = [{ id: 'CVE-2024-0001', fixed: '3.1.1-r0', severity: 'critical' as const }];
      // Children first: their parent is found when the base arrives later (recomputed for its children).
      await s.putReport(
        report(WEB, ['registry.example/shop/web'], [L1, L2, L3], [SSL(cve), { name: 'express', version: '4.0.0', layer: L3 }], '2026-01-02T00:00:00.000Z'),
        1000,
      );
      await s.putReport(
        report(
          API,
          ['registry.example/shop/api'],
          [L1, L2, L4],
          [SSL(cve), { name: 'lodash', version: '4.17.0', layer: L4, vulns: [{ id: 'GHSA-23cf-gh45-jmpq', aliases: ['CVE-2024-0002'] }] }],
          '2026-01-02T00:00:00.000Z',
        ),
        1000,
      );
      await s.putReport(
        report(BASE, ['registry.example/base/alpine'], [L1, L2], [SSL(cve)], '2026-01-01T00:00:00.000Z', {
          'org.opencontainers.image.created': '2026-01-01T00:00:00Z',
        }),
        1000,
      );
      await s.putReport(
        report(BASE2, ['registry.example/base/alpine'], [L5], [{ name: 'libssl3', version: '3.1.1-r0', layer: L5 }], '2026-01-03T00:00:00.000Z', {
          'org.opencontainers.image.created': '2026-01-03T00:00:00Z',
        }),
        1000,
      );
    });
    after(async () => t.dispose());

    it('affected: every image whose latest report carries the CVE, with package, layer and parent', async () => {
      const rows = await t.store.affected('CVE-2024-0001', 5000);
      assert.deepEqual(
        rows.map((r) => [r.image.digest, r.package?.name, r.package?.layer, r.finding.installed, r.finding.fixed, r.finding.severity, r.scanner]),
        [BASE, WEB, API].sort().map((d) => [d, 'libssl3', L1, '3.1.0-r0', '3.1.1-r0', 'critical', 'trivy']),
      );
      const web = rows.find((r) => r.image.digest === WEB)!;
      assert.deepEqual(web.image.parent, { digest: BASE, name: 'registry.example/base/alpine:1', source: 'layers', baseLayers: 2 });
      assert.equal(rows.find((r) => r.image.digest === BASE)!.image.parent, null);
      assert.deepEqual(await t.store.affectedDigests('CVE-2024-0001'), [BASE, WEB, API].sort());
    });

    it('a CVE finds the finding filed under a GHSA that names it as an alias', async () => {
      const rows = await t.store.affected('CVE-2024-0002', 5000);
      assert.deepEqual(
        rows.map((r) => [r.image.digest, r.finding.id, r.finding.aliases, r.package?.name]),
        [[API, 'GHSA-23cf-gh45-jmpq', ['CVE-2024-0002'], 'lodash']],
      );
      assert.deepEqual(await t.store.affectedDigests('GHSA-23cf-gh45-jmpq'), [API]);
      assert.deepEqual(await t.store.affected('CVE-2099-0001', 5000), []);
    });

    it('lineage: parent chain, children, and the repository images newer bases come from', async () => {
      const l = await t.store.imageLineage(WEB);
      assert.deepEqual(
        l.parents.map((p) => [p.digest, p.source, p.image?.digest]),
        [[BASE, 'layers', BASE]],
      );
      const b = await t.store.imageLineage(BASE);
      assert.deepEqual(b.parents, []);
      assert.deepEqual(
        b.children.map((c) => c.digest),
        [WEB, API].sort(),
      );
      const web = (await t.store.affected('CVE-2024-0001', 5000)).find((r) => r.image.digest === WEB)!.image;
      const ctx = await t.store.baseImagesOf([web]);
      assert.deepEqual(ctx.map((i) => i.digest).sort(), [BASE, BASE2].sort(), 'its base, and the other image of the base repository');
    });

    it('workloads on an image, by manifest digest or by its index digest; rollout history and identities', async () => {
      const s = t.store;
      await s.putAgentWorkloads(
        'spiffe://example.org/agent/n1',
        'n1',
        [w('c1', WEB, 'spiffe://example.org/web', 'payments'), w('c2', API, 'spiffe://example.org/api', 'search')],
        10_000,
      );
      const rows = await s.affected('CVE-2024-0001', 10_000);
      assert.deepEqual(
        rows.map((r) => [r.image.digest, r.running.map((x) => [x.key, x.owner, x.manifestDigest])]),
        [
          [BASE, []],
          [WEB, [['c1', 'payments', WEB]]],
          [API, [['c2', 'search', API]]],
        ].sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
      );
      assert.deepEqual(await s.runningImageDigests(10_000), [WEB, API].sort());
      // c1 is replaced by a workload on a new digest under the same identity.
      await s.putAgentWorkloads(
        'spiffe://example.org/agent/n1',
        'n1',
        [w('c3', BASE2, 'spiffe://example.org/web', 'payments'), w('c2', API, 'spiffe://example.org/api', 'search')],
        20_000,
      );
      const r = await s.rolloutWorkloads(await s.affectedDigests('CVE-2024-0001'), 20_000);
      assert.deepEqual(
        r.history.map((x) => [x.key, x.endedAt]),
        [
          ['c1', 20_000],
          ['c2', null],
        ],
      );
      assert.deepEqual(
        r.running.map((x) => [x.key, x.imageDigest]),
        [
          ['c2', API],
          ['c3', BASE2],
        ],
      );
      assert.deepEqual(await s.reportedDigests([BASE2, dg('f')]), [BASE2]);
      assert.deepEqual(
        (await s.runningWorkloads([API, WEB], 20_000)).map((x) => x.key),
        ['c2'],
      );
    });

    it('only the latest report per (image, scanner) counts: a newer scan without the CVE clears the image', async () => {
      const s = t.store;
      await s.putReport(report(WEB, ['registry.example/shop/web'], [L1, L2, L3], [SSL([])], '2026-01-05T00:00:00.000Z'), 30_000);
      // An older scan arriving later does not take over.
      await s.putReport(report(WEB, ['registry.example/shop/web'], [L1, L2, L3], [SSL([{ id: 'CVE-2024-0001' }])], '2026-01-04T00:00:00.000Z'), 31_000);
      assert.deepEqual(await s.affectedDigests('CVE-2024-0001'), [BASE, API].sort());
      const detail = await s.getImage(WEB);
      assert.equal(detail?.reports.length, 1);
      assert.equal(detail?.reports[0]?.scannedAt, Date.parse('2026-01-05T00:00:00.000Z'));
    });

    it('an SBOM of the same scanner, however new, does not hide a vulnerability report; a newer scan with an empty vulnerabilities list does', async () => {
      const s = t.store;
      const OTHER = dg('e');
      const id = 'CVE-2024-0777';
      await s.putReport(report(OTHER, ['registry.example/shop/other'], [L1], [SSL([{ id }])], '2026-02-01T00:00:00.000Z'), 40_000);
      const sbom: Report = {
        ...report(OTHER, ['registry.example/shop/other'], [L1], [SSL([])], '2026-02-02T00:00:00.000Z'),
        format: 'cyclonedx',
        vulnerabilityData: false,
      };
      await s.putReport(sbom, 41_000);
      assert.deepEqual(await s.affectedDigests(id), [OTHER], 'the SBOM says nothing about vulnerabilities');
      assert.equal((await s.getImage(OTHER))?.reports[0]?.format, 'trivy');
      const clean: Report = {
        ...report(OTHER, ['registry.example/shop/other'], [L1], [SSL([])], '2026-02-03T00:00:00.000Z'),
        format: 'cyclonedx',
        vulnerabilityData: true,
      };
      await s.putReport(clean, 42_000);
      assert.deepEqual(await s.affectedDigests(id), [], 'a newer scan that found nothing clears it');
    });

    it('lists vulnerabilities by severity, fixable and running', async () => {
      const s = t.store;
      const all = await s.listVulnerabilities({ now: 20_000 });
      assert.deepEqual([...new Set(all.map((r) => r.vulnId))].sort(), ['CVE-2024-0001', 'GHSA-23cf-gh45-jmpq']);
      const critical = await s.listVulnerabilities({ now: 20_000, severity: ['critical'] });
      assert.deepEqual([...new Set(critical.map((r) => r.vulnId))], ['CVE-2024-0001']);
      const fixable = await s.listVulnerabilities({ now: 20_000, fixable: true });
      assert.deepEqual([...new Set(fixable.map((r) => r.vulnId))], ['CVE-2024-0001']);
      const running = await s.listVulnerabilities({ now: 20_000, running: true });
      assert.deepEqual([...new Set(running.map((r) => r.imageDigest))], [API]);
    });
  });
}
