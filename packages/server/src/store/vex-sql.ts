/** OpenVEX documents and their statements (issue 13, section 5): SQL shared by SQLite and PostgreSQL. */
import { createHash } from 'node:crypto';
import { WritError } from '@writ/spiffe';
import type { VexDocument, VexProduct, VexStatus } from '@writ/vuln';
import type { Row, SqlDriver, SqlValue } from './driver.ts';
import type { StoredVexDocument, StoredVexStatement } from './types.ts';

const INSERT_CHUNK = 200;
const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const str = (v: unknown): string | undefined => (v === null || v === undefined ? undefined : String(v));
const iso = (v: unknown): string | undefined => (v === null || v === undefined ? undefined : new Date(num(v)).toISOString());
const ms = (s: string | undefined): number | null => (s === undefined ? null : Date.parse(s));

function contentHash(doc: VexDocument): string {
  return `sha256:${createHash('sha256')
    .update(JSON.stringify([doc.author, doc.role ?? null, doc.timestamp ?? null, doc.statements]))
    .digest('hex')}`;
}

function conflict(message: string): WritError {
  return new WritError('ERR_VEX_VERSION_CONFLICT', message, { field: 'version' });
}

export async function putVexDocument(db: SqlDriver, doc: VexDocument, now: number): Promise<{ created: boolean; replaced: number | null; statements: number }> {
  const hash = contentHash(doc);
  const n = doc.statements.length;
  return db.transaction(async (tx) => {
    const params: SqlValue[] = [doc.author, doc.role ?? null, doc.version, ms(doc.timestamp), hash, n, now];
    let replaced: number | null = null;
    // Insert-or-nothing first: two replicas storing a new document at once cannot both create it.
    const inserted = await tx.execute(
      `INSERT INTO vex_documents (id, author, role, version, issued_at, content_hash, statement_count, ingested_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
      [doc.id, ...params],
    );
    if (inserted === 0) {
      const old = (await tx.query('SELECT version, content_hash FROM vex_documents WHERE id = ?', [doc.id]))[0]!;
      const oldVersion = num(old['version']);
      if (oldVersion === doc.version && old['content_hash'] === hash) return { created: false, replaced: null, statements: n };
      if (oldVersion >= doc.version)
        throw conflict(
          oldVersion === doc.version
            ? `version ${doc.version} of ${doc.id.slice(0, 200)} is already stored with other statements; OpenVEX documents take a new version on every change`
            : `version ${oldVersion} of ${doc.id.slice(0, 200)} is stored; version ${doc.version} is older and would undo it`,
        );
      // Conditional: a replica that stored an even newer version meanwhile wins.
      const updated = await tx.execute(
        `UPDATE vex_documents SET author = ?, role = ?, version = ?, issued_at = ?, content_hash = ?, statement_count = ?, ingested_at = ?
         WHERE id = ? AND version < ?`,
        [...params, doc.id, doc.version],
      );
      if (updated === 0) throw conflict(`a newer version of ${doc.id.slice(0, 200)} was stored meanwhile`);
      replaced = oldVersion;
      await tx.execute('DELETE FROM vex_statements WHERE document_id = ?', [doc.id]);
    }
    for (let i = 0; i < n; i += INSERT_CHUNK) {
      const chunk = doc.statements.slice(i, i + INSERT_CHUNK);
      const values: SqlValue[] = [];
      chunk.forEach((s, j) => {
        values.push(
          doc.id,
          i + j,
          s.vulnerability,
          JSON.stringify(s.aliases),
          JSON.stringify(s.products),
          s.status,
          s.justification ?? null,
          s.impactStatement ?? null,
          s.actionStatement ?? null,
          ms(s.timestamp),
        );
      });
      await tx.execute(
        `INSERT INTO vex_statements (document_id, idx, vuln_id, aliases, products, status, justification, impact_statement, action_statement, stated_at)
         VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
        values,
      );
    }
    return { created: replaced === null, replaced, statements: n };
  });
}

function toStatement(r: Row): StoredVexStatement {
  const justification = str(r['justification']);
  const impact = str(r['impact_statement']);
  const action = str(r['action_statement']);
  const timestamp = iso(r['stated_at']);
  return {
    vulnerability: r['vuln_id'] as string,
    aliases: JSON.parse(r['aliases'] as string) as string[],
    products: JSON.parse(r['products'] as string) as VexProduct[],
    status: r['status'] as VexStatus,
    ...(justification !== undefined ? { justification } : {}),
    ...(impact !== undefined ? { impactStatement: impact } : {}),
    ...(action !== undefined ? { actionStatement: action } : {}),
    ...(timestamp !== undefined ? { timestamp } : {}),
    document: { id: r['document_id'] as string, author: r['author'] as string, version: num(r['version']) },
  };
}

export async function listVexStatements(db: SqlDriver, q: { vulnerability?: string } = {}): Promise<StoredVexStatement[]> {
  const cols =
    's.document_id, s.idx, s.vuln_id, s.aliases, s.products, s.status, s.justification, s.impact_statement, s.action_statement, s.stated_at, d.author, d.version';
  const from = 'FROM vex_statements s JOIN vex_documents d ON d.id = s.document_id';
  if (q.vulnerability === undefined) return (await db.query(`SELECT ${cols} ${from} ORDER BY s.document_id, s.idx`)).map(toStatement);
  // By name through the index; by alias with a LIKE on the JSON text, checked exactly in code.
  const v = q.vulnerability;
  const rows = await db.query(`SELECT ${cols} ${from} WHERE s.vuln_id = ? OR s.aliases LIKE ? ORDER BY s.document_id, s.idx`, [v, `%${JSON.stringify(v)}%`]);
  return rows.map(toStatement).filter((s) => s.vulnerability === v || s.aliases.includes(v));
}

export async function listVexDocuments(db: SqlDriver): Promise<StoredVexDocument[]> {
  return (await db.query('SELECT id, author, role, version, issued_at, statement_count, ingested_at FROM vex_documents ORDER BY id')).map((r) => ({
    id: r['id'] as string,
    author: r['author'] as string,
    role: str(r['role']) ?? null,
    version: num(r['version']),
    issuedAt: r['issued_at'] === null || r['issued_at'] === undefined ? null : num(r['issued_at']),
    statementCount: num(r['statement_count']),
    ingestedAt: num(r['ingested_at']),
  }));
}

export async function deleteVexDocument(db: SqlDriver, id: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    await tx.execute('DELETE FROM vex_statements WHERE document_id = ?', [id]);
    return (await tx.execute('DELETE FROM vex_documents WHERE id = ?', [id])) > 0;
  });
}
