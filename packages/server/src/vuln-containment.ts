/**
 * Containment of a vulnerability (`POST /v1/vulnerabilities/{id}/quarantine`, `writ vuln
 * quarantine`, `writ vuln affected --quarantine`): every identity running an affected image now is
 * quarantined, in one store write, through the same quarantine every agent already enforces. The
 * entry's reason starts with the vulnerability in brackets (`[CVE-2026-31337] ...`), which is how
 * a rollout tells which quarantines a vulnerability caused (`quarantineVulnerability`).
 */
import type { Severity } from '@writ/vuln';
import { exposure } from './vuln-exposure.ts';
import { Suppressions } from './suppressions.ts';
import type { QuarantineEntry, Store } from './store/types.ts';

/** The reason a containment writes: the vulnerability first, so the entry says what caused it. */
export const containmentReason = (vulnId: string, reason: string): string => `[${vulnId}] ${reason}`;

/** The vulnerability a containment quarantine was for, read back from its reason (undefined for any other quarantine). */
export function quarantineVulnerability(reason: string): string | undefined {
  return /^\[([^\]\s]{1,200})\] /.exec(reason)?.[1];
}

export interface ContainedIdentity {
  readonly spiffeId: string;
  /** The affected images it runs now, and where. */
  readonly workloads: ReadonlyArray<{
    readonly digest: string;
    readonly node: string | null;
    readonly namespace: string | null;
    readonly pod: string | null;
    readonly owner: string | null;
  }>;
}

export interface Containment {
  readonly vulnerability: string;
  /** Images carrying it at or above the severity, unsuppressed. */
  readonly images: ReadonlyArray<{ readonly digest: string; readonly severity: Severity; readonly running: number }>;
  /** Quarantined by this call. */
  readonly quarantined: readonly ContainedIdentity[];
  /** Running an affected image, but quarantined already (their entry is left as it was). */
  readonly alreadyQuarantined: readonly ContainedIdentity[];
  readonly reason: string;
  readonly expiresAt: number | null;
}

export async function contain(
  store: Store,
  o: { vulnId: string; reason: string; ttlMs?: number; minSeverity: Severity; createdBy: string; now: number; dryRun?: boolean },
  suppressions = new Suppressions(store),
): Promise<Containment> {
  const images = await exposure(store, o.vulnId, o.minSeverity, o.now, await suppressions.load(o.now));
  const identities = new Map<string, ContainedIdentity['workloads'][number][]>();
  for (const img of images)
    for (const w of img.running)
      for (const id of w.spiffeIds) {
        const list = identities.get(id) ?? [];
        list.push({ digest: img.digest, node: w.node, namespace: w.namespace, pod: w.podName, owner: w.owner });
        identities.set(id, list);
      }
  const reason = containmentReason(o.vulnId, o.reason);
  const expiresAt = o.ttlMs === undefined ? null : o.now + o.ttlMs;
  const entries: QuarantineEntry[] = [...identities.keys()]
    .sort()
    .map((spiffeId) => ({ spiffeId, reason, createdBy: o.createdBy, createdAt: o.now, expiresAt }));
  let added: Set<string>;
  if (o.dryRun) {
    const live = new Set((await store.listQuarantine(o.now)).map((q) => q.spiffeId));
    added = new Set(entries.filter((e) => !live.has(e.spiffeId)).map((e) => e.spiffeId));
  } else added = new Set((await store.putQuarantines(entries, o.now)).map((q) => q.spiffeId));
  const of = (id: string): ContainedIdentity => ({ spiffeId: id, workloads: identities.get(id)! });
  return {
    vulnerability: o.vulnId,
    images: images.map((i) => ({ digest: i.digest, severity: i.severity, running: i.running.length })),
    quarantined: entries.filter((e) => added.has(e.spiffeId)).map((e) => of(e.spiffeId)),
    alreadyQuarantined: entries.filter((e) => !added.has(e.spiffeId)).map((e) => of(e.spiffeId)),
    reason,
    expiresAt,
  };
}

/** The quarantines in force at `now` that containment of `vulnId` wrote, by SPIFFE ID. */
export async function containmentQuarantines(store: Store, vulnId: string, now: number): Promise<Map<string, QuarantineEntry>> {
  return new Map((await store.listQuarantine(now)).filter((q) => quarantineVulnerability(q.reason) === vulnId).map((q) => [q.spiffeId, q]));
}

/**
 * A rollout identity's containment: its quarantine for the vulnerability, while in force. (Whether it
 * may be lifted is the operator's call: a quarantined workload gets no SVIDs, so its agent stops
 * reporting it, and the running set cannot tell a pod that still runs the affected digest from one gone.)
 */
export function containmentState(q: QuarantineEntry | undefined) {
  if (!q) return null;
  return { reason: q.reason, expiresAt: q.expiresAt === null ? null : new Date(q.expiresAt).toISOString() };
}
