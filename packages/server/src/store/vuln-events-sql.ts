/** Vulnerability events (issue 13, section 6): exposures and events, SQL shared by SQLite and PostgreSQL. */
import type { Severity } from '@writ/vuln';
import type { Row, SqlDriver, SqlValue } from './driver.ts';
import { strOrNull } from './inventory-sql.ts';
import type { VulnEvent, VulnEventCause } from './types.ts';

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const COLUMNS = 'seq, id, at, cause, vuln_id, severity, image_digest, spiffe_id, owner, node, namespace, pod';
const key = (e: { vulnerability: string; imageDigest: string; spiffeId: string }): string => `${e.vulnerability}\n${e.imageDigest}\n${e.spiffeId}`;

function toEvent(r: Row): VulnEvent {
  return {
    seq: num(r['seq']),
    id: r['id'] as string,
    at: num(r['at']),
    cause: r['cause'] as VulnEventCause,
    vulnerability: r['vuln_id'] as string,
    severity: r['severity'] as Severity,
    imageDigest: r['image_digest'] as string,
    spiffeId: r['spiffe_id'] as string,
    owner: strOrNull(r['owner']),
    node: strOrNull(r['node']),
    namespace: strOrNull(r['namespace']),
    pod: strOrNull(r['pod']),
  };
}

/** Rows per multi-row statement: well under both databases' parameter limits. */
const BATCH = 400;

function batches<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += BATCH) out.push(items.slice(i, i + BATCH));
  return out;
}

/**
 * Makes the stored exposures `current` and records one event for each new one. Set statements of
 * a few hundred rows each, not one per exposure: the first evaluation of a large running set
 * (100,000 workloads) stores a hundred thousand exposures, and one round trip each kept a
 * transaction open for minutes beside the answers the server was giving.
 */
export async function syncVulnExposures(db: SqlDriver, current: readonly Omit<VulnEvent, 'seq'>[]): Promise<VulnEvent[]> {
  const wanted = new Map(current.map((e) => [key(e), e]));
  return db.transaction(async (tx) => {
    const stored = new Set(
      (await tx.query('SELECT vuln_id, image_digest, spiffe_id FROM vuln_exposures')).map((r) =>
        key({ vulnerability: r['vuln_id'] as string, imageDigest: r['image_digest'] as string, spiffeId: r['spiffe_id'] as string }),
      ),
    );
    for (const c of batches([...stored].filter((k) => !wanted.has(k))))
      await tx.execute(
        `DELETE FROM vuln_exposures WHERE (vuln_id, image_digest, spiffe_id) IN (VALUES ${c.map(() => '(?, ?, ?)').join(', ')})`,
        c.flatMap((k) => k.split('\n')),
      );
    // Another replica may have recorded some since the read: the key decides who records the event.
    const inserted = new Set<string>();
    for (const c of batches([...wanted].filter(([k]) => !stored.has(k)).map(([, e]) => e)))
      for (const r of await tx.query(
        `INSERT INTO vuln_exposures (vuln_id, image_digest, spiffe_id, since) VALUES ${c.map(() => '(?, ?, ?, ?)').join(', ')}
         ON CONFLICT DO NOTHING RETURNING vuln_id, image_digest, spiffe_id`,
        c.flatMap((e) => [e.vulnerability, e.imageDigest, e.spiffeId, e.at]),
      ))
        inserted.add(key({ vulnerability: r['vuln_id'] as string, imageDigest: r['image_digest'] as string, spiffeId: r['spiffe_id'] as string }));
    const fresh = [...wanted].filter(([k]) => inserted.has(k)).map(([, e]) => e);
    if (fresh.length === 0) return [];
    let seq =
      num((await tx.query("UPDATE counters SET value = value + ? WHERE name = 'vuln_event_seq' RETURNING value", [fresh.length]))[0]!['value']) - fresh.length;
    const out = fresh.map((e) => ({ ...e, seq: ++seq }));
    for (const c of batches(out))
      await tx.execute(
        `INSERT INTO vuln_events (${COLUMNS}) VALUES ${c.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
        c.flatMap((ev) => [
          ev.seq,
          ev.id,
          ev.at,
          ev.cause,
          ev.vulnerability,
          ev.severity,
          ev.imageDigest,
          ev.spiffeId,
          ev.owner,
          ev.node,
          ev.namespace,
          ev.pod,
        ]),
      );
    return out;
  });
}

export async function queryVulnEvents(db: SqlDriver, q: { since?: number; after?: number; upTo?: number; limit: number }): Promise<VulnEvent[]> {
  const where: string[] = [];
  const args: SqlValue[] = [];
  if (q.since !== undefined) {
    where.push('at >= ?');
    args.push(q.since);
  }
  if (q.after !== undefined) {
    where.push('seq > ?');
    args.push(q.after);
    if (q.upTo !== undefined) {
      where.push('seq <= ?');
      args.push(q.upTo);
    }
  }
  args.push(Math.max(1, Math.min(q.limit, 10_000)));
  const order = q.after !== undefined ? 'seq' : 'at DESC, seq DESC';
  return (await db.query(`SELECT ${COLUMNS} FROM vuln_events${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY ${order} LIMIT ?`, args)).map(
    toEvent,
  );
}

export async function vulnEventCursor(db: SqlDriver): Promise<number> {
  return num((await db.query("SELECT value FROM counters WHERE name = 'vuln_event_seq'"))[0]?.['value'] ?? 0);
}

export async function pruneVulnEvents(db: SqlDriver, before: number): Promise<number> {
  // In batches, as admission events: one long DELETE would hold the write lock.
  let removed = 0;
  for (;;) {
    const n = await db.execute('DELETE FROM vuln_events WHERE seq IN (SELECT seq FROM vuln_events WHERE at < ? ORDER BY at LIMIT 5000)', [before]);
    removed += n;
    if (n < 5000) return removed;
    await new Promise((r) => setImmediate(r));
  }
}
