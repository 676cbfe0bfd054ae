/** Alerts (issue 15, section 3): SQL shared by SQLite and PostgreSQL. */
import type { Row, SqlDriver, SqlValue } from './driver.ts';
import type { Alert, AlertInput, AlertResponse, AlertState } from './types.ts';

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : num(v));
const COLUMNS = 'id, rule, kind, dedupe_key, first_at, last_at, count, state, acked_by, acked_at, details, response';

function toAlert(r: Row): Alert {
  return {
    id: r['id'] as string,
    rule: r['rule'] as string,
    kind: r['kind'] as string,
    key: r['dedupe_key'] as string,
    firstAt: num(r['first_at']),
    lastAt: num(r['last_at']),
    count: num(r['count']),
    state: r['state'] as AlertState,
    ackedBy: (r['acked_by'] as string | null) ?? null,
    ackedAt: numOrNull(r['acked_at']),
    details: JSON.parse(r['details'] as string) as Record<string, unknown>,
    response: r['response'] ? (JSON.parse(r['response'] as string) as AlertResponse) : null,
  };
}

export async function raiseAlert(db: SqlDriver, a: AlertInput, windowMs: number): Promise<{ alert: Alert; created: boolean }> {
  return db.transaction(async (tx) => {
    const rows = await tx.query(
      `UPDATE alerts SET count = count + 1, last_at = CASE WHEN last_at > ? THEN last_at ELSE ? END
       WHERE id = (SELECT id FROM alerts WHERE rule = ? AND dedupe_key = ? AND state = 'open' AND last_at >= ? ORDER BY last_at DESC LIMIT 1)
       RETURNING ${COLUMNS}`,
      [a.at, a.at, a.rule, a.key, a.at - windowMs],
    );
    if (rows.length) return { alert: toAlert(rows[0]!), created: false };
    const inserted = await tx.query(`INSERT INTO alerts (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 1, 'open', NULL, NULL, ?, NULL) RETURNING ${COLUMNS}`, [
      a.id,
      a.rule,
      a.kind,
      a.key,
      a.at,
      a.at,
      JSON.stringify(a.details),
    ]);
    return { alert: toAlert(inserted[0]!), created: true };
  });
}

export async function listAlerts(db: SqlDriver, q: { rule?: string; state?: AlertState; limit: number }): Promise<Alert[]> {
  const where: string[] = [];
  const args: SqlValue[] = [];
  if (q.rule !== undefined) {
    where.push('rule = ?');
    args.push(q.rule);
  }
  if (q.state !== undefined) {
    where.push('state = ?');
    args.push(q.state);
  }
  args.push(Math.max(1, Math.min(q.limit, 10_000)));
  return (await db.query(`SELECT ${COLUMNS} FROM alerts${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY last_at DESC, id LIMIT ?`, args)).map(
    toAlert,
  );
}

export async function getAlert(db: SqlDriver, id: string): Promise<Alert | undefined> {
  const r = (await db.query(`SELECT ${COLUMNS} FROM alerts WHERE id = ?`, [id]))[0];
  return r ? toAlert(r) : undefined;
}

/** Returns the alert and whether this call changed it. */
export async function ackAlert(db: SqlDriver, id: string, by: string, at: number): Promise<{ alert: Alert | undefined; changed: boolean }> {
  const rows = await db.query(`UPDATE alerts SET state = 'acked', acked_by = ?, acked_at = ? WHERE id = ? AND state = 'open' RETURNING ${COLUMNS}`, [
    by,
    at,
    id,
  ]);
  if (rows.length) return { alert: toAlert(rows[0]!), changed: true };
  return { alert: await getAlert(db, id), changed: false };
}

export async function setAlertResponse(db: SqlDriver, id: string, response: AlertResponse): Promise<Alert | undefined> {
  const rows = await db.query(`UPDATE alerts SET response = ? WHERE id = ? RETURNING ${COLUMNS}`, [JSON.stringify(response), id]);
  return rows[0] ? toAlert(rows[0]) : undefined;
}

export async function pruneAlerts(db: SqlDriver, before: number): Promise<number> {
  return db.execute('DELETE FROM alerts WHERE last_at < ?', [before]);
}

/** Lookups per statement: a first batch from a busy node can name thousands of edges. */
const CHUNK = 200;

/** Of these (caller, destination) pairs, the ones with a decision logged on any action (`from\nto` keys). */
export async function seenEdges(db: SqlDriver, pairs: readonly { from: string; to: string }[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (let i = 0; i < pairs.length; i += CHUNK) {
    const part = pairs.slice(i, i + CHUNK);
    const rows = await db.query(
      `SELECT DISTINCT from_id, to_id FROM decision_edges WHERE ${part.map(() => '(from_id = ? AND to_id = ?)').join(' OR ')}`,
      part.flatMap((p) => [p.from, p.to]),
    );
    for (const r of rows) out.add(`${r['from_id'] as string}\n${r['to_id'] as string}`);
  }
  return out;
}

/** Of these identities, the ones that called or were called in a logged decision. */
export async function seenIdentities(db: SqlDriver, ids: readonly string[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (let i = 0; i < ids.length; i += CHUNK) {
    const part = ids.slice(i, i + CHUNK);
    const marks = part.map(() => '?').join(', ');
    const rows = await db.query(
      `SELECT DISTINCT from_id AS id FROM decision_edges WHERE from_id IN (${marks}) UNION SELECT DISTINCT to_id AS id FROM decision_edges WHERE to_id IN (${marks})`,
      [...part, ...part],
    );
    for (const r of rows) out.add(r['id'] as string);
  }
  return out;
}
