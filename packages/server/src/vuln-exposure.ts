/**
 * Who runs a vulnerability now: the images whose latest report carries it (store `affected`, as
 * ID or alias), at or above a severity, with findings a VulnException or VEX statement suppresses
 * left out, and the workloads running those images now. Containment (quarantine) and the
 * vulnerability events both start from this answer.
 */
import { SEVERITIES, type Severity } from '@writ/vuln';
import type { SuppressionSet } from '@writ/vuln';
import { loadSuppressions } from './suppressions.ts';
import type { RunningWorkload, Store } from './store/types.ts';

/** Index in SEVERITIES: lower is worse. */
export const severityRank = (s: Severity): number => SEVERITIES.indexOf(s);
/** Whether `s` is at or above `min` (critical > high > medium > low > negligible > unknown). */
export const atLeast = (s: Severity, min: Severity): boolean => severityRank(s) <= severityRank(min);

export interface ExposedImage {
  readonly digest: string;
  readonly names: readonly string[];
  /** The worst severity of its unsuppressed findings of the vulnerability. */
  readonly severity: Severity;
  /** The packages it is in. */
  readonly packages: readonly string[];
  readonly running: readonly RunningWorkload[];
}

/**
 * The images carrying `vulnId` at or above `minSeverity` (unsuppressed), with what runs them now.
 * @example await exposure(store, 'CVE-2026-31337', 'high', Date.now())
 */
export async function exposure(store: Store, vulnId: string, minSeverity: Severity, now: number, suppressions?: SuppressionSet): Promise<ExposedImage[]> {
  const rows = await store.affected(vulnId, now);
  const s = suppressions ?? (await loadSuppressions(store, now));
  const by = new Map<string, { names: readonly string[]; severity: Severity; packages: Set<string>; running: readonly RunningWorkload[] }>();
  for (const r of rows) {
    if (!atLeast(r.finding.severity, minSeverity)) continue;
    const suppressed = s.match(
      {
        vulnId: r.finding.id,
        aliases: r.finding.aliases,
        imageDigest: r.image.digest,
        repositories: r.image.names,
        packageName: r.package?.name ?? '',
        ...(r.package?.purl ? { purl: r.package.purl } : {}),
      },
      now,
    );
    if (suppressed) continue;
    const e = by.get(r.image.digest) ?? { names: r.image.names, severity: r.finding.severity, packages: new Set<string>(), running: r.running };
    if (severityRank(r.finding.severity) < severityRank(e.severity)) e.severity = r.finding.severity;
    if (r.package) e.packages.add(`${r.package.name} ${r.package.version}`);
    by.set(r.image.digest, e);
  }
  return [...by].map(([digest, e]) => ({ digest, names: e.names, severity: e.severity, packages: [...e.packages].sort(), running: e.running }));
}
