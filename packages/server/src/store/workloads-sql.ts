/** What runs where, now (issue 13): the workloads agents report, SQL shared by SQLite and PostgreSQL. */
import type { Row, SqlDriver, SqlExecutor, SqlValue } from './driver.ts';
import { mergeImageTx, strOrNull } from './inventory-sql.ts';
import { MAX_PAGE_SIZE, RUNNING_GRACE_MS, type Workload, type WorkloadInput, type WorkloadQuery } from './types.ts';

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
// Chunks stay under both databases' bound-parameter limits (17 per upserted row).
const INSERT_CHUNK = 500;
const UPSERT_CHUNK = 200;

const CONTENT = [
  'node',
  'spiffe_ids',
  'container_id',
  'container_name',
  'pod_uid',
  'pod_name',
  'namespace',
  'pod_owner',
  'image_digest',
  'image_name',
  'labels',
  'annotations',
  'owner',
];

/** Whether a stored row says what these parameters (`params`' order: agent, key, then CONTENT) say. */
function sameContent(row: Row, p: readonly SqlValue[]): boolean {
  return CONTENT.every((c, i) => (row[c] ?? null) === p[i + 2]);
}

/** The key of an owner in workload_counts (migration 18): NULLs never meet in a key, so none is ''. */
export const ownerKey = (owner: string | null): string => (owner === null ? '' : `=${owner}`);
export const ownerOfKey = (key: string): string | null => (key === '' ? null : key.slice(1));
/** The same as `ownerKey`, in SQL. */
export const OWNER_KEY_SQL = (column: string): string => `COALESCE('=' || ${column}, '')`;

/** Adds `delta` per (image digest, owner) to workload_counts, in key order (two writers lock rows in the same order). */
async function addCounts(tx: SqlExecutor, delta: ReadonlyMap<string, number>): Promise<void> {
  const rows = [...delta.entries()].filter(([, d]) => d !== 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
    const chunk = rows.slice(i, i + INSERT_CHUNK);
    await tx.execute(
      `INSERT INTO workload_counts (image_digest, owner_key, n) VALUES ${chunk.map(() => '(?, ?, ?)').join(', ')}
       ON CONFLICT (image_digest, owner_key) DO UPDATE SET n = workload_counts.n + excluded.n`,
      chunk.flatMap(([k, d]) => [...k.split('\u0000'), d]),
    );
  }
}

/** Counts one workload more (+1) or less (-1) under its digest and owner; workloads without a digest are not counted. */
function count(delta: Map<string, number>, digest: unknown, owner: unknown, by: number): void {
  if (typeof digest !== 'string') return;
  const k = `${digest}\u0000${ownerKey(strOrNull(owner))}`;
  delta.set(k, (delta.get(k) ?? 0) + by);
}

export const WORKLOAD_COLUMNS =
  'agent_id, wkey, node, spiffe_ids, container_id, container_name, pod_uid, pod_name, namespace, pod_owner, image_digest, image_name, labels, annotations, owner, first_seen, last_seen, ended_at';

export function toWorkload(r: Row): Workload {
  return {
    agentId: r['agent_id'] as string,
    key: r['wkey'] as string,
    node: strOrNull(r['node']),
    spiffeIds: JSON.parse(r['spiffe_ids'] as string) as string[],
    containerId: strOrNull(r['container_id']),
    containerName: strOrNull(r['container_name']),
    podUid: strOrNull(r['pod_uid']),
    podName: strOrNull(r['pod_name']),
    namespace: strOrNull(r['namespace']),
    podOwner: strOrNull(r['pod_owner']),
    imageDigest: strOrNull(r['image_digest']),
    imageName: strOrNull(r['image_name']),
    labels: JSON.parse(r['labels'] as string) as Record<string, string>,
    annotations: JSON.parse(r['annotations'] as string) as Record<string, string>,
    owner: strOrNull(r['owner']),
    firstSeen: num(r['first_seen']),
    lastSeen: num(r['last_seen']),
    endedAt: r['ended_at'] === null || r['ended_at'] === undefined ? null : num(r['ended_at']),
  };
}

function params(agentId: string, node: string | null, w: WorkloadInput, firstSeen: number, now: number): SqlValue[] {
  return [
    agentId,
    w.key,
    node,
    JSON.stringify([...w.spiffeIds].sort()),
    w.containerId,
    w.containerName,
    w.podUid,
    w.podName,
    w.namespace,
    w.podOwner,
    w.imageDigest,
    w.imageName,
    JSON.stringify(w.labels),
    JSON.stringify(w.annotations),
    w.owner,
    firstSeen,
    now,
  ];
}

export async function putAgentWorkloads(
  db: SqlDriver,
  agentId: string,
  node: string | null,
  workloads: readonly WorkloadInput[],
  now: number,
): Promise<{ started: number; ended: number; resumed: number }> {
  const byKey = new Map(workloads.map((w) => [w.key, w]));
  return db.transaction(async (tx) => {
    // A workload that ended within the grace period and is reported again (its agent restarted and
    // it reconnected) continues: first seen kept, no new start. One that ended longer ago starts again.
    const rows = await tx.query(`SELECT ${WORKLOAD_COLUMNS} FROM workloads WHERE agent_id = ? AND (ended_at IS NULL OR ended_at >= ?)`, [
      agentId,
      now - RUNNING_GRACE_MS,
    ]);
    const recent = new Map(rows.map((r) => [r['wkey'] as string, r]));
    let started = 0;
    let resumed = 0;
    // A heartbeat mostly repeats what is stored: those rows only get their last seen, in a few
    // statements whatever the count (one round trip per workload made PostgreSQL the bottleneck).
    const same: string[] = [];
    const write: SqlValue[][] = [];
    const delta = new Map<string, number>();
    for (const w of byKey.values()) {
      const row = recent.get(w.key);
      if (row === undefined) started++;
      else if (row['ended_at'] !== null && row['ended_at'] !== undefined) resumed++;
      // Not ended but silent past the grace period (its agent was away): it runs again, as far as answers go.
      else if (num(row['last_seen']) < now - RUNNING_GRACE_MS) resumed++;
      const p = params(agentId, node, w, row === undefined ? now : num(row['first_seen']), now);
      const open = row !== undefined && (row['ended_at'] === null || row['ended_at'] === undefined);
      if (open && sameContent(row, p)) same.push(w.key);
      else {
        write.push(p);
        // The upsert leaves it not ended, under its new digest and owner.
        if (open) count(delta, row['image_digest'], row['owner'], -1);
        count(delta, w.imageDigest, w.owner, 1);
      }
    }
    for (let i = 0; i < same.length; i += INSERT_CHUNK) {
      const chunk = same.slice(i, i + INSERT_CHUNK);
      await tx.execute(`UPDATE workloads SET last_seen = ? WHERE agent_id = ? AND wkey IN (${chunk.map(() => '?').join(', ')})`, [now, agentId, ...chunk]);
    }
    for (let i = 0; i < write.length; i += UPSERT_CHUNK) {
      const chunk = write.slice(i, i + UPSERT_CHUNK);
      await tx.execute(
        `INSERT INTO workloads (${WORKLOAD_COLUMNS}) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)').join(', ')}
         ON CONFLICT (agent_id, wkey) DO UPDATE SET node = excluded.node, spiffe_ids = excluded.spiffe_ids, container_id = excluded.container_id,
           container_name = excluded.container_name, pod_uid = excluded.pod_uid, pod_name = excluded.pod_name, namespace = excluded.namespace,
           pod_owner = excluded.pod_owner, image_digest = excluded.image_digest, image_name = excluded.image_name, labels = excluded.labels,
           annotations = excluded.annotations, owner = excluded.owner, first_seen = excluded.first_seen, last_seen = excluded.last_seen, ended_at = NULL`,
        chunk.flat(),
      );
    }
    const goneRows = rows.filter((r) => (r['ended_at'] === null || r['ended_at'] === undefined) && !byKey.has(r['wkey'] as string));
    for (const r of goneRows) count(delta, r['image_digest'], r['owner'], -1);
    await addCounts(tx, delta);
    const gone = goneRows.map((r) => r['wkey'] as string);
    let ended = 0;
    for (let i = 0; i < gone.length; i += INSERT_CHUNK) {
      const chunk = gone.slice(i, i + INSERT_CHUNK);
      ended += await tx.execute(`UPDATE workloads SET ended_at = ? WHERE agent_id = ? AND wkey IN (${chunk.map(() => '?').join(', ')})`, [
        now,
        agentId,
        ...chunk,
      ]);
    }
    // Digests the inventory does not know yet enter it (an index digest may name an image known by its manifest digest).
    const digests = [...new Set(workloads.flatMap((w) => (w.imageDigest ? [w.imageDigest] : [])))];
    const known = new Set<string>();
    for (let i = 0; i < digests.length; i += INSERT_CHUNK) {
      const chunk = digests.slice(i, i + INSERT_CHUNK);
      const marks = chunk.map(() => '?').join(', ');
      for (const r of await tx.query(`SELECT digest, index_digest FROM images WHERE digest IN (${marks}) OR index_digest IN (${marks})`, [
        ...chunk,
        ...chunk,
      ])) {
        known.add(r['digest'] as string);
        if (r['index_digest']) known.add(r['index_digest'] as string);
      }
    }
    for (const digest of digests) {
      if (known.has(digest)) continue;
      const names = [...new Set(workloads.filter((w) => w.imageDigest === digest && w.imageName).map((w) => w.imageName!))].sort();
      await mergeImageTx(tx, {
        digest,
        configDigest: null,
        indexDigest: null,
        platform: null,
        names,
        tags: [],
        layers: [],
        annotations: {},
        labels: {},
        created: null,
        firstSeen: now,
        lastSeen: now,
      });
    }
    return { started, ended, resumed };
  });
}

export async function listWorkloads(db: SqlDriver, q: WorkloadQuery): Promise<Workload[]> {
  const where: string[] = [];
  const args: SqlValue[] = [];
  if (q.running) {
    where.push('ended_at IS NULL AND last_seen >= ?');
    args.push(q.now - RUNNING_GRACE_MS);
  }
  if (q.imageDigests !== undefined) {
    if (q.imageDigests.length === 0) return [];
    where.push(`image_digest IN (${q.imageDigests.map(() => '?').join(', ')})`);
    args.push(...q.imageDigests);
  }
  if (q.agentId !== undefined) {
    where.push('agent_id = ?');
    args.push(q.agentId);
  }
  if (q.spiffeId !== undefined) {
    // spiffe_ids is a JSON array of strings; the quoted ID cannot match inside another one.
    where.push('spiffe_ids LIKE ?');
    args.push(`%${JSON.stringify(q.spiffeId).replace(/[%_\\]/g, (c) => `\\${c}`)}%`);
  }
  const sql = `SELECT ${WORKLOAD_COLUMNS} FROM workloads${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY agent_id, wkey LIMIT ?`;
  args.push(Math.max(1, Math.min(q.limit, MAX_PAGE_SIZE * 100)));
  return (await db.query(q.spiffeId !== undefined ? sql.replace('spiffe_ids LIKE ?', "spiffe_ids LIKE ? ESCAPE '\\'") : sql, args)).map(toWorkload);
}

export async function pruneWorkloads(db: SqlDriver, before: number): Promise<number> {
  return db.transaction(async (tx) => {
    // Those not ended leave workload_counts too: what the DELETE took, not what a SELECT saw before a heartbeat.
    const open = await tx.query('DELETE FROM workloads WHERE last_seen < ? AND ended_at IS NULL RETURNING image_digest, owner', [before]);
    const delta = new Map<string, number>();
    for (const r of open) count(delta, r['image_digest'], r['owner'], -1);
    await addCounts(tx, delta);
    await tx.execute('DELETE FROM workload_counts WHERE n <= 0');
    return open.length + (await tx.execute('DELETE FROM workloads WHERE last_seen < ?', [before]));
  });
}

export async function workloadsWentSilent(db: SqlDriver, since: number, now: number): Promise<boolean> {
  // Running at `since`: last seen at or after since - grace; no longer at `now`: before now - grace (last_seen only grows).
  if (now <= since) return false;
  const rows = await db.query('SELECT 1 AS x FROM workloads WHERE last_seen >= ? AND last_seen < ? AND ended_at IS NULL LIMIT 1', [
    since - RUNNING_GRACE_MS,
    now - RUNNING_GRACE_MS,
  ]);
  return rows.length > 0;
}
