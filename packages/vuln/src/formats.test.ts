/** Each format read from a real-shaped document: what an operator would see in `writ vuln` answers. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { detectFormat, parseReport } from './index.ts';

const read = (f: string) => readFileSync(new URL(`testdata/${f}`, import.meta.url), 'utf8');
const doc = (f: string) => JSON.parse(read(f)) as Record<string, unknown>;
const BASE = `sha256:${'b1'.repeat(32)}`;
const APP = `sha256:${'a2'.repeat(32)}`;
const MANIFEST = `sha256:${'9e'.repeat(32)}`;
const CONFIG = `sha256:${'c0'.repeat(32)}`;

function refusal(input: string | object, code: string, field?: string) {
  assert.throws(
    () => parseReport(typeof input === 'string' ? input : JSON.stringify(input)),
    (err: unknown) => {
      assert.ok(isWritError(err, code), `expected ${code}, got ${String(err)}`);
      if (field !== undefined) assert.equal(err.field, field);
      return true;
    },
  );
}

describe('Trivy JSON', () => {
  const r = parseReport(read('trivy-image.json'));
  it('names the image by manifest digest, config digest, tags and layers', () => {
    assert.equal(r.format, 'trivy');
    assert.equal(r.formatVersion, '2');
    assert.deepEqual(r.scanner, { name: 'trivy', version: '0.58.1' });
    assert.equal(r.scannedAt, '2026-11-30T09:15:42.123Z');
    assert.equal(r.image.digest, MANIFEST);
    assert.equal(r.image.configDigest, CONFIG);
    assert.deepEqual(r.image.names, ['registry.example.com/shop/web']);
    assert.deepEqual(r.image.diffIds, [BASE, APP]);
    assert.equal(r.image.labels['org.opencontainers.image.source'], 'https://github.com/example/web');
  });
  it('keeps each package with its layer, and each finding on its package', () => {
    const musl = r.packages.find((p) => p.name === 'musl');
    assert.equal(musl?.layer, BASE);
    assert.equal(musl?.purl, 'pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=3.20.3');
    const f = r.findings.find((x) => x.id === 'CVE-2024-9143')!;
    const pkg = r.packages.find((p) => p.id === f.packageRef)!;
    assert.equal(pkg.name, 'libcrypto3');
    assert.equal(pkg.layer, BASE);
    assert.deepEqual([f.installed, f.fixed, f.severity, f.status], ['3.3.2-r0', '3.3.2-r1', 'medium', 'affected']);
    const express = r.findings.find((x) => x.id === 'CVE-2024-29041')!;
    assert.deepEqual(express.aliases, ['GHSA-rv95-896h-c2vc']);
    assert.equal(r.packages.find((p) => p.id === express.packageRef)?.layer, APP);
  });
  it('a vulnerability whose package was not listed (no --list-all-pkgs) still has its package', () => {
    const f = r.findings.find((x) => x.id === 'GHSA-9wv6-86v2-598j')!;
    const pkg = r.packages.find((p) => p.id === f.packageRef)!;
    assert.deepEqual([pkg.name, pkg.version, pkg.type, pkg.layer], ['path-to-regexp', '0.1.7', 'npm', APP]);
  });
  it('refuses another SchemaVersion, and names the path of a bad field', () => {
    refusal({ ...doc('trivy-image.json'), SchemaVersion: 3 }, 'ERR_VULN_SCHEMA_UNSUPPORTED', 'SchemaVersion');
    refusal({ SchemaVersion: 1 }, 'ERR_VULN_SCHEMA_UNSUPPORTED', 'SchemaVersion');
    const d = doc('trivy-image.json') as { Results: { Vulnerabilities: Record<string, unknown>[] }[] };
    d.Results[1]!.Vulnerabilities[0]!.PkgName = 42;
    refusal(d, 'ERR_VULN_REPORT_INVALID', 'Results[1].Vulnerabilities[0].PkgName');
    const e = doc('trivy-image.json') as { Results: { Packages: { Identifier: { PURL: string } }[] }[] };
    e.Results[0]!.Packages[0]!.Identifier.PURL = 'apk/alpine/musl';
    refusal(e, 'ERR_PURL_INVALID', 'Results[0].Packages[0]');
  });
  it('reads an SBOM-result report (no image metadata) and Go nulls as empty', () => {
    const s = parseReport(
      JSON.stringify({
        SchemaVersion: 2,
        ArtifactName: 'sbom.cdx.json',
        ArtifactType: 'cyclonedx',
        Results: [{ Target: 'x', Packages: null, Vulnerabilities: null }],
      }),
    );
    assert.equal(s.image.digest, undefined);
    assert.deepEqual([s.packages, s.findings], [[], []]);
  });
});

describe('Grype JSON', () => {
  const r = parseReport(read('grype-image.json'));
  it('reads the image from source.target, layers as diff IDs', () => {
    assert.equal(r.format, 'grype');
    assert.deepEqual(r.scanner, { name: 'grype', version: '0.84.0' });
    assert.equal(r.image.digest, MANIFEST);
    assert.equal(r.image.configDigest, CONFIG);
    assert.deepEqual(r.image.diffIds, [BASE, APP]);
    assert.equal(r.image.labels.team, 'shop');
    assert.equal(r.scannedAt, '2026-11-30T09:20:00.500Z');
  });
  it('merges the artifact repeated across matches, keeps its layer, and the related CVE as an alias', () => {
    assert.equal(r.packages.filter((p) => p.name === 'express').length, 1);
    assert.equal(r.packages.find((p) => p.name === 'libcrypto3')?.layer, BASE);
    const g = r.findings.find((f) => f.id === 'GHSA-rv95-896h-c2vc')!;
    assert.deepEqual(g.aliases, ['CVE-2024-29041']);
    assert.equal(g.fixed, '4.19.2');
  });
  it('names the path of a bad field', () => {
    const d = doc('grype-image.json') as { matches: { artifact: Record<string, unknown> }[] };
    d.matches[2]!.artifact.name = 5;
    refusal(d, 'ERR_VULN_REPORT_INVALID', 'matches[2].artifact.name');
    const e = doc('grype-image.json') as { source: { target: { layers: Record<string, unknown>[] } } };
    e.source.target.layers[1]!.digest = null;
    refusal(e, 'ERR_VULN_REPORT_INVALID', 'source.target.layers[1].digest');
  });
});

describe('Grype ignored matches', () => {
  it('a VEX-ignored match keeps its VEX status; a locally ignored one stays affected', () => {
    const d = doc('grype-image.json') as { matches: Record<string, unknown>[]; ignoredMatches?: unknown[] };
    const [a, b] = d.matches;
    d.ignoredMatches = [
      { ...a, appliedIgnoreRules: [{ namespace: 'vex', 'vex-status': 'not_affected', 'vex-justification': 'vulnerable_code_not_present' }] },
      { ...b, appliedIgnoreRules: [{ vulnerability: 'GHSA-rv95-896h-c2vc', reason: 'later' }] },
    ];
    d.matches = [];
    const r = parseReport(JSON.stringify(d));
    assert.deepEqual(
      r.findings.map((f) => [f.id, f.status]),
      [
        ['CVE-2024-9143', 'not_affected'],
        ['GHSA-rv95-896h-c2vc', 'affected'],
      ],
    );
  });
});

describe('CycloneDX', () => {
  it('1.6 from Syft: the image from metadata.component, layers from syft:location:0:layerID, VEX analysis', () => {
    const r = parseReport(read('cyclonedx-1.6.json'));
    assert.equal(r.format, 'cyclonedx');
    assert.equal(r.formatVersion, '1.6');
    assert.deepEqual(r.scanner, { name: 'syft', version: '1.18.1' });
    assert.equal(r.image.digest, MANIFEST);
    assert.deepEqual(r.image.names, ['registry.example.com/shop/web']);
    assert.deepEqual(
      r.packages.map((p) => [p.name, p.layer, p.licenses]),
      [
        ['musl', BASE, ['MIT']],
        ['express', APP, ['MIT']],
      ],
    );
    const ex = r.findings.find((f) => f.id === 'CVE-2024-29041')!;
    assert.deepEqual([ex.fixed, ex.severity, ex.aliases], ['4.19.2, 5.0.0-beta.3', 'medium', ['GHSA-rv95-896h-c2vc']]);
    const musl = r.findings.find((f) => f.id === 'CVE-2025-26519')!;
    assert.deepEqual([musl.status, musl.severity, musl.fixed], ['not_affected', 'high', '1.2.5-r9']);
  });
  it('Syft scanning a tag writes repository and tag, no digest; 1.7 is read too', () => {
    const d = doc('cyclonedx-1.6.json') as { specVersion: string; metadata: { component: Record<string, string> } };
    d.specVersion = '1.7';
    d.metadata.component.version = '1.4.2';
    const r = parseReport(JSON.stringify(d));
    assert.equal(r.image.digest, undefined);
    assert.deepEqual(r.image.repoTags, ['registry.example.com/shop/web:1.4.2']);
    assert.equal(r.formatVersion, '1.7');
  });
  it('1.5 from Trivy: nested components, aquasecurity:trivy properties, pkg:oci purl', () => {
    const r = parseReport(read('cyclonedx-1.5-trivy.json'));
    assert.deepEqual(r.scanner, { name: 'trivy', version: '0.58.1' });
    assert.equal(r.image.digest, MANIFEST);
    assert.equal(r.image.configDigest, CONFIG);
    assert.deepEqual(r.image.diffIds, [BASE, APP]);
    assert.ok(r.image.names.includes('registry.example.com/shop/web'));
    assert.equal(r.image.annotations['org.opencontainers.image.base.name'], 'docker.io/library/alpine:3.20');
    assert.deepEqual(
      r.packages.map((p) => [p.name, p.type, p.layer]),
      [['musl', 'apk', BASE]],
    );
    assert.deepEqual(r.findings, []);
  });
  it("Trivy's target components (a lockfile) are not packages; their children are", () => {
    const d = doc('cyclonedx-1.5-trivy.json') as { components: unknown[] };
    d.components.push({
      'bom-ref': 'c2',
      type: 'application',
      name: 'app/package-lock.json',
      properties: [{ name: 'aquasecurity:trivy:Class', value: 'lang-pkgs' }],
      components: [{ 'bom-ref': 'pkg:npm/ms@2.1.3', type: 'library', name: 'ms', version: '2.1.3', purl: 'pkg:npm/ms@2.1.3' }],
    });
    assert.deepEqual(
      parseReport(JSON.stringify(d)).packages.map((p) => p.name),
      ['musl', 'ms'],
    );
  });
  it('refuses other spec versions and names bad paths', () => {
    refusal({ ...doc('cyclonedx-1.6.json'), specVersion: '1.2' }, 'ERR_VULN_SCHEMA_UNSUPPORTED', 'specVersion');
    refusal({ ...doc('cyclonedx-1.6.json'), specVersion: '2.0' }, 'ERR_VULN_SCHEMA_UNSUPPORTED');
    const d = doc('cyclonedx-1.6.json') as { vulnerabilities: { affects: { ref: unknown }[] }[] };
    d.vulnerabilities[1]!.affects[0]!.ref = null;
    refusal(d, 'ERR_VULN_REPORT_INVALID', 'vulnerabilities[1].affects[0].ref');
    const e = doc('cyclonedx-1.6.json') as { vulnerabilities: { id: string }[] };
    e.vulnerabilities[0]!.id = 'CVE-24-1';
    refusal(e, 'ERR_VULN_ID_INVALID', 'vulnerabilities[0]');
  });
});

describe('SPDX 2.3', () => {
  it('the image package (CONTAINER, pkg:oci) and its packages with purls and Trivy layer annotations', () => {
    const r = parseReport(read('spdx-2.3.json'));
    assert.equal(r.format, 'spdx');
    assert.equal(r.formatVersion, 'SPDX-2.3');
    assert.deepEqual(r.scanner, { name: 'trivy', version: '0.58.1' });
    assert.equal(r.image.digest, MANIFEST);
    assert.equal(r.image.configDigest, CONFIG);
    assert.deepEqual(r.image.diffIds, [BASE, APP]);
    assert.deepEqual(
      r.packages.map((p) => [p.name, p.purl, p.layer, p.licenses]),
      [
        ['musl', 'pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=3.20.3', BASE, ['MIT']],
        ['express', 'pkg:npm/express@4.18.2', APP, ['MIT']],
      ],
    );
  });
  it("Trivy's operating-system and lockfile packages are not packages", () => {
    const d = doc('spdx-2.3.json') as { packages: unknown[] };
    d.packages.push(
      { name: 'alpine', SPDXID: 'SPDXRef-OperatingSystem-1', versionInfo: '3.20.3', downloadLocation: 'NONE', primaryPackagePurpose: 'OPERATING-SYSTEM' },
      { name: 'app/package-lock.json', SPDXID: 'SPDXRef-Application-1', downloadLocation: 'NONE', primaryPackagePurpose: 'APPLICATION' },
    );
    assert.deepEqual(
      parseReport(JSON.stringify(d)).packages.map((p) => p.name),
      ['musl', 'express'],
    );
  });
  it('names the package whose purl does not parse', () => {
    const d = doc('spdx-2.3.json') as { packages: { externalRefs: { referenceLocator: string }[] }[] };
    d.packages[2]!.externalRefs[1]!.referenceLocator = 'pkg:npm/';
    refusal(d, 'ERR_PURL_INVALID', 'packages[2]');
  });
  it('refuses SPDX 3 and 2.1', () => {
    refusal({ ...doc('spdx-2.3.json'), spdxVersion: 'SPDX-3.0' }, 'ERR_VULN_SCHEMA_UNSUPPORTED', 'spdxVersion');
    refusal({ ...doc('spdx-2.3.json'), spdxVersion: 'SPDX-2.1' }, 'ERR_VULN_SCHEMA_UNSUPPORTED');
  });
});

describe('OpenVEX', () => {
  const r = parseReport(read('openvex-0.2.0.json'));
  it('statements with products by purl and digest, normalized IDs, inherited timestamps', () => {
    assert.equal(r.format, 'openvex');
    assert.equal(r.formatVersion, 'v0.2.0');
    const [a, b, c] = r.vex;
    assert.equal(a?.vulnerability, 'CVE-2025-26519');
    assert.deepEqual(a?.aliases, ['GHSA-cccc-cccc-cccc']);
    assert.equal(a?.status, 'not_affected');
    assert.equal(a?.justification, 'vulnerable_code_not_in_execute_path');
    assert.equal(a?.products[0]?.digest, MANIFEST);
    assert.equal(a?.products[0]?.subcomponents[0]?.purl, 'pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=3.20.3');
    assert.equal(a?.timestamp, '2026-11-30T08:00:00.000Z');
    assert.equal(b?.products[0]?.digest, MANIFEST, 'from hashes.sha-256');
    assert.equal(b?.timestamp, '2026-12-01T00:00:00.000Z');
    assert.equal(c?.products[0]?.digest, MANIFEST, 'a bare digest as @id');
    assert.equal(c?.actionStatement, 'Upgrade express to 4.19.2');
  });
  it('reads the v0.0.1 shape (vulnerability and products as strings)', () => {
    const old = parseReport(
      JSON.stringify({
        '@context': 'https://openvex.dev/ns',
        '@id': 'x',
        author: 'a',
        timestamp: '2023-01-01T00:00:00Z',
        statements: [{ vulnerability: 'CVE-2023-1234', products: ['pkg:apk/wolfi/git@2.39.0-r1'], status: 'fixed' }],
      }),
    );
    assert.equal(old.formatVersion, 'v0.0.1');
    assert.equal(old.vex[0]?.products[0]?.purl, 'pkg:apk/wolfi/git@2.39.0-r1');
  });
  it('refuses an unknown version, status or justification, and a not_affected without a reason', () => {
    refusal({ ...doc('openvex-0.2.0.json'), '@context': 'https://openvex.dev/ns/v9.0.0' }, 'ERR_VULN_SCHEMA_UNSUPPORTED', '["@context"]');
    const d = doc('openvex-0.2.0.json') as { statements: Record<string, unknown>[] };
    d.statements[2]!.status = 'maybe';
    refusal(d, 'ERR_VULN_REPORT_INVALID', 'statements[2].status');
    const e = doc('openvex-0.2.0.json') as { statements: Record<string, unknown>[] };
    e.statements[0]!.justification = 'trust_me';
    refusal(e, 'ERR_VULN_REPORT_INVALID', 'statements[0].justification');
    const f = doc('openvex-0.2.0.json') as { statements: Record<string, unknown>[] };
    delete f.statements[0]!.justification;
    delete f.statements[0]!.impact_statement;
    refusal(f, 'ERR_VULN_REPORT_INVALID', 'statements[0].justification');
  });
});

describe('detection and limits', () => {
  it('detects each format and refuses anything else', () => {
    for (const [f, want] of [
      ['trivy-image.json', 'trivy'],
      ['grype-image.json', 'grype'],
      ['cyclonedx-1.6.json', 'cyclonedx'],
      ['spdx-2.3.json', 'spdx'],
      ['openvex-0.2.0.json', 'openvex'],
    ] as const)
      assert.equal(detectFormat(doc(f)), want);
    refusal({ kind: 'Pod' }, 'ERR_VULN_FORMAT_UNKNOWN');
    refusal('[]', 'ERR_VULN_FORMAT_UNKNOWN');
    refusal('{"SchemaVersion": 2, "Results": [', 'ERR_VULN_REPORT_INVALID');
  });
  it('refuses a report over the size limit before reading it', () => {
    const big = `{"SchemaVersion":2,"Results":[],"pad":"${'x'.repeat(2000)}"}`;
    assert.throws(
      () => parseReport(big, { maxBytes: 1000 }),
      (e: unknown) => isWritError(e, 'ERR_VULN_REPORT_TOO_LARGE'),
    );
    assert.throws(
      () => parseReport(new TextEncoder().encode(big), { maxBytes: 1000 }),
      (e: unknown) => isWritError(e, 'ERR_VULN_REPORT_TOO_LARGE'),
    );
    // Multi-byte text counts in UTF-8 bytes: 400 'é' are 800 bytes.
    assert.throws(
      () => parseReport(`{"a":"${'é'.repeat(400)}"}`, { maxBytes: 700 }),
      (e: unknown) => isWritError(e, 'ERR_VULN_REPORT_TOO_LARGE'),
    );
  });
  it('refuses deep nesting (brackets inside strings do not count) and too many items', () => {
    refusal(`${'['.repeat(100_000)}${']'.repeat(100_000)}`, 'ERR_VULN_REPORT_TOO_LARGE');
    const inString = JSON.stringify({ SchemaVersion: 2, ArtifactName: '[[[[{{{{'.repeat(100), Results: [] });
    assert.equal(parseReport(inString).format, 'trivy');
    const many = JSON.stringify({
      SchemaVersion: 2,
      Results: [{ Target: 't', Packages: Array.from({ length: 11 }, (_, i) => ({ Name: `p${i}`, Version: '1' })) }],
    });
    assert.throws(
      () => parseReport(many, { maxItems: 10 }),
      (e: unknown) => isWritError(e, 'ERR_VULN_REPORT_TOO_LARGE'),
    );
  });
  it('refuses bytes that are not UTF-8', () => {
    assert.throws(
      () => parseReport(new Uint8Array([0x7b, 0xff, 0x7d])),
      (e: unknown) => isWritError(e, 'ERR_VULN_REPORT_INVALID'),
    );
  });
  it('merges duplicate packages and findings (same purl, same layer)', () => {
    const p = { Name: 'zlib', Version: '1.3', Identifier: { PURL: 'pkg:apk/alpine/zlib@1.3' }, Layer: { DiffID: BASE } };
    const v = { VulnerabilityID: 'cve-2023-45853', PkgName: 'zlib', InstalledVersion: '1.3', PkgIdentifier: p.Identifier, Layer: p.Layer, Severity: 'LOW' };
    const r = parseReport(
      JSON.stringify({ SchemaVersion: 2, Results: [{ Target: 'a', Packages: [p, p], Vulnerabilities: [v, { ...v, Severity: 'CRITICAL' }] }] }),
    );
    assert.equal(r.packages.length, 1);
    assert.equal(r.findings.length, 1);
    assert.equal(r.findings[0]?.id, 'CVE-2023-45853');
    assert.equal(r.findings[0]?.severity, 'critical', 'the higher severity wins');
  });
  it('refuses a time that is not RFC 3339, naming it', () => {
    refusal({ ...doc('trivy-image.json'), CreatedAt: 'yesterday' }, 'ERR_VULN_REPORT_INVALID', 'CreatedAt');
  });
});
