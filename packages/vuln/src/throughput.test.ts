/** Parse throughput of Trivy reports: a usual one (100 packages) and a 50 MB one. Prints the numbers. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { parseReport } from './index.ts';

/** A Trivy report shaped like `trivy image --list-all-pkgs -f json`, `n` packages over 4 layers, a finding on every 4th. */
function trivyReport(n: number, descriptionBytes = 200): string {
  const hex = (i: number, w = 64) => i.toString(16).padStart(w, '0');
  const layers = [0, 1, 2, 3].map((i) => `sha256:${hex(0xa000 + i)}`);
  const desc = 'x'.repeat(descriptionBytes);
  const packages = [];
  const vulns = [];
  for (let i = 0; i < n; i++) {
    const name = `lib-${i}`;
    const purl = `pkg:deb/debian/${name}@1.${i}.0-1?arch=amd64&distro=debian-12.8`;
    const layer = { Digest: `sha256:${hex(0xd000 + (i % 4))}`, DiffID: layers[i % 4] };
    packages.push({
      ID: `${name}@1.${i}.0-1`,
      Name: name,
      Identifier: { PURL: purl, UID: hex(i, 16) },
      Version: `1.${i}.0-1`,
      Licenses: ['GPL-2.0-only'],
      Layer: layer,
    });
    if (i % 4 === 0)
      vulns.push({
        VulnerabilityID: `CVE-2024-${10000 + i}`,
        PkgID: `${name}@1.${i}.0-1`,
        PkgName: name,
        PkgIdentifier: { PURL: purl },
        InstalledVersion: `1.${i}.0-1`,
        FixedVersion: `1.${i}.0-2`,
        Status: 'fixed',
        Layer: layer,
        Severity: ['CRITICAL', 'HIGH', 'MEDIUM', 'LOW'][i % 4],
        Title: `${name}: a flaw`,
        Description: desc,
        CVSS: { nvd: { V3Vector: 'CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H', V3Score: 9.8 } },
      });
  }
  return JSON.stringify({
    SchemaVersion: 2,
    CreatedAt: '2026-11-30T10:15:42.123456789Z',
    ArtifactName: 'registry.example.com/big:1',
    ArtifactType: 'container_image',
    Metadata: {
      ImageID: `sha256:${hex(0xc)}`,
      DiffIDs: layers,
      RepoTags: ['registry.example.com/big:1'],
      RepoDigests: [`registry.example.com/big@sha256:${hex(0xe)}`],
    },
    Results: [{ Target: 'registry.example.com/big:1 (debian 12.8)', Class: 'os-pkgs', Type: 'debian', Packages: packages, Vulnerabilities: vulns }],
  });
}

function measure(text: string, runs: number): { ms: number; mbPerS: number } {
  parseReport(text);
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) parseReport(text);
  const ms = (performance.now() - t0) / runs;
  return { ms, mbPerS: text.length / 1e6 / (ms / 1000) };
}

// Speed is measured (and judged) by bench/vuln.ts; these print what this machine does.
it('a 100-package Trivy report parses whole (prints reports per second)', () => {
  const text = trivyReport(100);
  const r = parseReport(text);
  assert.equal(r.packages.length, 100);
  assert.equal(r.findings.length, 25);
  const m = measure(text, 200);
  console.log(`trivy 100 packages (${(text.length / 1024).toFixed(0)} KiB): ${m.ms.toFixed(3)} ms/report, ${(1000 / m.ms).toFixed(0)} reports/s`);
});

it('a 50 MB Trivy report parses, all of it (prints MB/s)', () => {
  let n = 60_000;
  let text = trivyReport(n);
  n = Math.ceil((n * 50e6) / text.length);
  text = trivyReport(n);
  const m = measure(text, 2);
  const r = parseReport(text);
  assert.equal(r.packages.length, n);
  console.log(`trivy ${n} packages (${(text.length / 1e6).toFixed(1)} MB): ${m.ms.toFixed(0)} ms, ${m.mbPerS.toFixed(0)} MB/s`);
});
