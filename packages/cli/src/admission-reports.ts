/**
 * `writ admission check --report FILE`: the vulnerability gate offline. Scanner reports (any format
 * `writ vuln ingest` reads) given on the command line stand in for the server's inventory; each is
 * filed under the manifest digest it names. The VulnExceptions of the --policy files suppress what
 * they cover, as on the server; VEX statements live on the server only, so the webhook may admit
 * what this refuses.
 */
import { readFileSync, statSync } from 'node:fs';
import type { ImageVulnerabilities, ImageVulnerability, VulnerabilityChecker } from '@writ/admission';
import { WritError } from '@writ/spiffe';
import { type SuppressionSet, parseReport } from '@writ/vuln';

export function reportChecker(files: readonly string[], suppressions: SuppressionSet, now: number): VulnerabilityChecker {
  const byDigest = new Map<string, { scannedAt: number; scanners: Set<string>; findings: ImageVulnerability[] }>();
  for (const file of files) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (err) {
      throw new WritError('ERR_VULN_REPORT_INVALID', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`);
    }
    const report = parseReport(bytes);
    const digest = report.image.digest ?? report.image.repoDigests.map((r) => r.slice(r.indexOf('@') + 1)).find((d) => d.startsWith('sha256:'));
    if (!digest) throw new WritError('ERR_FIELD_MISSING', `${file}: the report names no image manifest digest (sha256:...)`, { field: 'image.digest' });
    // A report without a scan time is as old as its file.
    const at = report.scannedAt ? Date.parse(report.scannedAt) : statSync(file).mtimeMs;
    const packages = new Map(report.packages.map((p) => [p.id, p]));
    const entry = byDigest.get(digest) ?? { scannedAt: 0, scanners: new Set<string>(), findings: [] };
    entry.scannedAt = Math.max(entry.scannedAt, at);
    entry.scanners.add(report.scanner.name);
    for (const f of report.findings) {
      const p = packages.get(f.packageRef);
      const s = suppressions.match(
        {
          vulnId: f.id,
          aliases: f.aliases,
          imageDigest: digest,
          repositories: report.image.names,
          packageName: p?.name ?? '',
          ...(p?.purl ? { purl: p.purl } : {}),
        },
        now,
      );
      entry.findings.push({
        id: f.id,
        severity: f.severity,
        status: f.status,
        package: packages.get(f.packageRef)?.name ?? f.packageRef,
        installed: f.installed,
        ...(f.fixed ? { fixed: f.fixed } : {}),
        ...(s ? { suppressed: { by: s.by, name: s.name, reason: s.reason } } : {}),
      });
    }
    byDigest.set(digest, entry);
  }
  return {
    async vulnerabilities(digest: string): Promise<ImageVulnerabilities> {
      const e = byDigest.get(digest);
      return e ? { report: { scannedAt: e.scannedAt, scanners: [...e.scanners].sort(), findings: e.findings } } : {};
    },
  };
}
