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

export async function syncVulnExposures(db: SqlDriver, current: readonly Omit<VulnEvent, 'seq'>[]): Promise<VulnEvent[]> {
  const wanted = new Map(current.map((e) => [key(e), e]));
  return db.transaction(async (tx) => {
    const stored = new Set(
      (await tx.query('SELECT vuln_id, image_digest, spiffe_id FROM vuln_exposures')).map((r) =>
        key({ vulnerability: r['vuln_id'] as string, imageDigest: r['image_digest'] as string, spiffeId: r['spiffe_id'] as string }),
      ),
    );
    for (const k of stored)
      if (!wanted.has(k)) {
        const [v, d, s] = k.split('\n') as [string, string, string];
        await tx.execute('DELETE FROM vuln_exposures WHERE vuln_id = ? AND image_digest = ? AND spiffe_id = ?', [v, d, s]);
      }
    const fresh: Omit<VulnEvent, 'seq'>[] = [];
    for (const [k, e] of wanted) {
      if (stored.has(k)) continue;
      // Another replica may have recorded it since the read: the key decides who records the event.
      const n = await tx.execute('INSERT INTO vuln_exposures (vuln_id, image_digest, spiffe_id, since) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING', [
        e.vulnerability,
        e.imageDigest,
        e.spiffeId,
        e.at,
      ]);
      if (n > 0) fresh.push(e);
    }
    if (fresh.length === 0) return [];
    let seq =
      num((await tx.query("UPDATE counters SET value = value + ? WHERE name = 'vuln_event_seq' RETURNING value", [fresh.length]))[0]!['value']) - fresh.length;
    const out: VulnEvent[] = [];
    for (const e of fresh) {
      const ev = { ...e, seq: ++seq };
      await tx.execute(`INSERT INTO vuln_events (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
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
      ]);
      out.push(ev);
    }
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
