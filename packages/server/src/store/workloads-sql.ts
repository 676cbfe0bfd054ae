/** What runs where, now (issue 13): the workloads agents report, SQL shared by SQLite and PostgreSQL. */
import type { Row, SqlDriver, SqlValue } from './driver.ts';
import { mergeImageTx, strOrNull } from './inventory-sql.ts';
import { MAX_PAGE_SIZE, RUNNING_GRACE_MS, type Workload, type WorkloadInput, type WorkloadQuery } from './types.ts';

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));

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
): Promise<{ started: number; ended: number }> {
  const byKey = new Map(workloads.map((w) => [w.key, w]));
  return db.transaction(async (tx) => {
    // A workload that ended within the grace period and is reported again (its agent restarted and
    // it reconnected) continues: first seen kept, no new start. One that ended longer ago starts again.
    const rows = await tx.query('SELECT wkey, first_seen, ended_at FROM workloads WHERE agent_id = ? AND (ended_at IS NULL OR ended_at >= ?)', [
      agentId,
      now - RUNNING_GRACE_MS,
    ]);
    const current = new Map(rows.filter((r) => r['ended_at'] === null || r['ended_at'] === undefined).map((r) => [r['wkey'] as string, num(r['first_seen'])]));
    const recent = new Map(rows.map((r) => [r['wkey'] as string, num(r['first_seen'])]));
    let started = 0;
    for (const w of byKey.values()) {
      const first = recent.get(w.key);
      if (first === undefined) started++;
      await tx.execute(
        `INSERT INTO workloads (${WORKLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)
         ON CONFLICT (agent_id, wkey) DO UPDATE SET node = excluded.node, spiffe_ids = excluded.spiffe_ids, container_id = excluded.container_id,
           container_name = excluded.container_name, pod_uid = excluded.pod_uid, pod_name = excluded.pod_name, namespace = excluded.namespace,
           pod_owner = excluded.pod_owner, image_digest = excluded.image_digest, image_name = excluded.image_name, labels = excluded.labels,
           annotations = excluded.annotations, owner = excluded.owner, first_seen = excluded.first_seen, last_seen = excluded.last_seen, ended_at = NULL`,
        params(agentId, node, w, first ?? now, now),
      );
    }
    let ended = 0;
    for (const key of current.keys())
      if (!byKey.has(key)) ended += await tx.execute('UPDATE workloads SET ended_at = ? WHERE agent_id = ? AND wkey = ?', [now, agentId, key]);
    // Digests the inventory does not know yet enter it (an index digest may name an image known by its manifest digest).
    const digests = [...new Set(workloads.flatMap((w) => (w.imageDigest ? [w.imageDigest] : [])))];
    for (const digest of digests) {
      const known = await tx.query('SELECT digest FROM images WHERE digest = ? OR index_digest = ? LIMIT 1', [digest, digest]);
      if (known.length > 0) continue;
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
    return { started, ended };
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
  return db.execute('DELETE FROM workloads WHERE last_seen < ?', [before]);
}
