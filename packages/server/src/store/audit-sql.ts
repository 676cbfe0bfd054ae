/**
 * The audit log's SQL (issue 15, section 1): leaves queued inside the caller's transaction and
 * folded into the log after its commit, entries, perfect-subtree nodes for proofs, and the signed
 * checkpoints. The tree itself is @writ/transparency's; this file only stores what it computes.
 */
import { CompactRange, encodeAuditLeaf, leafHash } from '@writ/transparency';
import { WritError } from '@writ/spiffe';
import type { SqlDriver, SqlExecutor, SqlValue } from './driver.ts';
import type { AuditCheckpoint, AuditEntry, AuditHead, AuditLeafInput } from './types.ts';

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));

/** The in-order position of the perfect node of 2^level leaves from leaf index * 2^level: unique over all levels (exact below 2^52 leaves). */
export const auditNodeId = (level: number, index: number): number => index * 2 ** (level + 1) + 2 ** level - 1;

/** The exact bytes of a leaf's body: what `writ audit verify` hashes again. */
export function auditBody(at: number, actor: string, leaf: AuditLeafInput): string {
  return JSON.stringify({ at, actor, kind: leaf.kind, subject: leaf.subject, detail: leaf.detail });
}

/** A leaf's columns before it has an index: what a write queues and the folder appends. */
export interface AuditLeafRow {
  readonly at: number;
  readonly actor: string;
  readonly kind: string;
  readonly subject: string;
  readonly body: string;
}

const leafRow = (at: number, actor: string, leaf: AuditLeafInput): AuditLeafRow => ({
  at,
  actor,
  kind: leaf.kind,
  subject: leaf.subject.slice(0, 512),
  body: auditBody(at, actor, leaf),
});

/**
 * Queues `leaves` in the open transaction `tx` of the change they record: they commit (or roll
 * back) with it. No lock is shared with other writers, so concurrent changes commit side by side;
 * `foldAudit` gives them their index, chain and tree nodes after the commit.
 */
export async function queueAudit(tx: SqlExecutor, at: number, actor: string, leaves: readonly AuditLeafInput[]): Promise<void> {
  for (let i = 0; i < leaves.length; i += 100) {
    const chunk = leaves.slice(i, i + 100).map((l) => leafRow(at, actor, l));
    const sql = `INSERT INTO audit_pending (at, actor, kind, subject, body) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?)').join(', ')}`;
    const params = chunk.flatMap((r) => [r.at, r.actor, r.kind, r.subject, r.body]);
    // On PostgreSQL in the COMMIT's message: the leaf costs the change no round trip of its own,
    // and fails the commit (the change rolled back) if it cannot be queued.
    if (tx.atCommit) tx.atCommit(sql, params);
    else await tx.execute(sql, params);
  }
}

/** The most queued leaves one fold transaction moves (a longer queue takes several). */
export const FOLD_BATCH = 5000;

/**
 * Folds the committed queued leaves into the log: each fold transaction locks the head row
 * (PostgreSQL: FOR UPDATE; SQLite: the write lock), takes the queued rows committed by then in
 * `seq` order and deletes them in the same statement, and appends them (index, chain, nodes,
 * head). So each queued leaf is appended exactly once, and folders (a reader, the checkpointer,
 * another replica) take turns. Returns how many were folded.
 */
export async function foldAudit(db: SqlDriver, batch = FOLD_BATCH): Promise<number> {
  let total = 0;
  for (;;) {
    // Nothing queued is the common case of a read: no lock, no transaction.
    if ((await db.query('SELECT seq FROM audit_pending ORDER BY seq LIMIT 1')).length === 0) return total;
    const n = await db.transaction(async (tx) => {
      const head = await lockHead(tx, db.dialect);
      const rows = await tx.query(
        'DELETE FROM audit_pending WHERE seq IN (SELECT seq FROM audit_pending ORDER BY seq LIMIT ?) RETURNING seq, at, actor, kind, subject, body',
        [batch],
      );
      rows.sort((a, b) => num(a['seq']) - num(b['seq']));
      await appendRows(
        tx,
        head,
        rows.map((r) => ({
          at: num(r['at']),
          actor: r['actor'] as string,
          kind: r['kind'] as string,
          subject: r['subject'] as string,
          body: r['body'] as string,
        })),
      );
      return rows.length;
    });
    total += n;
    if (n < batch) return total;
  }
}

/**
 * Appends `leaves` at the end of the log in the open transaction `tx`, at once (no queue): for
 * loading a log in bulk (the benchmark's million leaves). The writes of the store queue theirs.
 */
export async function appendAudit(tx: SqlExecutor, dialect: SqlDriver['dialect'], at: number, actor: string, leaves: readonly AuditLeafInput[]): Promise<void> {
  if (leaves.length === 0) return;
  await appendRows(
    tx,
    await lockHead(tx, dialect),
    leaves.map((l) => leafRow(at, actor, l)),
  );
}

interface LockedHead {
  readonly range: CompactRange;
  readonly last: Uint8Array | null;
}

async function lockHead(tx: SqlExecutor, dialect: SqlDriver['dialect']): Promise<LockedHead> {
  const head = (await tx.query(`SELECT size, hashes, last_leaf FROM audit_head WHERE id = 1${dialect === 'postgres' ? ' FOR UPDATE' : ''}`))[0];
  if (!head) throw new WritError('ERR_STORE_UNAVAILABLE', 'the audit log has no head row');
  const hashes = (head['hashes'] as string).match(/.{64}/g)?.map(unhex) ?? [];
  return { range: new CompactRange(num(head['size']), hashes), last: head['last_leaf'] ? unhex(head['last_leaf'] as string) : null };
}

/** The leaves at the head's end: each one's index, its hash chained on the one before, the perfect nodes it completes, the new head. */
async function appendRows(tx: SqlExecutor, head: LockedHead, leaves: readonly AuditLeafRow[]): Promise<void> {
  if (leaves.length === 0) return;
  const { range } = head;
  let prev = head.last;
  const leafRows: SqlValue[][] = [];
  const nodeRows: SqlValue[][] = [];
  for (const leaf of leaves) {
    const index = range.size;
    const lh = leafHash(encodeAuditLeaf(index, prev, Buffer.from(leaf.body, 'utf8')));
    range.append(lh, (level, i, h) => void nodeRows.push([auditNodeId(level, i), hex(h)]));
    leafRows.push([index, leaf.at, leaf.actor, leaf.kind, leaf.subject, leaf.body, hex(lh)]);
    prev = lh;
  }
  for (let i = 0; i < leafRows.length; i += 100) {
    const chunk = leafRows.slice(i, i + 100);
    await tx.execute(
      `INSERT INTO audit_leaves (leaf_index, at, actor, kind, subject, body, leaf_hash) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
      chunk.flat(),
    );
  }
  for (let i = 0; i < nodeRows.length; i += 400) {
    const chunk = nodeRows.slice(i, i + 400);
    await tx.execute(`INSERT INTO audit_nodes (node_id, hash) VALUES ${chunk.map(() => '(?, ?)').join(', ')}`, chunk.flat());
  }
  await tx.execute('UPDATE audit_head SET size = ?, hashes = ?, last_leaf = ? WHERE id = 1', [range.size, range.hashes.map(hex).join(''), hex(prev!)]);
}

export async function auditHead(db: SqlExecutor): Promise<AuditHead> {
  const r = (await db.query('SELECT size, hashes FROM audit_head WHERE id = 1'))[0]!;
  const hashes = (r['hashes'] as string).match(/.{64}/g)?.map(unhex) ?? [];
  return { size: num(r['size']), root: new CompactRange(num(r['size']), hashes).root() };
}

/** The queued leaves not folded yet. */
export async function auditPending(db: SqlExecutor): Promise<number> {
  return num((await db.query('SELECT COUNT(*) AS n FROM audit_pending'))[0]?.['n'] ?? 0);
}

/** Leaves [start, end) in order. */
export async function listAuditEntries(db: SqlExecutor, start: number, end: number): Promise<AuditEntry[]> {
  const rows = await db.query('SELECT leaf_index, body, leaf_hash FROM audit_leaves WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index', [
    start,
    end,
  ]);
  return rows.map((r) => ({ index: num(r['leaf_index']), body: r['body'] as string, leafHash: r['leaf_hash'] as string }));
}

/**
 * Perfect-subtree hashes, leaves (level 0) included: proofs read the tree's own table, never the
 * entry rows, so an entry rewritten in place cannot bend the proofs of its neighbours.
 */
export async function auditNodes(db: SqlExecutor, nodes: readonly { level: number; index: number }[]): Promise<Uint8Array[]> {
  const found = new Map<number, string>();
  const ids = nodes.map((n) => auditNodeId(n.level, n.index));
  for (let i = 0; i < ids.length; i += 200) {
    const chunk = ids.slice(i, i + 200);
    const rows = await db.query(`SELECT node_id, hash FROM audit_nodes WHERE node_id IN (${chunk.map(() => '?').join(', ')})`, chunk);
    for (const r of rows) found.set(num(r['node_id']), r['hash'] as string);
  }
  return nodes.map((n, i) => {
    const h = found.get(ids[i]!);
    if (h === undefined) throw new WritError('ERR_AUDIT_RANGE', `the audit log has no node ${n.level}/${n.index}`);
    return unhex(h);
  });
}

export async function putAuditCheckpoint(db: SqlExecutor, c: AuditCheckpoint): Promise<void> {
  await db.execute('INSERT INTO audit_checkpoints (size, note, at) VALUES (?, ?, ?) ON CONFLICT (size) DO NOTHING', [c.size, c.note, c.at]);
}

export async function latestAuditCheckpoint(db: SqlExecutor): Promise<AuditCheckpoint | undefined> {
  const r = (await db.query('SELECT size, note, at FROM audit_checkpoints ORDER BY size DESC LIMIT 1'))[0];
  return r ? { size: num(r['size']), note: r['note'] as string, at: num(r['at']) } : undefined;
}
