/** The image inventory and scanner reports (issue 13): SQL shared by SQLite and PostgreSQL. */
import { createHash, randomUUID } from 'node:crypto';
import { type FindingStatus, normalizeVulnId, type Report, type ReportFormat, type Severity } from '@writ/vuln';
import { WritError } from '@writ/spiffe';
import { checkImageDigest } from '@writ/protocol';
import type { Row, SqlDriver, SqlExecutor, SqlValue } from './driver.ts';
import { indexImageTx } from './lineage-sql.ts';
import { MAX_PAGE_SIZE, type ImageDetail, type InventoryImage, type StoredFinding, type StoredPackage, type StoredReport } from './types.ts';

// Multi-row inserts are chunked to stay under both databases' bound-parameter limits.
const INSERT_CHUNK = 500;
const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : num(v));

// ---------------------------------------------------------------- image inventory and reports (issue 13)

export const IMAGE_COLUMNS = 'digest, config_digest, index_digest, platform, names, tags, layers, annotations, labels, created, first_seen, last_seen';
export const REPORT_COLUMNS =
  'id, image_digest, scanner, scanner_version, format, format_version, scan_key, scanned_at, ingested_at, package_count, finding_count';
export const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

export function toInventoryImage(r: Row): InventoryImage {
  return {
    digest: r['digest'] as string,
    configDigest: strOrNull(r['config_digest']),
    indexDigest: strOrNull(r['index_digest']),
    platform: strOrNull(r['platform']),
    names: JSON.parse(r['names'] as string) as string[],
    tags: JSON.parse(r['tags'] as string) as string[],
    layers: JSON.parse(r['layers'] as string) as string[],
    annotations: JSON.parse(r['annotations'] as string) as Record<string, string>,
    labels: JSON.parse(r['labels'] as string) as Record<string, string>,
    created: numOrNull(r['created']),
    firstSeen: num(r['first_seen']),
    lastSeen: num(r['last_seen']),
  };
}

export function toStoredReport(r: Row): StoredReport {
  return {
    id: r['id'] as string,
    imageDigest: r['image_digest'] as string,
    scanner: r['scanner'] as string,
    scannerVersion: strOrNull(r['scanner_version']),
    format: r['format'] as ReportFormat,
    formatVersion: strOrNull(r['format_version']),
    scannedAt: numOrNull(r['scanned_at']),
    ingestedAt: num(r['ingested_at']),
    packageCount: num(r['package_count']),
    findingCount: num(r['finding_count']),
    vulnerabilityData: r['vuln_data'] === undefined ? true : num(r['vuln_data']) === 1,
  };
}

const sortedUnion = (a: readonly string[], b: readonly string[]): string[] => [...new Set([...a, ...b])].sort();

/**
 * The identity of a scan beside its image and scanner: the document format and scan time (Trivy
 * writes its JSON, CycloneDX and SPDX of one scan with the same time: three documents, not one), or
 * without a time a hash of what it says, so that the same document is still the same report.
 */
function scanKeyOf(report: Report): string {
  if (report.scannedAt !== undefined) return `${report.format} ${report.scannedAt}`;
  const h = createHash('sha256');
  h.update(JSON.stringify([report.format, report.image, report.packages, report.findings]));
  return `sha256:${h.digest('hex')}`;
}

function imageOfReport(report: Report, digest: string, now: number): InventoryImage {
  const created = report.image.annotations['org.opencontainers.image.created'];
  const createdMs = created === undefined ? Number.NaN : Date.parse(created);
  return {
    digest,
    configDigest: report.image.configDigest ?? null,
    indexDigest: null,
    platform: null,
    names: sortedUnion(report.image.names, []),
    tags: sortedUnion(report.image.repoTags, []),
    layers: [...report.image.diffIds],
    annotations: { ...report.image.annotations },
    labels: { ...report.image.labels },
    created: Number.isFinite(createdMs) ? createdMs : null,
    firstSeen: now,
    lastSeen: now,
  };
}

/**
 * Adds an image to the inventory or merges it into the one known under its digest (see
 * `mergeImage`); every source (reports, admission, agents, `writ image add`) goes through here.
 */
export async function mergeImageTx(tx: SqlExecutor, add: InventoryImage): Promise<void> {
  const row = (await tx.query(`SELECT ${IMAGE_COLUMNS} FROM images WHERE digest = ?`, [add.digest]))[0];
  if (row === undefined) {
    await tx.execute(`INSERT INTO images (${IMAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [add.digest, ...imageParams(add)]);
    await indexImageTx(tx, undefined, add);
    return;
  }
  const old = toInventoryImage(row);
  const m = mergeImage(old, add);
  await tx.execute(
    `UPDATE images SET config_digest = ?, index_digest = ?, platform = ?, names = ?, tags = ?, layers = ?, annotations = ?, labels = ?,
     created = ?, first_seen = ?, last_seen = ? WHERE digest = ?`,
    [...imageParams(m), add.digest],
  );
  await indexImageTx(tx, old, m);
}

/** A known image with what a new report adds: names and tags are a union, maps take the new values, empty fields are filled. */
export function mergeImage(old: InventoryImage, add: InventoryImage): InventoryImage {
  return {
    ...old,
    configDigest: old.configDigest ?? add.configDigest,
    indexDigest: old.indexDigest ?? add.indexDigest,
    platform: old.platform ?? add.platform,
    names: sortedUnion(old.names, add.names),
    tags: sortedUnion(old.tags, add.tags),
    layers: add.layers.length > 0 ? add.layers : old.layers,
    annotations: { ...old.annotations, ...add.annotations },
    labels: { ...old.labels, ...add.labels },
    created: old.created ?? add.created,
    lastSeen: Math.max(old.lastSeen, add.lastSeen),
  };
}

export function imageParams(i: InventoryImage): SqlValue[] {
  return [
    i.configDigest,
    i.indexDigest,
    i.platform,
    JSON.stringify(i.names),
    JSON.stringify(i.tags),
    JSON.stringify(i.layers),
    JSON.stringify(i.annotations),
    JSON.stringify(i.labels),
    i.created,
    i.firstSeen,
    i.lastSeen,
  ];
}

function reportDigest(report: Report): string {
  const d = report.image.digest ?? report.image.repoDigests.map((r) => r.slice(r.indexOf('@') + 1)).find((r) => r.length > 0);
  if (d === undefined)
    throw new WritError('ERR_FIELD_MISSING', 'the report names no image manifest digest (sha256:...): it cannot be filed under an image', {
      field: 'image.digest',
    });
  return checkImageDigest(d, 'image.digest');
}

/** Every ID a finding is filed under, normalized: its own and its aliases (a GHSA finding names the CVE it is). */
export function findingIds(f: { readonly id: string; readonly aliases: readonly string[] }): string[] {
  // The finding's own ID as the parser left it (already normalized where it could be), its aliases normalized.
  const ids = new Set<string>([f.id]);
  for (const id of f.aliases) {
    try {
      ids.add(normalizeVulnId(id));
    } catch {
      // An alias that is no ID (a URL some scanners put there) is not something anyone asks for.
    }
  }
  return [...ids];
}

export async function putReport(db: SqlDriver, report: Report, now: number): Promise<{ reportId: string; created: boolean; imageDigest: string }> {
  const digest = reportDigest(report);
  const scanner = report.scanner.name;
  const scanKey = scanKeyOf(report);
  const scannedMs = report.scannedAt === undefined ? null : Date.parse(report.scannedAt);
  const scannedAt = scannedMs !== null && Number.isFinite(scannedMs) ? scannedMs : null;
  const existing = async (ex: SqlExecutor): Promise<string | undefined> =>
    (await ex.query('SELECT id FROM reports WHERE image_digest = ? AND scanner = ? AND scan_key = ?', [digest, scanner, scanKey]))[0]?.['id'] as
      | string
      | undefined;
  const known = await existing(db);
  if (known !== undefined) return { reportId: known, created: false, imageDigest: digest };
  const id = randomUUID();
  // A racing writer of another report of the same (image, scanner) can take the latest flag first: retry.
  for (let attempt = 0; ; attempt++) {
    try {
      await db.transaction((tx) => insertReportTx(tx, report, id, digest, scanKey, scannedAt, now));
      return { reportId: id, created: true, imageDigest: digest };
    } catch (err) {
      if (!db.isUniqueViolation(err)) throw err;
      // Another writer stored the same report meanwhile: theirs stands, and this is a repeat.
      const raced = await existing(db);
      if (raced !== undefined) return { reportId: raced, created: false, imageDigest: digest };
      if (attempt >= 3) throw err;
    }
  }
}

/**
 * Whether a new report (scan time, arrival) replaces the current latest of its (image, scanner):
 * a vulnerability report beats an SBOM of any time (and an SBOM never replaces one), then a later
 * scan does, a scan with a time beats one without, and the same time goes to the newer arrival.
 */
function isNewer(scannedAt: number | null, vulnData: boolean, cur: { scannedAt: number | null; vulnData: boolean }): boolean {
  if (vulnData !== cur.vulnData) return vulnData;
  if (cur.scannedAt === null) return true;
  if (scannedAt === null) return false;
  return scannedAt >= cur.scannedAt;
}

async function insertReportTx(
  tx: SqlExecutor,
  report: Report,
  id: string,
  digest: string,
  scanKey: string,
  scannedAt: number | null,
  now: number,
): Promise<void> {
  const scanner = report.scanner.name;
  await mergeImageTx(tx, imageOfReport(report, digest, now));
  const cur = (await tx.query('SELECT id, scanned_at, vuln_data FROM reports WHERE image_digest = ? AND scanner = ? AND latest = 1', [digest, scanner]))[0];
  const latest =
    cur === undefined || isNewer(scannedAt, report.vulnerabilityData, { scannedAt: numOrNull(cur['scanned_at']), vulnData: num(cur['vuln_data']) === 1 });
  if (latest && cur !== undefined) await tx.execute('UPDATE reports SET latest = 0 WHERE id = ?', [cur['id'] as string]);
  await tx.execute(`INSERT INTO reports (${REPORT_COLUMNS}, latest, vuln_data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
    id,
    digest,
    scanner,
    report.scanner.version ?? null,
    report.format,
    report.formatVersion ?? null,
    scanKey,
    scannedAt,
    now,
    report.packages.length,
    report.findings.length,
    latest ? 1 : 0,
    report.vulnerabilityData ? 1 : 0,
  ]);
  for (let i = 0; i < report.packages.length; i += INSERT_CHUNK) {
    const chunk = report.packages.slice(i, i + INSERT_CHUNK);
    await tx.execute(
      `INSERT INTO report_packages (report_id, idx, ref, name, version, type, purl, layer) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
      chunk.flatMap((p, j) => [id, i + j, p.id, p.name, p.version, p.type, p.purl ?? null, p.layer ?? null]),
    );
  }
  const ids: SqlValue[][] = [];
  for (let i = 0; i < report.findings.length; i += INSERT_CHUNK) {
    const chunk = report.findings.slice(i, i + INSERT_CHUNK);
    await tx.execute(
      `INSERT INTO report_findings (report_id, idx, vuln_id, severity, status, installed, fixed, package_ref, aliases) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
      chunk.flatMap((f, j) => [id, i + j, f.id, f.severity, f.status, f.installed, f.fixed ?? null, f.packageRef, JSON.stringify(f.aliases)]),
    );
    chunk.forEach((f, j) => {
      for (const v of findingIds(f)) ids.push([v, id, i + j]);
    });
  }
  for (let i = 0; i < ids.length; i += INSERT_CHUNK) {
    const chunk = ids.slice(i, i + INSERT_CHUNK);
    await tx.execute(`INSERT INTO finding_ids (vuln_id, report_id, idx) VALUES ${chunk.map(() => '(?, ?, ?)').join(', ')}`, chunk.flat());
  }
  // vuln_images follows `latest` (migration 18): the replaced report's IDs leave, this one's carried IDs enter.
  if (!latest) return;
  if (cur !== undefined) await tx.execute('DELETE FROM vuln_images WHERE report_id = ?', [cur['id'] as string]);
  const carried = [...new Set(report.findings.filter((f) => CARRYING.has(f.status)).flatMap(findingIds))].sort();
  for (let i = 0; i < carried.length; i += INSERT_CHUNK) {
    const chunk = carried.slice(i, i + INSERT_CHUNK);
    await tx.execute(
      `INSERT INTO vuln_images (vuln_id, image_digest, report_id) VALUES ${chunk.map(() => '(?, ?, ?)').join(', ')}`,
      chunk.flatMap((v) => [v, digest, id]),
    );
  }
}

/** Finding statuses that carry the vulnerability (a `fixed` or `not_affected` finding carries nothing); the SQL of vuln-query-sql.ts says the same. */
export const CARRYING: ReadonlySet<FindingStatus> = new Set(['affected', 'under_investigation', 'unknown']);

export async function getImage(db: SqlDriver, digest: string): Promise<ImageDetail | undefined> {
  const row = (await db.query(`SELECT ${IMAGE_COLUMNS} FROM images WHERE digest = ?`, [digest]))[0];
  if (row === undefined) return undefined;
  const latest = (await db.query(`SELECT ${REPORT_COLUMNS}, vuln_data FROM reports WHERE image_digest = ? AND latest = 1 ORDER BY scanner`, [digest])).map(
    toStoredReport,
  );
  const reports = [];
  for (const r of latest.sort((a, b) => (a.scanner < b.scanner ? -1 : a.scanner > b.scanner ? 1 : 0))) {
    const packages = (await db.query('SELECT ref, name, version, type, purl, layer FROM report_packages WHERE report_id = ? ORDER BY idx', [r.id])).map(
      (p): StoredPackage => ({
        ref: p['ref'] as string,
        name: p['name'] as string,
        version: p['version'] as string,
        type: p['type'] as string,
        purl: strOrNull(p['purl']),
        layer: strOrNull(p['layer']),
      }),
    );
    const findings = (
      await db.query('SELECT vuln_id, aliases, severity, status, installed, fixed, package_ref FROM report_findings WHERE report_id = ? ORDER BY idx', [r.id])
    ).map(
      (f): StoredFinding => ({
        id: f['vuln_id'] as string,
        aliases: JSON.parse(f['aliases'] as string) as string[],
        severity: f['severity'] as Severity,
        status: f['status'] as FindingStatus,
        installed: f['installed'] as string,
        fixed: strOrNull(f['fixed']),
        packageRef: f['package_ref'] as string,
      }),
    );
    reports.push({ ...r, packages, findings });
  }
  return { image: toInventoryImage(row), reports };
}

export async function listImages(db: SqlDriver, limit: number, after?: string): Promise<InventoryImage[]> {
  const n = Math.max(1, Math.min(limit, MAX_PAGE_SIZE + 1));
  const rows =
    after === undefined
      ? await db.query(`SELECT ${IMAGE_COLUMNS} FROM images ORDER BY digest LIMIT ?`, [n])
      : await db.query(`SELECT ${IMAGE_COLUMNS} FROM images WHERE digest > ? ORDER BY digest LIMIT ?`, [after, n]);
  return rows.map(toInventoryImage);
}
