/**
 * The admission webhook's `VulnerabilityChecker` (@writ/admission): an image's latest report of
 * each scanner from the inventory, merged, each finding with the suppression in force now
 * (VulnExceptions of the current policy revision, stored VEX statements). Pure evaluation stays in
 * @writ/admission; this only reads the store.
 */
import type { ImageVulnerabilities, ImageVulnerability, VulnerabilityChecker } from '@writ/admission';
import type { SuppressionSet } from '@writ/vuln';
import { Suppressions } from './suppressions.ts';
import type { ImageDetail, Store } from './store/types.ts';

/** The reports of an image that speak about vulnerabilities: scans (a CycloneDX BOM with an empty vulnerabilities list is a clean scan), not SBOMs. */
export function vulnerabilityReports(d: ImageDetail): ImageDetail['reports'] {
  return d.reports.filter((r) => r.vulnerabilityData || r.findingCount > 0);
}

/** An image's vulnerabilities as the gate weighs them, suppressions applied at `now`. */
export function imageVulnerabilities(d: ImageDetail | undefined, suppressions: SuppressionSet, now: number): ImageVulnerabilities {
  const reports = d ? vulnerabilityReports(d) : [];
  if (!d || reports.length === 0) return {};
  const findings: ImageVulnerability[] = [];
  for (const r of reports) {
    const packages = new Map(r.packages.map((p) => [p.ref, p]));
    for (const f of r.findings) {
      const p = packages.get(f.packageRef);
      const s = suppressions.match(
        {
          vulnId: f.id,
          aliases: f.aliases,
          imageDigest: d.image.digest,
          repositories: d.image.names,
          packageName: p?.name ?? '',
          ...(p?.purl ? { purl: p.purl } : {}),
        },
        now,
      );
      findings.push({
        id: f.id,
        severity: f.severity,
        status: f.status,
        package: p?.name ?? f.packageRef,
        installed: f.installed,
        ...(f.fixed ? { fixed: f.fixed } : {}),
        ...(s ? { suppressed: { by: s.by, name: s.name, reason: s.reason } } : {}),
      });
    }
  }
  const scannedAt = Math.max(...reports.map((r) => r.scannedAt ?? r.ingestedAt));
  return { report: { scannedAt, scanners: [...new Set(reports.map((r) => r.scanner))].sort(), findings } };
}

/** How long one read of the suppressions serves reviews; a policy or VEX write on this server drops it at once. */
const SUPPRESSIONS_TTL_MS = 1000;

/** The checker the webhook's evaluate() uses: the suppressions read once a second at most (VEX is a table scan), not per image. */
export function storeVulnerabilityChecker(store: Store, clock: () => number, sups = new Suppressions(store)): VulnerabilityChecker {
  let cached: { at: number; set: Promise<SuppressionSet> } | undefined;
  store.onChange((c) => {
    if (c.kind === 'policies' || c.kind === 'vex') cached = undefined;
  });
  const suppressions = (now: number): Promise<SuppressionSet> => {
    if (!cached || now - cached.at >= SUPPRESSIONS_TTL_MS || now < cached.at) {
      const set = sups.load(now);
      cached = { at: now, set };
      // A failed read is not kept.
      set.catch(() => (cached?.set === set ? (cached = undefined) : undefined));
    }
    return cached.set;
  };
  return {
    async vulnerabilities(digest: string): Promise<ImageVulnerabilities> {
      const now = clock();
      const [d, s] = await Promise.all([store.getImage(digest), suppressions(now)]);
      const own = imageVulnerabilities(d, s, now);
      if (own.report) return own;
      // A tag resolved to an image index: its platforms' manifests carry the reports. The node's
      // platform is not known here, so every platform counts: findings of any, the oldest scan.
      const platforms = await Promise.all((await store.platformDigests(digest)).map(async (p) => imageVulnerabilities(await store.getImage(p), s, now)));
      const reported = platforms.flatMap((p) => (p.report ? [p.report] : []));
      if (reported.length === 0) return own;
      return {
        report: {
          scannedAt: Math.min(...reported.map((r) => r.scannedAt)),
          scanners: [...new Set(reported.flatMap((r) => r.scanners))].sort(),
          // The same finding on several platforms is one.
          findings: [...new Map(reported.flatMap((r) => r.findings).map((f) => [`${f.id} ${f.package} ${f.installed}`, f])).values()],
        },
      };
    },
  };
}
