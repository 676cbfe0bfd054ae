/**
 * The answers of issue 13, section 4: which images carry a vulnerability and where to fix it, which
 * workloads run them now and who owns them, whether the fix is running, and the vulnerability list.
 * The store finds the rows (a few set queries); this module applies suppressions and shapes them.
 * Every answer is JSON-ready and stable: sorted, every field present (null when unknown).
 */
import { containmentQuarantines, containmentState } from './vuln-containment.ts';
import {
  Lineage,
  type LineageImage,
  normalizeVulnId,
  repositoryOf,
  SEVERITIES,
  type Severity,
  type Suppression,
  type SuppressionSet,
  whereToFix,
  type FixAdvice,
} from '@writ/vuln';
import { Suppressions } from './suppressions.ts';
import {
  type AffectedPage,
  type AffectedPageQuery,
  type AffectedRow,
  type ImageDetail,
  type LinkedImage,
  RUNNING_GRACE_MS,
  type RunningWorkload,
  type Store,
  type VulnerabilityQuery,
  type Workload,
} from './store/types.ts';

const rank = (s: Severity): number => SEVERITIES.indexOf(s);
const iso = (t: number | null): string | null => (t === null ? null : new Date(t).toISOString());
const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** The lineage view of a stored image: base annotations also from labels, references first by tag. */
export function lineageImage(i: LinkedImage | ImageDetail['image']): LineageImage {
  const annotations: Record<string, string> = { ...i.annotations };
  for (const key of ['org.opencontainers.image.base.name', 'org.opencontainers.image.base.digest'])
    if (annotations[key] === undefined && i.labels[key] !== undefined) annotations[key] = i.labels[key];
  return {
    digest: i.digest,
    indexDigest: i.indexDigest ?? undefined,
    platform: i.platform ?? undefined,
    names: [...i.tags, ...i.names],
    diffIds: i.layers,
    annotations,
    created: i.created === null ? undefined : new Date(i.created).toISOString(),
  };
}

export const repositoriesOf = (i: { readonly names: readonly string[]; readonly tags: readonly string[] }): string[] =>
  [...new Set([...i.names, ...i.tags].map(repositoryOf))].sort();

export const suppressionJson = (s: Suppression | undefined) =>
  s === undefined ? null : { by: s.by, name: s.name, reason: s.reason, owner: s.owner ?? null, expires: s.expires ?? null, status: s.status ?? null };

export const workloadJson = (w: Workload & { readonly manifestDigest?: string }) => ({
  spiffeIds: w.spiffeIds,
  owner: w.owner,
  node: w.node,
  namespace: w.namespace,
  pod: w.podName,
  podOwner: w.podOwner,
  container: w.containerName,
  containerId: w.containerId,
  imageDigest: w.imageDigest,
  ...(w.manifestDigest === undefined ? {} : { manifestDigest: w.manifestDigest }),
  agentId: w.agentId,
  firstSeen: new Date(w.firstSeen).toISOString(),
  lastSeen: new Date(w.lastSeen).toISOString(),
  endedAt: iso(w.endedAt),
});

const refJson = (r: { readonly digest: string | undefined | null; readonly name: string | undefined | null } | undefined) =>
  r === undefined ? null : { digest: r.digest ?? null, name: r.name ?? null };

const fixJson = (f: FixAdvice) => ({
  where: f.where,
  layer: f.layer,
  base: refJson(f.base),
  introducedBy: refJson(f.introducedBy),
  newerBases: f.newerBases.map((b) => ({ digest: b.digest, names: b.names ?? [], created: b.created ?? null })),
  fixedVersion: f.fixedVersion ?? null,
});

function suppressionOf(sup: SuppressionSet, row: AffectedRow, now: number): Suppression | undefined {
  return sup.match(
    {
      vulnId: row.finding.id,
      aliases: row.finding.aliases,
      imageDigest: row.image.digest,
      repositories: repositoriesOf(row.image),
      packageName: row.package?.name ?? '',
      ...(row.package?.purl ? { purl: row.package.purl } : {}),
    },
    now,
  );
}

/** Owners sorted by name (no owner last), each with its workloads sorted by SPIFFE ID, node, pod. */
function byOwner<T extends Workload>(workloads: readonly T[]): { owner: string | null; workloads: T[] }[] {
  const groups = new Map<string | null, T[]>();
  for (const w of workloads) {
    const list = groups.get(w.owner);
    if (list === undefined) groups.set(w.owner, [w]);
    else list.push(w);
  }
  const key = (w: Workload): string => `${w.spiffeIds[0] ?? ''}\u0000${w.node ?? ''}\u0000${w.namespace ?? ''}\u0000${w.podName ?? ''}\u0000${w.key}`;
  return [...groups.entries()]
    .sort(([a], [b]) => (a === null ? 1 : b === null ? -1 : cmp(a, b)))
    .map(([owner, list]) => ({ owner, workloads: list.sort((x, y) => cmp(key(x), key(y))) }));
}

/**
 * A small `Lineage` per image over its stored parent chain and the images of its bases'
 * repositories (cached by image): one over the whole answer would compare every image sharing a
 * bottom layer with every other, quadratic when ten thousand images share one base.
 */
function lineageFor(images: readonly LinkedImage[]): (image: LinkedImage) => { lineage: Lineage; self: LineageImage } {
  const byDigest = new Map(images.map((i) => [i.digest, i]));
  const byRepo = new Map<string, LinkedImage[]>();
  for (const i of images) for (const repo of repositoriesOf(i)) byRepo.set(repo, [...(byRepo.get(repo) ?? []), i]);
  const cache = new Map<string, { lineage: Lineage; self: LineageImage }>();
  return (image) => {
    const hit = cache.get(image.digest);
    if (hit !== undefined) return hit;
    const set = new Map<string, LinkedImage>([[image.digest, image]]);
    let cur: LinkedImage | undefined = image;
    while (cur?.parent?.digest) {
      const p = byDigest.get(cur.parent.digest);
      if (p === undefined || set.has(p.digest)) break;
      set.set(p.digest, p);
      for (const repo of repositoriesOf(p)) for (const c of byRepo.get(repo) ?? []) if (!set.has(c.digest)) set.set(c.digest, c);
      cur = p;
    }
    const self = lineageImage(image);
    const made = { lineage: new Lineage([self, ...[...set.values()].filter((i) => i.digest !== image.digest).map(lineageImage)]), self };
    cache.set(image.digest, made);
    return made;
  };
}

/** The default page of `affected`: enough for every vulnerability in most images; the totals always count everything. */
export const AFFECTED_PAGE: AffectedPageQuery = { limit: 100, workloadLimit: 1000 };

/**
 * The page the store would give, from every row in memory with suppressions applied: for a
 * vulnerability a suppression may touch, whose totals count only what is not suppressed.
 */
function pageOfRows(
  rows: readonly AffectedRow[],
  sup: SuppressionSet,
  now: number,
  q: AffectedPageQuery,
): Omit<AffectedPage, 'bases'> & { suppressedImages: number } {
  const live = new Map<string, boolean>();
  const runningOf = new Map<string, readonly RunningWorkload[]>();
  for (const r of rows) {
    live.set(r.image.digest, live.get(r.image.digest) === true || suppressionOf(sup, r, now) === undefined);
    runningOf.set(r.image.digest, r.running);
  }
  const digests = [...live.keys()].sort(cmp);
  const owners = new Map<string | null, { workloads: number; images: Set<string> }>();
  for (const [digest, running] of runningOf)
    if (live.get(digest))
      for (const w of running) {
        const o = owners.get(w.owner) ?? { workloads: 0, images: new Set<string>() };
        o.workloads++;
        o.images.add(w.imageDigest ?? digest);
        owners.set(w.owner, o);
      }
  const from = q.after === undefined ? 0 : digests.findIndex((d) => d > q.after!);
  const page = new Set(from < 0 ? [] : digests.slice(from, from + q.limit));
  const listed = new Set(
    [...page]
      .flatMap((d) => runningOf.get(d) ?? [])
      .sort((a, b) => cmp(a.agentId, b.agentId) || cmp(a.key, b.key))
      .slice(0, q.workloadLimit),
  );
  const ownerList = [...owners.entries()]
    .map(([owner, o]) => ({ owner, workloads: o.workloads, images: o.images.size }))
    .sort((a, b) => (a.owner === null ? 1 : b.owner === null ? -1 : cmp(a.owner, b.owner)));
  return {
    images: digests.filter((d) => live.get(d)).length,
    carrying: digests,
    suppressedImages: digests.filter((d) => !live.get(d)).length,
    workloads: ownerList.reduce((n, o) => n + o.workloads, 0),
    owners: ownerList,
    rows: rows.filter((r) => page.has(r.image.digest)).map((r) => ({ ...r, running: r.running.filter((w) => listed.has(w)) })),
    runningByImage: new Map([...page].map((d) => [d, runningOf.get(d)?.length ?? 0])),
    next: page.size > 0 && from + page.size < digests.length ? [...page][page.size - 1]! : null,
  };
}

/**
 * `GET /v1/vulnerabilities/{id}/affected`: one page of the images (by digest) with where to fix,
 * the workloads running them now by owner (at most `workloadLimit` listed, all counted), and totals
 * over every image. When no suppression can touch the vulnerability the store counts in SQL and
 * loads only the page; otherwise every row is read and suppressions decide what counts.
 */
export async function affectedAnswer(store: Store, vulnId: string, now: number, q: AffectedPageQuery = AFFECTED_PAGE, suppressions = new Suppressions(store)) {
  // The store's page is asked for at once, beside the suppressions (one round trip less on PostgreSQL);
  // it is dropped in the rare case that a suppression may touch the vulnerability.
  const storePage = store.affectedPage(vulnId, now, q);
  storePage.catch(() => undefined);
  const sup = await suppressions.load(now);
  // The store files findings under normalized IDs; a suppression about an ID in another form is matched in memory.
  const ids = sup.ids();
  const exotic = ids.some((id) => {
    try {
      return normalizeVulnId(id) !== id;
    } catch {
      return true;
    }
  });
  const p: Omit<AffectedPage, 'bases'> & { suppressedImages: number; bases?: AffectedPage['bases'] } =
    exotic || (await store.filedAlsoUnder(vulnId, ids))
      ? pageOfRows(await store.affected(vulnId, now), sup, now, q)
      : { ...(await storePage), suppressedImages: 0 };
  const rows = p.rows;
  const byDigest = new Map(rows.map((r) => [r.image.digest, r.image]));
  const bases = p.bases ?? (rows.length === 0 ? [] : await store.baseImagesOf([...byDigest.values()]));
  const lineageOf = lineageFor([...byDigest.values(), ...bases]);
  // A candidate newer base is named only when it is known to be free of it: reported, and not carrying it.
  // (An image of another page carrying it is no candidate either.)
  const carrying = new Set(p.carrying);
  const candidates = bases.filter((i) => !carrying.has(i.digest)).map((i) => i.digest);
  const reported =
    p.bases === undefined
      ? new Set(candidates.length === 0 ? [] : await store.reportedDigests(candidates))
      : new Set(p.bases.filter((b) => b.reported).map((b) => b.digest));
  const carries = (c: LineageImage): boolean => carrying.has(c.digest) || !reported.has(c.digest);

  const images = new Map<string, { image: LinkedImage; running: readonly RunningWorkload[]; packages: ReturnType<typeof packageJson>[] }>();
  function packageJson(r: AffectedRow, suppressed: Suppression | undefined, fix: FixAdvice) {
    return {
      scanner: r.scanner,
      reportId: r.reportId,
      scannedAt: iso(r.scannedAt),
      findingId: r.finding.id,
      aliases: r.finding.aliases,
      severity: r.finding.severity,
      status: r.finding.status,
      name: r.package?.name ?? null,
      version: r.package?.version ?? r.finding.installed,
      type: r.package?.type ?? null,
      purl: r.package?.purl ?? null,
      layer: r.package?.layer ?? null,
      installed: r.finding.installed,
      fixed: r.finding.fixed,
      fix: fixJson(fix),
      suppressed: suppressionJson(suppressed),
    };
  }
  for (const r of rows) {
    const entry = images.get(r.image.digest) ?? { image: r.image, running: r.running, packages: [] };
    images.set(r.image.digest, entry);
    const { lineage, self } = lineageOf(r.image);
    entry.packages.push(packageJson(r, suppressionOf(sup, r, now), whereToFix(lineage, self, { layer: r.package?.layer, fixed: r.finding.fixed }, carries)));
  }
  const out = [...images.values()].map(({ image, running, packages }) => {
    const affected = packages.some((p) => p.suppressed === null);
    const live = packages.filter((p) => p.suppressed === null);
    const severity = (live.length > 0 ? live : packages).map((p) => p.severity).sort((a, b) => rank(a) - rank(b))[0] ?? 'unknown';
    const parent = image.parent;
    return {
      digest: image.digest,
      indexDigest: image.indexDigest,
      names: image.names,
      tags: image.tags,
      base: parent === null ? null : { digest: parent.digest, name: parent.name, source: parent.source },
      severity,
      affected,
      packages,
      running: p.runningByImage.get(image.digest) ?? running.length,
      workloads: running,
    };
  });
  const listed = new Map(byOwner(out.filter((i) => i.affected).flatMap((i) => i.workloads)).map((g) => [g.owner, g.workloads]));
  const workloadsListed = out.reduce((n, i) => n + i.workloads.length, 0);
  return {
    vulnerability: vulnId,
    images: out.map(({ workloads: _w, ...rest }) => rest),
    counts: {
      images: p.images,
      suppressedImages: p.suppressedImages,
      workloads: p.workloads,
      owners: p.owners.length,
    },
    owners: p.owners.map((o) => ({ owner: o.owner, count: o.workloads, images: o.images, workloads: (listed.get(o.owner) ?? []).map(workloadJson) })),
    suppressedWorkloads: out
      .filter((i) => !i.affected)
      .flatMap((i) => i.workloads)
      .map(workloadJson),
    page: { after: q.after ?? null, limit: q.limit, next: p.next, workloadLimit: q.workloadLimit, workloadsListed },
  };
}

export type AffectedAnswer = Awaited<ReturnType<typeof affectedAnswer>>;

export type IdentityStatus = 'verified' | 'not verified' | 'unverified';

/**
 * `GET /v1/vulnerabilities/{id}/rollout`: per owner and identity (every SPIFFE ID that ever ran an
 * affected digest, from the kept workload history), the instances still running an affected digest,
 * and the replacement digests it runs now. "verified" only when no instance runs an affected digest
 * and every replacement has a report free of the vulnerability; a replacement without a report is
 * "unverified" (reason `no report`).
 */
export async function rolloutAnswer(store: Store, vulnId: string, now: number, suppressions = new Suppressions(store)) {
  const [rows, sup] = await Promise.all([store.affected(vulnId, now), suppressions.load(now)]);
  const affected = new Set<string>();
  const suppressedOnly = new Set<string>();
  const byDigest = new Map<string, AffectedRow[]>();
  for (const r of rows) byDigest.set(r.image.digest, [...(byDigest.get(r.image.digest) ?? []), r]);
  // A reported digest may be a manifest's index digest: the runtime reports whichever it pulled.
  const manifestOf = new Map<string, string>();
  for (const [digest, list] of byDigest) {
    const image = list[0]!.image;
    manifestOf.set(digest, digest);
    if (image.indexDigest !== null) manifestOf.set(image.indexDigest, digest);
    if (list.some((r) => suppressionOf(sup, r, now) === undefined)) affected.add(digest);
    else suppressedOnly.add(digest);
  }
  const isAffected = (d: string | null): boolean => d !== null && affected.has(manifestOf.get(d) ?? '');
  const { history, running } = affected.size === 0 ? { history: [], running: [] } : await store.rolloutWorkloads([...affected], now);
  const replacementDigests = [...new Set(running.filter((w) => !isAffected(w.imageDigest) && w.imageDigest !== null).map((w) => w.imageDigest!))];
  const reported = new Set(replacementDigests.length === 0 ? [] : await store.reportedDigests(replacementDigests));
  // Containment (vuln-containment.ts): the quarantines this vulnerability caused, still in force.
  const contained = await containmentQuarantines(store, vulnId, now);

  const identities = [...new Set(history.flatMap((w) => w.spiffeIds))].sort();
  const result = identities.map((spiffeId) => {
    const mine = running.filter((w) => w.spiffeIds.includes(spiffeId));
    const still = mine.filter((w) => isAffected(w.imageDigest));
    const replacements = [...new Set(mine.filter((w) => !isAffected(w.imageDigest)).map((w) => w.imageDigest))]
      .sort((a, b) => cmp(a ?? '', b ?? ''))
      .map((digest) => {
        const state =
          digest === null ? 'no report' : suppressedOnly.has(manifestOf.get(digest) ?? '') ? 'suppressed' : reported.has(digest) ? 'free' : 'no report';
        return { digest, state: state as 'free' | 'suppressed' | 'no report', instances: mine.filter((w) => w.imageDigest === digest).length };
      });
    const status: IdentityStatus = still.length > 0 ? 'not verified' : replacements.some((r) => r.state === 'no report') ? 'unverified' : 'verified';
    const past = history.filter((w) => w.spiffeIds.includes(spiffeId)).sort((a, b) => b.lastSeen - a.lastSeen);
    const owner = mine[0]?.owner ?? past[0]?.owner ?? null;
    return {
      owner,
      spiffeId,
      status,
      reason: status === 'unverified' ? 'no report' : status === 'not verified' ? 'an instance runs an affected digest' : null,
      affectedInstances: still.map(workloadJson),
      replacements,
      running: mine.length,
      affectedDigestsSeen: [...new Set(past.map((w) => manifestOf.get(w.imageDigest ?? '') ?? w.imageDigest))].sort(),
      quarantine: containmentState(contained.get(spiffeId)),
    };
  });
  // Workloads without a SPIFFE ID still running an affected digest keep the rollout unverified too.
  const anonymous = history.filter((w) => w.spiffeIds.length === 0 && w.endedAt === null && isAffected(w.imageDigest) && w.lastSeen >= now - RUNNING_GRACE_MS);
  const owners = new Map<string | null, typeof result>();
  for (const r of result) owners.set(r.owner, [...(owners.get(r.owner) ?? []), r]);
  const verified = result.every((r) => r.status === 'verified') && anonymous.length === 0;
  return {
    vulnerability: vulnId,
    verified,
    status: verified ? 'verified' : 'not verified',
    counts: {
      identities: result.length,
      verified: result.filter((r) => r.status === 'verified').length,
      notVerified: result.filter((r) => r.status === 'not verified').length,
      unverified: result.filter((r) => r.status === 'unverified').length,
      affectedInstances: result.reduce((n, r) => n + r.affectedInstances.length, 0) + anonymous.length,
    },
    owners: [...owners.entries()]
      .sort(([a], [b]) => (a === null ? 1 : b === null ? -1 : cmp(a, b)))
      .map(([owner, ids]) => ({ owner, identities: ids.map(({ owner: _o, ...rest }) => rest) })),
    unidentified: anonymous.map(workloadJson),
  };
}

export type RolloutAnswer = Awaited<ReturnType<typeof rolloutAnswer>>;

/** `GET /v1/vulnerabilities`: one line per vulnerability of the latest reports, suppressed findings not counted. */
export async function listAnswer(store: Store, q: VulnerabilityQuery, suppressions = new Suppressions(store)) {
  const [rows, sup, runningDigests] = await Promise.all([store.listVulnerabilities(q), suppressions.load(q.now), store.runningImageDigests(q.now)]);
  const running = new Set(runningDigests);
  const byId = new Map<
    string,
    {
      severity: Severity;
      aliases: Set<string>;
      images: Set<string>;
      fixed: Set<string>;
      packages: Set<string>;
      suppressed: Set<string>;
      imageNames: Set<string>;
    }
  >();
  for (const r of rows) {
    const e = byId.get(r.vulnId) ?? {
      severity: 'unknown' as Severity,
      aliases: new Set<string>(),
      images: new Set<string>(),
      fixed: new Set<string>(),
      packages: new Set<string>(),
      suppressed: new Set<string>(),
      imageNames: new Set<string>(),
    };
    byId.set(r.vulnId, e);
    const s = sup.match(
      {
        vulnId: r.vulnId,
        aliases: r.aliases,
        imageDigest: r.imageDigest,
        repositories: [...new Set(r.names.map(repositoryOf))].sort(),
        packageName: r.packageName ?? '',
        ...(r.purl ? { purl: r.purl } : {}),
      },
      q.now,
    );
    if (s !== undefined) {
      e.suppressed.add(r.imageDigest);
      continue;
    }
    if (rank(r.severity) < rank(e.severity)) e.severity = r.severity;
    for (const a of r.aliases) e.aliases.add(a);
    e.images.add(r.imageDigest);
    if (r.fixed) e.fixed.add(r.fixed);
    if (r.packageName) e.packages.add(r.packageName);
  }
  const out = [...byId.entries()]
    .filter(([, e]) => e.images.size > 0)
    .map(([id, e]) => ({
      id,
      aliases: [...e.aliases].sort(),
      severity: e.severity,
      images: e.images.size,
      runningImages: [...e.images].filter((d) => running.has(d)).length,
      fixable: e.fixed.size > 0,
      fixedVersions: [...e.fixed].sort(),
      packages: [...e.packages].sort(),
      suppressedImages: [...e.suppressed].filter((d) => !e.images.has(d)).length,
    }))
    .sort((a, b) => rank(a.severity) - rank(b.severity) || b.images - a.images || cmp(a.id, b.id));
  return { vulnerabilities: out };
}

/** What `GET /v1/images/{digest}` adds: suppressions on each finding, the lineage and the workloads running it now. */
export async function imageAnswerExtras(store: Store, detail: ImageDetail, now: number, suppressions = new Suppressions(store)) {
  const [lin, running, sup] = await Promise.all([
    store.imageLineage(detail.image.digest),
    store.runningWorkloads([detail.image.digest], now),
    suppressions.load(now),
  ]);
  const repositories = repositoriesOf(detail.image);
  const suppressed = detail.reports.map((r) => {
    const pkgs = new Map(r.packages.map((p) => [p.ref, p]));
    return r.findings.map((f) =>
      suppressionJson(
        sup.match(
          {
            vulnId: f.id,
            aliases: f.aliases,
            imageDigest: detail.image.digest,
            repositories,
            packageName: pkgs.get(f.packageRef)?.name ?? '',
            ...(pkgs.get(f.packageRef)?.purl ? { purl: pkgs.get(f.packageRef)!.purl! } : {}),
          },
          now,
        ),
      ),
    );
  });
  const parents = lin.parents.map((p) => ({ digest: p.digest, name: p.name, source: p.source, baseLayers: p.baseLayers, inInventory: p.image !== null }));
  return {
    base: parents[0] ?? null,
    lineage: { parents, children: lin.children.map((c) => ({ digest: c.digest, names: c.names, tags: c.tags })) },
    workloads: byOwner(running).flatMap((g) => g.workloads.map(workloadJson)),
    suppressed,
  };
}
