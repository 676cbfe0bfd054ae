/**
 * The answers (issue 13, section 4): which images carry a vulnerability, what runs them now, their
 * lineage. SQL shared by SQLite and PostgreSQL; every answer is a few set queries, never one per
 * image (the target is `affected` over 10,000 images and 100,000 workloads in under 100 ms).
 */
import type { FindingStatus, Severity } from '@writ/vuln';
import type { Row, SqlDriver, SqlValue } from './driver.ts';
import { IMAGE_COLUMNS, strOrNull, toInventoryImage } from './inventory-sql.ts';
import {
  type AffectedPage,
  type AffectedPageQuery,
  type AffectedRow,
  type ImageLineage,
  type ImageParent,
  type LinkedImage,
  RUNNING_GRACE_MS,
  type RunningWorkload,
  type VulnerabilityFindingRow,
  type VulnerabilityQuery,
  type Workload,
} from './types.ts';
import { OWNER_KEY_SQL, ownerOfKey, toWorkload, WORKLOAD_COLUMNS } from './workloads-sql.ts';

const CHUNK = 500;
const W = WORKLOAD_COLUMNS.split(', ')
  .map((c) => `w.${c}`)
  .join(', ');
const LINKED_COLUMNS = `${IMAGE_COLUMNS}, parent_digest, parent_name, parent_source, base_layers`;
/** LINKED_COLUMNS with '@' before each, for a table alias. */
const LINKED = LINKED_COLUMNS.split(', ')
  .map((c) => `@${c}`)
  .join(', ');
/** Statuses that mean the package is (or may be) affected: a `fixed` or `not_affected` finding carries nothing. */
const CARRIES = "f.status IN ('affected', 'under_investigation', 'unknown')";
const RUNNING = 'w.ended_at IS NULL AND w.last_seen >= ?';

const marks = (n: number): string => Array.from({ length: n }, () => '?').join(', ');
const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
  return out;
}

function toLinkedImage(r: Row): LinkedImage {
  const source = r['parent_source'] as string | null;
  const parent: ImageParent | null =
    source === 'annotation' || source === 'layers'
      ? {
          digest: strOrNull(r['parent_digest']),
          name: strOrNull(r['parent_name']),
          source,
          baseLayers: r['base_layers'] === null || r['base_layers'] === undefined ? null : num(r['base_layers']),
        }
      : null;
  return { ...toInventoryImage(r), parent };
}

function toRunning(r: Row): RunningWorkload {
  return { ...toWorkload(r), manifestDigest: r['manifest_digest'] as string };
}

const byWorkload = (a: Workload, b: Workload): number => (a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

/** The digests (manifest) whose latest report carries the vulnerability, as a subquery with one parameter. */
const AFFECTED_DIGESTS = `SELECT DISTINCT r.image_digest AS digest FROM finding_ids fi
  JOIN reports r ON r.id = fi.report_id
  JOIN report_findings f ON f.report_id = fi.report_id AND f.idx = fi.idx
  WHERE fi.vuln_id = ? AND r.latest = 1 AND ${CARRIES}`;

export async function loadLinkedImages(db: SqlDriver, digests: readonly string[]): Promise<Map<string, LinkedImage>> {
  const out = new Map<string, LinkedImage>();
  for (const c of chunks([...new Set(digests)]))
    for (const r of await db.query(`SELECT ${LINKED_COLUMNS} FROM images WHERE digest IN (${marks(c.length)})`, c))
      out.set(r['digest'] as string, toLinkedImage(r));
  return out;
}

const FINDING_ROWS = `SELECT r.id AS report_id, r.image_digest, r.scanner, r.scanned_at, f.vuln_id, f.aliases, f.severity, f.status, f.installed, f.fixed,
       p.name AS p_name, p.version AS p_version, p.type AS p_type, p.purl AS p_purl, p.layer AS p_layer
     FROM finding_ids fi
     JOIN reports r ON r.id = fi.report_id
     JOIN report_findings f ON f.report_id = fi.report_id AND f.idx = fi.idx
     LEFT JOIN report_packages p ON p.report_id = f.report_id AND p.ref = f.package_ref
     WHERE fi.vuln_id = ? AND r.latest = 1 AND ${CARRIES}`;

/** Index digest -> the given images (manifest digests) listed under it. */
function indexDigestsOf(images: Iterable<LinkedImage>): Map<string, string[]> {
  const byIndex = new Map<string, string[]>();
  for (const i of images) if (i.indexDigest !== null) byIndex.set(i.indexDigest, [...(byIndex.get(i.indexDigest) ?? []), i.digest]);
  return byIndex;
}

/** Workloads running now by their manifest digest (or the index digest of one), sorted, at most `limit` for `digests`. */
async function runningOn(
  db: SqlDriver,
  digests: { sql: string; params: SqlValue[] } | readonly string[],
  byIndex: Map<string, string[]>,
  since: number,
  limit?: number,
): Promise<RunningWorkload[]> {
  const cap = limit === undefined ? '' : ` ORDER BY w.agent_id, w.wkey LIMIT ${Math.trunc(limit)}`;
  const out: RunningWorkload[] = [];
  if ('sql' in digests)
    out.push(
      ...(
        await db.query(`SELECT w.image_digest AS manifest_digest, ${W} FROM workloads w WHERE w.image_digest IN (${digests.sql}) AND ${RUNNING}${cap}`, [
          ...digests.params,
          since,
        ])
      ).map(toRunning),
    );
  else
    for (const c of chunks(digests))
      out.push(
        ...(
          await db.query(`SELECT w.image_digest AS manifest_digest, ${W} FROM workloads w WHERE w.image_digest IN (${marks(c.length)}) AND ${RUNNING}${cap}`, [
            ...c,
            since,
          ])
        ).map(toRunning),
      );
  for (const c of chunks([...byIndex.keys()]))
    for (const r of await db.query(`SELECT ${W} FROM workloads w WHERE w.image_digest IN (${marks(c.length)}) AND ${RUNNING}${cap}`, [...c, since])) {
      const w = toWorkload(r);
      for (const manifestDigest of byIndex.get(w.imageDigest!) ?? []) out.push({ ...w, manifestDigest });
    }
  out.sort(byWorkload);
  return limit === undefined ? out : out.slice(0, limit);
}

/** The rows of `affected`, for the images of `rows` (the finding rows) with their running workloads. */
async function affectedRows(db: SqlDriver, rows: Row[], running: (images: Map<string, LinkedImage>) => Promise<RunningWorkload[]>): Promise<AffectedRow[]> {
  if (rows.length === 0) return [];
  const images = await loadLinkedImages(
    db,
    rows.map((r) => r['image_digest'] as string),
  );
  return shapeRows(rows, images, await running(images));
}

/** Finding rows with their images and the workloads running them (sorted by workload), as `AffectedRow`s sorted by image, package, scanner. */
function shapeRows(rows: Row[], images: ReadonlyMap<string, LinkedImage>, running: readonly RunningWorkload[]): AffectedRow[] {
  const byDigest = new Map<string, RunningWorkload[]>();
  for (const w of running) {
    const list = byDigest.get(w.manifestDigest);
    if (list === undefined) byDigest.set(w.manifestDigest, [w]);
    else list.push(w);
  }
  const out: AffectedRow[] = [];
  for (const r of rows) {
    const digest = r['image_digest'] as string;
    const image = images.get(digest);
    if (image === undefined) continue;
    out.push({
      image,
      reportId: r['report_id'] as string,
      scanner: r['scanner'] as string,
      scannedAt: r['scanned_at'] === null || r['scanned_at'] === undefined ? null : num(r['scanned_at']),
      finding: {
        id: r['vuln_id'] as string,
        aliases: JSON.parse(r['aliases'] as string) as string[],
        severity: r['severity'] as Severity,
        status: r['status'] as FindingStatus,
        installed: r['installed'] as string,
        fixed: strOrNull(r['fixed']),
      },
      package:
        r['p_name'] === null || r['p_name'] === undefined
          ? null
          : {
              name: r['p_name'] as string,
              version: r['p_version'] as string,
              type: r['p_type'] as string,
              purl: strOrNull(r['p_purl']),
              layer: strOrNull(r['p_layer']),
            },
      running: byDigest.get(digest) ?? [],
    });
  }
  const key = (a: AffectedRow): string =>
    `${a.image.digest}\u0000${a.package?.name ?? ''}\u0000${a.package?.version ?? ''}\u0000${a.scanner}\u0000${a.finding.id}`;
  return out.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

export async function affected(db: SqlDriver, vulnId: string, now: number): Promise<AffectedRow[]> {
  const since = now - RUNNING_GRACE_MS;
  // Workloads by the digest the runtime reported: an affected manifest digest, or the index digest of one.
  // (IN over a subquery: the planners then look workloads up by image_digest, never the other way round.)
  return affectedRows(db, await db.query(FINDING_ROWS, [vulnId]), (images) =>
    runningOn(db, { sql: AFFECTED_DIGESTS, params: [vulnId] }, indexDigestsOf(images.values()), since),
  );
}

/**
 * One page of `affected` in two steps. First, beside the totals (the carrying digests from
 * `vuln_images`, the owners' totals from `workload_counts`), the page's images, chosen in SQL by the
 * same order and cursor; then, in parallel (PostgreSQL runs them on connections of its pool), the
 * page's findings, running counts, workload rows and base images, each given the page's digests as
 * values. Given a subquery instead, PostgreSQL estimated the page's workloads from the table and
 * scanned all 100,000 of them twice per answer (EXPLAIN ANALYZE in bench/vuln/affected-profile.ts).
 */
export async function affectedPage(db: SqlDriver, vulnId: string, now: number, q: AffectedPageQuery): Promise<AffectedPage> {
  const since = now - RUNNING_GRACE_MS;
  const after = q.after ?? '';
  const limit = Math.trunc(q.limit);
  const PAGE = `WITH page AS (SELECT DISTINCT image_digest AS digest FROM vuln_images WHERE vuln_id = ? AND image_digest > ? ORDER BY image_digest LIMIT ${limit})`;
  const totals = Promise.all([
    db.query('SELECT DISTINCT image_digest FROM vuln_images WHERE vuln_id = ? ORDER BY image_digest', [vulnId]),
    ownerTotals(db, vulnId, since),
  ]);
  totals.catch(() => undefined);
  const images = await db.query(`${PAGE} SELECT ${LINKED_COLUMNS} FROM images WHERE digest IN (SELECT digest FROM page) ORDER BY digest`, [vulnId, after]);
  const linked = new Map(images.map((r) => [r['digest'] as string, toLinkedImage(r)]));
  const page = [...linked.keys()];
  // A workload reporting a digest runs that manifest of the page, and every page image listed under it as index digest.
  const byIndex = indexDigestsOf(linked.values());
  // The digests the page's workloads may report: a manifest's, or the index digest of one.
  const reported = [...new Set([...page, ...byIndex.keys()])];
  // The page's parents in the inventory are among the family below (its images' `parent_digest`).
  const parents = [...new Set([...linked.values()].flatMap((i) => (i.parent?.digest ? [i.parent.digest] : [])))];
  const none = Promise.resolve([] as Row[]);
  const [rows, counts, listed, family] = await Promise.all([
    page.length === 0
      ? none
      : db.query(
          `${FINDING_ROWS} AND fi.report_id IN (SELECT v.report_id FROM vuln_images v WHERE v.vuln_id = ? AND v.image_digest IN (${marks(page.length)}))`,
          [vulnId, vulnId, ...page],
        ),
    reported.length === 0
      ? none
      : db.query(
          `SELECT w.image_digest AS d, COUNT(*) AS n FROM workloads w WHERE w.image_digest IN (${marks(reported.length)}) AND ${RUNNING} GROUP BY w.image_digest`,
          [...reported, since],
        ),
    reported.length === 0
      ? none
      : db.query(
          `SELECT ${W} FROM workloads w WHERE w.image_digest IN (${marks(reported.length)}) AND ${RUNNING} ORDER BY w.agent_id, w.wkey LIMIT ${Math.trunc(q.workloadLimit)}`,
          [...reported, since],
        ),
    parents.length === 0
      ? none
      : db.query(
          `WITH family AS (SELECT digest FROM images WHERE digest IN (${marks(parents.length)})
             UNION SELECT x.digest FROM image_repos y JOIN image_repos x ON x.repo = y.repo WHERE y.digest IN (${marks(parents.length)}))
           SELECT ${LINKED.replaceAll('@', 'b.')}, CASE WHEN ${REPORTED_IMAGE} THEN 1 ELSE 0 END AS reported,
             CASE WHEN EXISTS (SELECT 1 FROM images q WHERE q.digest = b.parent_digest) THEN 1 ELSE 0 END AS parent_known
           FROM images b WHERE b.digest IN (SELECT digest FROM family)${page.length ? ` AND b.digest NOT IN (${marks(page.length)})` : ''} ORDER BY b.digest`,
          [...parents, ...parents, ...page],
        ),
  ]);
  const [all, owners] = await totals;
  const digests = all.map((r) => r['image_digest'] as string);
  const from = digests.findIndex((d) => d > after);
  const pageSize = from < 0 ? 0 : Math.min(limit, digests.length - from);
  const next = pageSize > 0 && from + pageSize < digests.length ? digests[from + pageSize - 1]! : null;
  const manifestsOf = (d: string): string[] => [...(linked.has(d) ? [d] : []), ...(byIndex.get(d) ?? [])];
  const runningByImage = new Map<string, number>();
  for (const r of counts) for (const m of manifestsOf(r['d'] as string)) runningByImage.set(m, (runningByImage.get(m) ?? 0) + num(r['n']));
  const running = listed
    .map(toWorkload)
    .flatMap((w) => manifestsOf(w.imageDigest!).map((manifestDigest) => ({ ...w, manifestDigest })))
    .sort(byWorkload)
    .slice(0, q.workloadLimit);
  const pageRows = shapeRows(rows, linked, running);
  const ancestors = new Set(parents);
  const bases: Row[] = family.map((r) => ({ ...r, ancestor: ancestors.has(r['digest'] as string) ? 1 : 0 }));
  return {
    images: digests.length,
    carrying: digests,
    workloads: owners.reduce((n, o) => n + o.workloads, 0),
    owners,
    rows: pageRows,
    runningByImage,
    next,
    bases: oneLevel(linked, bases) ? bases.map((r) => ({ ...toLinkedImage(r), reported: num(r['reported']) === 1 })) : undefined,
  };
}

/** Whether the page's ancestors are all its images' parents: no parent's parent in the inventory is neither. */
function oneLevel(page: ReadonlyMap<string, LinkedImage>, family: readonly Row[]): boolean {
  const parents = new Set([...page.values()].flatMap((i) => (i.parent?.digest ? [i.parent.digest] : [])));
  return family.every(
    (r) => num(r['ancestor']) === 0 || num(r['parent_known']) === 0 || page.has(r['parent_digest'] as string) || parents.has(r['parent_digest'] as string),
  );
}

// What baseImagesOf and reportedDigests find, for the images of a page whose lineage is one level
// deep (the usual case: app -> base), in one statement: their parents in the inventory, those and
// the other images of the parents' repositories (`family`), whether a report is stored for each (by
// its digest, or as the index digest of one), and whether a parent's own parent is in the inventory
// (then the chain goes on, and the caller asks baseImagesOf).
const REPORTED_IMAGE = `(EXISTS (SELECT 1 FROM reports r WHERE r.image_digest = b.digest)
    OR EXISTS (SELECT 1 FROM images x JOIN reports r ON r.image_digest = x.digest WHERE x.index_digest = b.digest))`;

/**
 * Running workloads per owner over every image carrying `vulnId` (and the index digests listing
 * one), and how many of those digests each owner runs: the not-ended counts of `workload_counts`
 * less the workloads not ended but silent since `since` (few: an agent gone without a word).
 */
async function ownerTotals(db: SqlDriver, vulnId: string, since: number): Promise<{ owner: string | null; workloads: number; images: number }[]> {
  const rows = await db.query(
    `WITH d AS (SELECT image_digest AS digest FROM vuln_images WHERE vuln_id = ?
        UNION SELECT i.index_digest AS digest FROM vuln_images v JOIN images i ON i.digest = v.image_digest WHERE v.vuln_id = ? AND i.index_digest IS NOT NULL),
      c AS (SELECT c.image_digest, c.owner_key, c.n FROM d JOIN workload_counts c ON c.image_digest = d.digest WHERE c.n > 0),
      s AS (SELECT w.image_digest, ${OWNER_KEY_SQL('w.owner')} AS owner_key, COUNT(*) AS n FROM workloads w
        WHERE w.image_digest IN (SELECT digest FROM d) AND w.ended_at IS NULL AND w.last_seen < ? GROUP BY w.image_digest, ${OWNER_KEY_SQL('w.owner')})
     SELECT c.owner_key, SUM(c.n - COALESCE(s.n, 0)) AS n, SUM(CASE WHEN c.n > COALESCE(s.n, 0) THEN 1 ELSE 0 END) AS images
     FROM c LEFT JOIN s ON s.image_digest = c.image_digest AND s.owner_key = c.owner_key GROUP BY c.owner_key`,
    [vulnId, vulnId, since],
  );
  return rows
    .map((r) => ({ owner: ownerOfKey(r['owner_key'] as string), workloads: num(r['n']), images: num(r['images']) }))
    .filter((o) => o.workloads > 0)
    .sort((a, b) => (a.owner === null ? 1 : b.owner === null ? -1 : a.owner < b.owner ? -1 : a.owner > b.owner ? 1 : 0));
}

/** Whether a latest finding filed under `vulnId` is also filed under one of `ids` (a suppression about one of them could apply). */
export async function filedAlsoUnder(db: SqlDriver, vulnId: string, ids: readonly string[]): Promise<boolean> {
  if (ids.includes(vulnId)) return true;
  for (const c of chunks([...new Set(ids)]))
    if (
      (
        await db.query(
          `SELECT 1 AS x FROM finding_ids a JOIN finding_ids b ON b.report_id = a.report_id AND b.idx = a.idx WHERE a.vuln_id = ? AND b.vuln_id IN (${marks(c.length)}) LIMIT 1`,
          [vulnId, ...c],
        )
      ).length > 0
    )
      return true;
  return false;
}

export async function affectedDigests(db: SqlDriver, vulnId: string): Promise<string[]> {
  return (await db.query(`${AFFECTED_DIGESTS} ORDER BY digest`, [vulnId])).map((r) => r['digest'] as string);
}

/** Manifest digests running now, directly or through their index digest (one parameter, used twice). */
const RUNNING_DIGESTS = `SELECT w.image_digest AS digest FROM workloads w WHERE ${RUNNING} AND w.image_digest IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM images x WHERE x.index_digest = w.image_digest)
  UNION SELECT i.digest AS digest FROM images i JOIN workloads w ON w.image_digest = i.index_digest WHERE ${RUNNING}`;

export async function runningImageDigests(db: SqlDriver, now: number): Promise<string[]> {
  const since = now - RUNNING_GRACE_MS;
  return (await db.query(RUNNING_DIGESTS, [since, since])).map((r) => r['digest'] as string).sort();
}

export async function listVulnerabilities(db: SqlDriver, q: VulnerabilityQuery): Promise<VulnerabilityFindingRow[]> {
  const where = ['r.latest = 1', CARRIES];
  const args: SqlValue[] = [];
  if (q.severity !== undefined && q.severity.length > 0) {
    where.push(`f.severity IN (${marks(q.severity.length)})`);
    args.push(...q.severity);
  }
  if (q.fixable === true) where.push("f.fixed IS NOT NULL AND f.fixed <> ''");
  if (q.running === true) {
    const since = q.now - RUNNING_GRACE_MS;
    where.push(`r.image_digest IN (${RUNNING_DIGESTS})`);
    args.push(since, since);
  }
  const rows = await db.query(
    `SELECT f.vuln_id, f.aliases, f.severity, f.status, f.fixed, r.image_digest, i.names, i.tags, p.name AS p_name, p.purl AS p_purl
     FROM reports r JOIN report_findings f ON f.report_id = r.id JOIN images i ON i.digest = r.image_digest
     LEFT JOIN report_packages p ON p.report_id = f.report_id AND p.ref = f.package_ref
     WHERE ${where.join(' AND ')}`,
    args,
  );
  return rows.map((r) => ({
    vulnId: r['vuln_id'] as string,
    aliases: JSON.parse(r['aliases'] as string) as string[],
    severity: r['severity'] as Severity,
    status: r['status'] as FindingStatus,
    fixed: strOrNull(r['fixed']),
    imageDigest: r['image_digest'] as string,
    names: [...(JSON.parse(r['tags'] as string) as string[]), ...(JSON.parse(r['names'] as string) as string[])],
    packageName: strOrNull(r['p_name']),
    purl: strOrNull(r['p_purl']),
  }));
}

export async function imageLineage(db: SqlDriver, digest: string): Promise<ImageLineage> {
  const self = (await loadLinkedImages(db, [digest])).get(digest);
  if (self === undefined) return { parents: [], children: [] };
  const parents: (ImageParent & { image: LinkedImage | null })[] = [];
  const seen = new Set([digest]);
  let current: LinkedImage | undefined = self;
  while (current?.parent) {
    const p: ImageParent = current.parent;
    const image: LinkedImage | null = p.digest === null || seen.has(p.digest) ? null : ((await loadLinkedImages(db, [p.digest])).get(p.digest) ?? null);
    parents.push({ ...p, image });
    if (image === null) break;
    seen.add(image.digest);
    current = image;
  }
  const refs = [self.digest, ...(self.indexDigest === null ? [] : [self.indexDigest])];
  const children = (
    await db.query(`SELECT ${LINKED_COLUMNS} FROM images WHERE parent_digest IN (${marks(refs.length)}) AND digest <> ? ORDER BY digest`, [...refs, digest])
  ).map(toLinkedImage);
  return { parents, children };
}

export async function baseImagesOf(db: SqlDriver, images: readonly LinkedImage[]): Promise<LinkedImage[]> {
  const known = new Map(images.map((i) => [i.digest, i]));
  const found = new Map<string, LinkedImage>();
  // Ancestors, one level per query.
  const ancestors = new Set<string>();
  let frontier = [...images];
  while (frontier.length > 0) {
    for (const i of frontier) if (i.parent?.digest && known.has(i.parent.digest)) ancestors.add(i.parent.digest);
    const next = [...new Set(frontier.flatMap((i) => (i.parent?.digest && !known.has(i.parent.digest) ? [i.parent.digest] : [])))];
    if (next.length === 0) break;
    const loaded = await loadLinkedImages(db, next);
    for (const [d, i] of loaded) {
      known.set(d, i);
      found.set(d, i);
      ancestors.add(d);
    }
    frontier = [...loaded.values()];
  }
  // The other images of the ancestors' repositories: the candidate newer bases.
  const repos = new Set<string>();
  for (const c of chunks([...ancestors]))
    for (const r of await db.query(`SELECT DISTINCT repo FROM image_repos WHERE digest IN (${marks(c.length)})`, c)) repos.add(r['repo'] as string);
  for (const c of chunks([...repos]))
    for (const r of await db.query(
      `SELECT ${LINKED_COLUMNS} FROM images WHERE digest IN (SELECT digest FROM image_repos WHERE repo IN (${marks(c.length)}))`,
      c,
    )) {
      const d = r['digest'] as string;
      if (!known.has(d)) {
        const i = toLinkedImage(r);
        known.set(d, i);
        found.set(d, i);
      } else if (!found.has(d) && !images.some((x) => x.digest === d)) found.set(d, known.get(d)!);
    }
  // Ancestors that were among the given images are not repeated.
  for (const i of images) found.delete(i.digest);
  return [...found.values()];
}

async function workloadsOf(db: SqlDriver, digests: readonly string[], since: number | undefined): Promise<RunningWorkload[]> {
  const out: RunningWorkload[] = [];
  const cond = since === undefined ? '' : ` AND ${RUNNING}`;
  const tail: SqlValue[] = since === undefined ? [] : [since];
  for (const c of chunks([...new Set(digests)])) {
    out.push(
      ...(
        await db.query(`SELECT w.image_digest AS manifest_digest, ${W} FROM workloads w WHERE w.image_digest IN (${marks(c.length)})${cond}`, [...c, ...tail])
      ).map(toRunning),
    );
    // The runtime may report the index digest it pulled: those workloads run the manifest of their platform.
    const byIndex = new Map<string, string[]>();
    for (const r of await db.query(`SELECT digest, index_digest FROM images WHERE digest IN (${marks(c.length)}) AND index_digest IS NOT NULL`, c))
      byIndex.set(r['index_digest'] as string, [...(byIndex.get(r['index_digest'] as string) ?? []), r['digest'] as string]);
    if (byIndex.size === 0) continue;
    const idx = [...byIndex.keys()];
    for (const r of await db.query(`SELECT ${W} FROM workloads w WHERE w.image_digest IN (${marks(idx.length)})${cond}`, [...idx, ...tail])) {
      const w = toWorkload(r);
      for (const manifestDigest of byIndex.get(w.imageDigest!) ?? []) out.push({ ...w, manifestDigest });
    }
  }
  return out.sort(byWorkload);
}

export function runningWorkloads(db: SqlDriver, digests: readonly string[], now: number): Promise<RunningWorkload[]> {
  return workloadsOf(db, digests, now - RUNNING_GRACE_MS);
}

export async function rolloutWorkloads(db: SqlDriver, digests: readonly string[], now: number): Promise<{ history: RunningWorkload[]; running: Workload[] }> {
  const history = await workloadsOf(db, digests, undefined);
  const ids = [...new Set(history.flatMap((w) => w.spiffeIds))].sort();
  const running = new Map<string, Workload>();
  // spiffe_ids is a JSON array of strings: a quoted ID cannot match inside another one.
  for (let i = 0; i < ids.length; i += 50) {
    const c = ids.slice(i, i + 50);
    const rows = await db.query(`SELECT ${W} FROM workloads w WHERE ${RUNNING} AND (${c.map(() => "w.spiffe_ids LIKE ? ESCAPE '\\'").join(' OR ')})`, [
      now - RUNNING_GRACE_MS,
      ...c.map((id) => `%${JSON.stringify(id).replace(/[%_\\]/g, (ch) => `\\${ch}`)}%`),
    ]);
    for (const w of rows.map(toWorkload)) running.set(`${w.agentId}\u0000${w.key}`, w);
  }
  return { history, running: [...running.values()].sort(byWorkload) };
}

export async function reportedDigests(db: SqlDriver, digests: readonly string[]): Promise<string[]> {
  const found = new Set<string>();
  for (const c of chunks([...new Set(digests)])) {
    const rows = await db.query(
      `SELECT DISTINCT r.image_digest AS d FROM reports r WHERE r.image_digest IN (${marks(c.length)})
       UNION SELECT DISTINCT i.index_digest AS d FROM images i JOIN reports r ON r.image_digest = i.digest WHERE i.index_digest IN (${marks(c.length)})`,
      [...c, ...c],
    );
    for (const r of rows) found.add(r['d'] as string);
  }
  return digests.filter((d) => found.has(d));
}
