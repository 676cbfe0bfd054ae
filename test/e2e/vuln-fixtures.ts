/**
 * Trivy JSON (schema 2) documents written by the tests in the exact format Trivy writes (its
 * database cannot be downloaded here): one image, its packages in one layer, the findings asked for.
 */
export interface FixtureVuln {
  readonly id: string;
  readonly pkg: string;
  readonly version: string;
  readonly fixed?: string;
  readonly severity: 'CRITICAL' | 'HIGH' | 'MEDIUM' | 'LOW' | 'UNKNOWN';
}

export function trivyReport(o: { digest: string; name: string; createdAt: Date; vulns: readonly FixtureVuln[]; packages?: readonly string[] }): string {
  const diffId = `sha256:${'b1'.repeat(32)}`;
  const pkgs = [...new Set([...(o.packages ?? []), ...o.vulns.map((v) => `${v.pkg}@${v.version}`)])];
  return JSON.stringify({
    SchemaVersion: 2,
    Trivy: { Version: '0.58.1' },
    CreatedAt: o.createdAt.toISOString(),
    ArtifactName: `${o.name}@${o.digest}`,
    ArtifactType: 'container_image',
    Metadata: {
      OS: { Family: 'alpine', Name: '3.20.3' },
      ImageID: `sha256:${'c0'.repeat(32)}`,
      DiffIDs: [diffId],
      RepoTags: [],
      RepoDigests: [`${o.name}@${o.digest}`],
      ImageConfig: { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId] }, config: {} },
    },
    Results: [
      {
        Target: `${o.name}@${o.digest} (alpine 3.20.3)`,
        Class: 'os-pkgs',
        Type: 'alpine',
        Packages: pkgs.map((p) => {
          const [name, version] = p.split('@') as [string, string];
          return {
            ID: p,
            Name: name,
            Identifier: { PURL: `pkg:apk/alpine/${name}@${version}?arch=x86_64&distro=3.20.3` },
            Version: version,
            Layer: { DiffID: diffId },
          };
        }),
        Vulnerabilities: o.vulns.map((v) => ({
          VulnerabilityID: v.id,
          PkgID: `${v.pkg}@${v.version}`,
          PkgName: v.pkg,
          PkgIdentifier: { PURL: `pkg:apk/alpine/${v.pkg}@${v.version}?arch=x86_64&distro=3.20.3` },
          InstalledVersion: v.version,
          ...(v.fixed ? { FixedVersion: v.fixed, Status: 'fixed' } : { Status: 'affected' }),
          Layer: { DiffID: diffId },
          SeveritySource: 'nvd',
          Title: `${v.pkg}: a flaw`,
          Severity: v.severity,
        })),
      },
    ],
  });
}
