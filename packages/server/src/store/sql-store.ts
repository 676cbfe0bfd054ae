import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomUUID } from 'node:crypto';
import type { Report, VexDocument } from '@writ/vuln';
import type { StoredVexDocument, StoredVexStatement } from './types.ts';
import { WritError } from '@writ/spiffe';
import { checkImageDigest } from '@writ/protocol';
import type { Row, SqlDriver, SqlExecutor, SqlValue } from './driver.ts';
import { AGENT_RENEWED_TOPIC, MIGRATIONS } from './schema.ts';
import * as audit from './audit-sql.ts';
import type { AuditCheckpoint, AuditEntry, AuditHead, AuditLeafInput } from './types.ts';
import { getImage, listImages, putReport } from './inventory-sql.ts';
import { listWorkloads, pruneWorkloads, putAgentWorkloads, workloadsWentSilent } from './workloads-sql.ts';
import { recordImages } from './image-sources-sql.ts';
import * as fed from './federation-sql.ts';
import type { FederationRelationship, FederationStatusUpdate } from './types.ts';
import * as vq from './vuln-query-sql.ts';
import * as ve from './vuln-events-sql.ts';
import * as al from './alerts-sql.ts';
import type { Alert, AlertInput, AlertResponse, AlertState } from './types.ts';
import type {
  AffectedPage,
  AffectedPageQuery,
  AffectedRow,
  ImageLineage,
  LinkedImage,
  RunningWorkload,
  VulnerabilityFindingRow,
  VulnerabilityQuery,
} from './types.ts';
import { deleteVexDocument, listVexDocuments, listVexStatements, putVexDocument } from './vex-sql.ts';
import {
  type AdmissionEvent,
  type AdmissionEventQuery,
  DEFAULT_PAGE_SIZE,
  MAX_PAGE_SIZE,
  type AdminToken,
  type GraphEdgeRow,
  type GraphQuery,
  type UiSession,
  type AdmittedImage,
  type AdmittedImagesPage,
  type Agent,
  type Authority,
  type Entry,
  type EntryInput,
  type FederatedBundle,
  type ImageDetail,
  type InventoryImage,
  type JoinToken,
  type ChangeStamp,
  type DecisionEdge,
  type DecisionHit,
  type DecisionQuery,
  type DecisionRecord,
  type ListEntriesQuery,
  type Page,
  type PolicyAck,
  type PolicyRevision,
  type QuarantineEntry,
  type VulnEvent,
  type Role,
  type Store,
  type Lease,
  type StoreChange,
  type StoreChangeKind,
  STORE_CHANGES,
  type Workload,
  type WorkloadInput,
  type WorkloadQuery,
} from './types.ts';

const ENTRY_COLUMNS =
  'id, spiffe_id, parent_id, selectors, x509_svid_ttl, jwt_svid_ttl, dns_names, federates_with, admin, hint, expires_at, revision, created_at, updated_at, require_admitted_image, owner';
// Multi-row inserts are chunked to stay under both databases' bound-parameter limits.
const INSERT_CHUNK = 500;
/** The most decisions one transaction of the decision writer takes (queued batches are grouped up to it). */
const DECISION_GROUP_MAX = 2000;
/** Agents' acknowledgements written by one statement (4 parameters each). */
const ACK_CHUNK = 500;

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));

/** The service graph's counts are kept per minute and per hour (graph_counts, migration 28). */
const GRAPH_MINUTE = 60_000;
const GRAPH_HOUR = 3_600_000;
interface GraphCount {
  span: number;
  bucket: number;
  from: string;
  to: string;
  action: string;
  rule: string;
  allow: number;
  deny: number;
  wouldDeny: number;
  last: number;
}
function addTo(c: GraphCount, decision: DecisionRecord['decision'], n: number, at: number): void {
  if (decision === 'allow') c.allow += n;
  else if (decision === 'deny') c.deny += n;
  else c.wouldDeny += n;
  if (at > c.last) c.last = at;
}
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : num(v));

function toEntry(r: Row): Entry {
  return {
    id: r['id'] as string,
    spiffeId: r['spiffe_id'] as string,
    parentId: r['parent_id'] as string,
    selectors: JSON.parse(r['selectors'] as string) as string[],
    x509SvidTtl: num(r['x509_svid_ttl']),
    jwtSvidTtl: num(r['jwt_svid_ttl']),
    dnsNames: JSON.parse(r['dns_names'] as string) as string[],
    federatesWith: JSON.parse(r['federates_with'] as string) as string[],
    admin: num(r['admin']) === 1,
    hint: r['hint'] as string,
    expiresAt: numOrNull(r['expires_at']),
    revision: num(r['revision']),
    createdAt: num(r['created_at']),
    updatedAt: num(r['updated_at']),
    requireAdmittedImage: num(r['require_admitted_image']) === 1,
    ...(typeof r['owner'] === 'string' ? { owner: r['owner'] } : {}),
  };
}

function toAgent(r: Row): Agent {
  return {
    spiffeId: r['spiffe_id'] as string,
    nodeName: r['node_name'] as string,
    attestationType: r['attestation_type'] as string,
    selectors: JSON.parse(r['selectors'] as string) as string[],
    serial: r['serial'] as string,
    expiresAt: num(r['expires_at']),
    banned: num(r['banned']) === 1,
    createdAt: num(r['created_at']),
    updatedAt: num(r['updated_at']),
  };
}

function toAdminToken(r: Row): AdminToken {
  return {
    id: r['id'] as string,
    hash: r['hash'] as string,
    role: r['role'] as Role,
    name: r['name'] as string,
    createdAt: num(r['created_at']),
    expiresAt: numOrNull(r['expires_at']),
  };
}

function toAuthority(r: Row): Authority {
  return {
    id: r['id'] as string,
    kind: r['kind'] as Authority['kind'],
    serverId: r['server_id'] as string,
    status: r['status'] as Authority['status'],
    publicData: r['public_data'] as string,
    notBefore: num(r['not_before']),
    notAfter: num(r['not_after']),
  };
}

function toPolicyRevision(r: Row): PolicyRevision {
  return {
    revision: num(r['revision']),
    createdAt: num(r['created_at']),
    createdBy: r['created_by'] as string,
    comment: r['comment'] as string,
    policies: JSON.parse(r['policies'] as string) as Record<string, string>,
  };
}

function toFederated(r: Row): FederatedBundle {
  return { trustDomain: r['trust_domain'] as string, bundle: r['bundle'] as string, updatedAt: num(r['updated_at']) };
}

/** Canonical selectors: sorted, unique. Two entries with the same set are the same identity. */
function canonicalSelectors(selectors: readonly string[]): string[] {
  return [...new Set(selectors)].sort();
}

function entryParams(id: string, e: EntryInput, revision: number, createdAt: number, updatedAt: number): SqlValue[] {
  const selectors = canonicalSelectors(e.selectors);
  return [
    id,
    e.spiffeId,
    e.parentId,
    JSON.stringify(selectors),
    selectors.join('\n'),
    e.x509SvidTtl,
    e.jwtSvidTtl,
    JSON.stringify(e.dnsNames),
    JSON.stringify(e.federatesWith),
    e.admin ? 1 : 0,
    e.hint,
    e.expiresAt,
    revision,
    createdAt,
    updatedAt,
    e.requireAdmittedImage ? 1 : 0,
    e.owner ?? null,
  ];
}

/**
 * The quarantine version at `?` (now): writes count 2 each, expired rows 1 each. An expiry raises
 * it by 1; a write raises it by at least 1 even when it replaces or removes an expired row (which
 * lowers the expired count by 1). So it grows with every change of the live set, and never falls.
 */
const QUARANTINE_VERSION =
  "((SELECT value FROM counters WHERE name = 'quarantine_writes') + (SELECT COUNT(*) FROM quarantine WHERE expires_at IS NOT NULL AND expires_at <= ?))";
const QUARANTINE_WRITTEN = "UPDATE counters SET value = value + 2 WHERE name = 'quarantine_writes'";

/**
 * A statement of a transaction whose answer nothing in it needs (a counter bumped for the readers
 * of a table): sent with the COMMIT where the driver can (`atCommit`), so a row many writers update
 * (the counter) is held for the commit only, not for one more round trip before it.
 */
async function late(tx: SqlExecutor, sql: string, params: readonly SqlValue[] = []): Promise<void> {
  if (tx.atCommit) tx.atCommit(sql, params);
  else await tx.execute(sql, params);
}

const ENTRY_INSERT_COLUMNS =
  'id, spiffe_id, parent_id, selectors, selectors_key, x509_svid_ttl, jwt_svid_ttl, dns_names, federates_with, admin, hint, expires_at, revision, created_at, updated_at, require_admitted_image, owner';
const ENTRY_ROW = `(${Array(17).fill('?').join(', ')})`;

function encodePageToken(id: string): string {
  return Buffer.from(id, 'utf8').toString('base64url');
}
function decodePageToken(token: string): string {
  if (token.length > 200 || !/^[A-Za-z0-9_-]*$/.test(token))
    throw new WritError('ERR_PAGE_TOKEN_INVALID', 'pageToken is not one this server issued', { field: 'pageToken' });
  return Buffer.from(token, 'base64url').toString('utf8');
}

/** The Store over any SqlDriver: the same SQL runs on SQLite and PostgreSQL. */
export class SqlStore implements Store {
  readonly #db: SqlDriver;
  readonly #listeners = new Set<(change: StoreChange) => void>();
  /** Digest -> when this store last wrote its `lastSeen`: a webhook records the same digests for every pod. */
  readonly #admittedWritten = new Map<string, number>();
  /** The notification listeners running (`listen`), stopped by `close`. */
  readonly #listening = new Set<() => Promise<void>>();
  /** Who the writes of the current request are by (set by the server's request handler). */
  readonly #actor = new AsyncLocalStorage<string>();
  /** The audit fold running in this process, and the one queued behind it (`#fold`). */
  #folding: Promise<void> | undefined;
  #foldNext: Promise<void> | undefined;

  constructor(driver: SqlDriver) {
    this.#db = driver;
  }

  withActor<T>(actor: string, fn: () => Promise<T>): Promise<T> {
    return this.#actor.run(actor, fn);
  }

  /**
   * Queues the audit leaves of a change inside its transaction: if this fails the change is rolled
   * back; once it commits, the next fold (`auditHead`, which every reader of the log goes through) appends them.
   */
  #audit(tx: SqlExecutor, ...leaves: AuditLeafInput[]): Promise<void> {
    return audit.queueAudit(tx, Date.now(), this.#actor.getStore() ?? 'system', leaves);
  }

  /** A write of one statement or a helper's: in a transaction with its audit leaves. */
  #audited<T>(fn: (tx: SqlExecutor) => Promise<T>, leaves: (result: T) => AuditLeafInput[]): Promise<T> {
    return this.#db.transaction(async (tx) => {
      const out = await fn(tx);
      await this.#audit(tx, ...leaves(out));
      return out;
    });
  }

  /** A transaction-scoped executor that also knows the driver's error kinds (for the helpers in other files). */
  #withDriver(tx: SqlExecutor): SqlExecutor & Pick<SqlDriver, 'isUniqueViolation'> {
    return {
      query: tx.query,
      execute: tx.execute,
      ...(tx.atCommit ? { atCommit: tx.atCommit } : {}),
      isUniqueViolation: (e) => this.#db.isUniqueViolation(e),
    };
  }

  async auditHead(): Promise<AuditHead> {
    await this.#fold();
    return audit.auditHead(this.#db);
  }

  /**
   * One fold at a time in this process, and one more queued behind it for every caller that came
   * while it ran (it starts after their calls, so it takes their committed changes): many readers
   * at once wait for two folds, not one pool connection each on the head row's lock.
   */
  #fold(): Promise<void> {
    if (this.#foldNext) return this.#foldNext;
    if (this.#folding) {
      const next = this.#folding
        .catch(() => undefined)
        .then(() => {
          this.#foldNext = undefined;
          return this.#fold();
        });
      this.#foldNext = next;
      return next;
    }
    const running = audit.foldAudit(this.#db).then(
      () => {
        this.#folding = undefined;
      },
      (err: unknown) => {
        this.#folding = undefined;
        throw err;
      },
    );
    this.#folding = running;
    return running;
  }

  auditPending(): Promise<number> {
    return audit.auditPending(this.#db);
  }

  listAuditEntries(start: number, end: number): Promise<AuditEntry[]> {
    return audit.listAuditEntries(this.#db, start, end);
  }

  auditNodes(nodes: readonly { level: number; index: number }[]): Promise<Uint8Array[]> {
    return audit.auditNodes(this.#db, nodes);
  }

  putAuditCheckpoint(c: AuditCheckpoint): Promise<void> {
    return audit.putAuditCheckpoint(this.#db, c);
  }

  latestAuditCheckpoint(): Promise<AuditCheckpoint | undefined> {
    return audit.latestAuditCheckpoint(this.#db);
  }

  onChange(fn: (change: StoreChange) => void): () => void {
    const own = (c: StoreChange): void => fn(c); // a function subscribed twice is called twice
    this.#listeners.add(own);
    return () => void this.#listeners.delete(own);
  }

  /** Every write method ends here once its transaction committed: the one path to the change hub. */
  #changed<T>(result: T, change: StoreChange): T {
    for (const fn of this.#listeners) {
      try {
        fn(change);
      } catch {
        // A listener's failure is its own; the write has committed.
      }
    }
    return result;
  }

  get kind(): 'sqlite' | 'postgres' {
    return this.#db.dialect;
  }

  listen(onState: (live: boolean, err?: Error) => void): () => Promise<void> {
    if (!this.#db.listen) return async () => undefined;
    const stop = this.#db.listen({
      onState,
      onTopic: (topic, arg) => {
        // A renewal's notification has a topic of its own, which servers before migration 30 ignore.
        if (topic === AGENT_RENEWED_TOPIC) return void this.#changed(undefined, { kind: 'agents', renewed: [arg] });
        if (!(STORE_CHANGES as readonly string[]).includes(topic)) return;
        const kind = topic as StoreChangeKind;
        // The argument: the agent revoked, or the parents of the entries written (none: too many to tell).
        if (kind === 'agents') this.#changed(undefined, { kind, revoked: arg ? [arg] : [] });
        else if (kind === 'entries' && arg) this.#changed(undefined, { kind, parents: arg.split(',') });
        else this.#changed(undefined, { kind });
      },
    });
    this.#listening.add(stop);
    return () => (this.#listening.delete(stop), stop());
  }

  async announce(kind: StoreChangeKind): Promise<void> {
    this.#changed(undefined, { kind });
    await this.#db.announce?.(kind);
  }

  async acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean> {
    // One statement: two replicas racing for an expired lease cannot both win.
    const rows = await this.#db.query(
      `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
       WHERE leases.holder = excluded.holder OR leases.expires_at <= ? RETURNING holder`,
      [name, holder, now + ttlMs, now],
    );
    return rows.length > 0;
  }

  async releaseLease(name: string, holder: string): Promise<void> {
    await this.#db.execute('DELETE FROM leases WHERE name = ? AND holder = ?', [name, holder]);
  }

  async listLeases(): Promise<Lease[]> {
    return (await this.#db.query('SELECT name, holder, expires_at FROM leases ORDER BY name')).map((r) => ({
      name: r['name'] as string,
      holder: r['holder'] as string,
      expiresAt: num(r['expires_at']),
    }));
  }

  async migrate(): Promise<void> {
    await this.#db.transaction(async (tx) => {
      await this.#db.lockForMigration(tx);
      await tx.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
      const done = new Set((await tx.query('SELECT version FROM schema_migrations')).map((r) => num(r['version'])));
      for (const m of MIGRATIONS) {
        if (done.has(m.version)) continue;
        const int64Key = this.#db.dialect === 'sqlite' ? 'INTEGER PRIMARY KEY' : 'BIGINT PRIMARY KEY';
        const withoutRowid = this.#db.dialect === 'sqlite' ? ' WITHOUT ROWID' : '';
        for (const stmt of m.statements) await tx.query(stmt.replaceAll('{INT64_PRIMARY_KEY}', int64Key).replaceAll('{WITHOUT_ROWID}', withoutRowid));
        if (this.#db.dialect === 'postgres') for (const stmt of m.postgres ?? []) await tx.query(stmt);
        await tx.query('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)', [m.version, Date.now()]);
      }
    });
  }

  async ping(): Promise<void> {
    await this.#db.query('SELECT 1 AS ok');
  }

  async close(): Promise<void> {
    await Promise.all([...this.#listening].map((stop) => stop()));
    this.#listening.clear();
    await this.#db.close();
  }

  async #nextRevision(tx: SqlExecutor, count: number): Promise<number> {
    const rows = await tx.query("UPDATE counters SET value = value + ? WHERE name = 'entry_revision' RETURNING value", [count]);
    return num(rows[0]!['value']);
  }

  #unique<T>(err: unknown, what: string): T {
    if (this.#db.isUniqueViolation(err)) throw new WritError('ERR_ENTRY_EXISTS', what);
    throw err;
  }

  async createEntries(inputs: readonly EntryInput[], now: number): Promise<Entry[]> {
    if (inputs.length === 0) return [];
    const seen = new Map<string, number>();
    inputs.forEach((e, i) => {
      const key = `${e.spiffeId}\u0000${e.parentId}\u0000${canonicalSelectors(e.selectors).join('\n')}`;
      const prev = seen.get(key);
      if (prev !== undefined)
        throw new WritError('ERR_ENTRY_EXISTS', `entries[${i}] duplicates entries[${prev}] (same spiffeId, parentId and selectors)`, {
          field: `entries[${i}]`,
        });
      seen.set(key, i);
    });
    try {
      return await this.#db
        .transaction(async (tx) => {
          const last = await this.#nextRevision(tx, inputs.length);
          const first = last - inputs.length + 1;
          const created: Entry[] = inputs.map((e, i) => ({
            ...e,
            selectors: canonicalSelectors(e.selectors),
            id: randomUUID(),
            revision: first + i,
            createdAt: now,
            updatedAt: now,
            requireAdmittedImage: e.requireAdmittedImage ?? false,
          }));
          for (let i = 0; i < created.length; i += INSERT_CHUNK) {
            const chunk = created.slice(i, i + INSERT_CHUNK);
            await tx.query(
              `INSERT INTO entries (${ENTRY_INSERT_COLUMNS}) VALUES ${chunk.map(() => ENTRY_ROW).join(', ')}`,
              chunk.flatMap((e) => entryParams(e.id, e, e.revision, now, now)),
            );
            const sel = chunk.flatMap((e) => e.selectors.map((s) => [e.id, s] as const));
            for (let j = 0; j < sel.length; j += INSERT_CHUNK * 2) {
              const part = sel.slice(j, j + INSERT_CHUNK * 2);
              await tx.query(`INSERT INTO entry_selectors (entry_id, selector) VALUES ${part.map(() => '(?, ?)').join(', ')}`, part.flat());
            }
          }
          await this.#audit(tx, ...created.map((e) => ({ kind: 'entry.create', subject: e.spiffeId, detail: entryDetail(e) })));
          return created;
        })
        .then((created) =>
          this.#changed(created, {
            kind: 'entries',
            parents: [...new Set(created.map((e) => e.parentId))],
            revisions: [created[0]!.revision, created.at(-1)!.revision],
          }),
        );
    } catch (err) {
      return this.#unique(
        err,
        inputs.length === 1
          ? 'an entry with this spiffeId, parentId and selectors already exists'
          : 'an entry in the batch already exists (same spiffeId, parentId and selectors); nothing was created',
      );
    }
  }

  async getEntry(id: string): Promise<Entry | undefined> {
    const rows = await this.#db.query(`SELECT ${ENTRY_COLUMNS} FROM entries WHERE id = ?`, [id]);
    return rows[0] ? toEntry(rows[0]) : undefined;
  }

  async listEntries(q: ListEntriesQuery): Promise<Page<Entry>> {
    const pageSize = Math.min(Math.max(q.pageSize ?? DEFAULT_PAGE_SIZE, 1), MAX_PAGE_SIZE);
    const where: string[] = [];
    const params: SqlValue[] = [];
    if (q.spiffeId !== undefined) where.push('spiffe_id = ?'), params.push(q.spiffeId);
    if (q.parentId !== undefined) where.push('parent_id = ?'), params.push(q.parentId);
    const selectors = q.selectors ? canonicalSelectors(q.selectors) : [];
    if (selectors.length > 0) {
      where.push(
        `id IN (SELECT entry_id FROM entry_selectors WHERE selector IN (${selectors.map(() => '?').join(', ')}) GROUP BY entry_id HAVING COUNT(*) = ?)`,
      );
      params.push(...selectors, selectors.length);
    }
    if (q.pageToken) where.push('id > ?'), params.push(decodePageToken(q.pageToken));
    const rows = await this.#db.query(`SELECT ${ENTRY_COLUMNS} FROM entries ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id LIMIT ?`, [
      ...params,
      pageSize + 1,
    ]);
    const items = rows.slice(0, pageSize).map(toEntry);
    return { items, nextPageToken: rows.length > pageSize ? encodePageToken(items[items.length - 1]!.id) : undefined };
  }

  async updateEntry(id: string, input: EntryInput, now: number): Promise<Entry> {
    try {
      return await this.#db
        .transaction(async (tx) => {
          const cur = await tx.query('SELECT created_at, parent_id FROM entries WHERE id = ?', [id]);
          if (!cur[0]) throw new WritError('ERR_ENTRY_NOT_FOUND', `entry ${id} not found`);
          const createdAt = num(cur[0]['created_at']);
          const revision = await this.#nextRevision(tx, 1);
          if (cur[0]['parent_id'] !== input.parentId) {
            await tx.query('INSERT INTO entry_tombstones (entry_id, parent_id, revision) VALUES (?, ?, ?)', [id, cur[0]['parent_id'] as string, revision]);
          }
          const p = entryParams(id, input, revision, createdAt, now);
          await tx.query(
            `UPDATE entries SET spiffe_id = ?, parent_id = ?, selectors = ?, selectors_key = ?, x509_svid_ttl = ?, jwt_svid_ttl = ?, dns_names = ?,
             federates_with = ?, admin = ?, hint = ?, expires_at = ?, revision = ?, updated_at = ?, require_admitted_image = ?, owner = ? WHERE id = ?`,
            [...p.slice(1, 13), now, p[15]!, p[16] ?? null, id],
          );
          await tx.query('DELETE FROM entry_selectors WHERE entry_id = ?', [id]);
          const selectors = canonicalSelectors(input.selectors);
          if (selectors.length)
            await tx.query(
              `INSERT INTO entry_selectors (entry_id, selector) VALUES ${selectors.map(() => '(?, ?)').join(', ')}`,
              selectors.flatMap((s) => [id, s]),
            );
          const updated = { ...input, selectors, id, revision, createdAt, updatedAt: now, requireAdmittedImage: input.requireAdmittedImage ?? false };
          await this.#audit(tx, { kind: 'entry.update', subject: updated.spiffeId, detail: entryDetail(updated) });
          return { updated, parents: [...new Set([cur[0]['parent_id'] as string, input.parentId])] };
        })
        .then(({ updated, parents }) => this.#changed(updated, { kind: 'entries', parents, revisions: [updated.revision, updated.revision] }));
    } catch (err) {
      return this.#unique(err, 'another entry with this spiffeId, parentId and selectors already exists');
    }
  }

  async deleteEntry(id: string): Promise<boolean> {
    const deleted = await this.#db.transaction(async (tx) => {
      await tx.query('DELETE FROM entry_selectors WHERE entry_id = ?', [id]);
      const rows = await tx.query('DELETE FROM entries WHERE id = ? RETURNING parent_id, spiffe_id', [id]);
      if (!rows.length) return undefined;
      const parent = rows[0]!['parent_id'] as string;
      const revision = await this.#nextRevision(tx, 1);
      await tx.query('INSERT INTO entry_tombstones (entry_id, parent_id, revision) VALUES (?, ?, ?)', [id, parent, revision]);
      await this.#audit(tx, { kind: 'entry.delete', subject: rows[0]!['spiffe_id'] as string, detail: { id, revision } });
      return { parent, revision };
    });
    return deleted ? this.#changed(true, { kind: 'entries', parents: [deleted.parent], revisions: [deleted.revision, deleted.revision] }) : false;
  }

  async createJoinToken(t: JoinToken): Promise<void> {
    await this.#audited(
      (tx) => tx.query('INSERT INTO join_tokens (hash, node_name, expires_at, created_at) VALUES (?, ?, ?, ?)', [t.hash, t.nodeName, t.expiresAt, t.createdAt]),
      () => [{ kind: 'join-token.create', subject: t.nodeName, detail: { expiresAt: t.expiresAt } }],
    );
    this.#changed(undefined, { kind: 'join-tokens' });
  }

  async peekJoinToken(hash: string): Promise<JoinToken | undefined> {
    const r = (await this.#db.query('SELECT node_name, expires_at, created_at FROM join_tokens WHERE hash = ?', [hash]))[0];
    return r ? { hash, nodeName: r['node_name'] as string, expiresAt: num(r['expires_at']), createdAt: num(r['created_at']) } : undefined;
  }

  async redeemJoinToken(hash: string, now: number): Promise<JoinToken> {
    // One conditional UPDATE: two agents racing with the same token cannot both win.
    const rows = await this.#audited(
      (tx) =>
        tx.query('UPDATE join_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL AND expires_at > ? RETURNING hash, node_name, expires_at, created_at', [
          now,
          hash,
          now,
        ]),
      (rows) => rows.map((r) => ({ kind: 'join-token.redeem', subject: r['node_name'] as string, detail: {} })),
    );
    const r = rows[0];
    if (r)
      return this.#changed(
        { hash, nodeName: r['node_name'] as string, expiresAt: num(r['expires_at']), createdAt: num(r['created_at']) },
        { kind: 'join-tokens' },
      );
    const why = (await this.#db.query('SELECT used_at, expires_at FROM join_tokens WHERE hash = ?', [hash]))[0];
    if (!why) throw new WritError('ERR_JOIN_TOKEN_INVALID', 'join token is not known');
    if (why['used_at'] !== null) throw new WritError('ERR_JOIN_TOKEN_USED', 'join token was already used');
    throw new WritError('ERR_JOIN_TOKEN_EXPIRED', 'join token has expired');
  }

  async createAdminToken(t: AdminToken): Promise<void> {
    await this.#audited(
      (tx) =>
        tx.query('INSERT INTO admin_tokens (id, hash, role, name, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)', [
          t.id,
          t.hash,
          t.role,
          t.name,
          t.createdAt,
          t.expiresAt,
        ]),
      () => [{ kind: 'token.create', subject: t.name, detail: { id: t.id, role: t.role, expiresAt: t.expiresAt } }],
    );
    this.#changed(undefined, { kind: 'admin-tokens' });
  }

  async findAdminToken(hash: string): Promise<AdminToken | undefined> {
    const rows = await this.#db.query('SELECT * FROM admin_tokens WHERE hash = ?', [hash]);
    return rows[0] ? toAdminToken(rows[0]) : undefined;
  }

  async listAdminTokens(): Promise<AdminToken[]> {
    return (await this.#db.query('SELECT * FROM admin_tokens ORDER BY created_at, id')).map(toAdminToken);
  }

  async deleteAdminToken(id: string): Promise<boolean> {
    const rows = await this.#audited(
      (tx) => tx.query('DELETE FROM admin_tokens WHERE id = ? RETURNING id, name', [id]),
      (rows) => rows.map((r) => ({ kind: 'token.delete', subject: r['name'] as string, detail: { id } })),
    );
    const deleted = rows.length > 0;
    return deleted && this.#changed(true, { kind: 'admin-tokens' });
  }

  async createUiSession(u: UiSession): Promise<void> {
    await this.#db.transaction(async (tx) => {
      await tx.execute('DELETE FROM ui_sessions WHERE expires_at <= ?', [u.createdAt]);
      await tx.execute('INSERT INTO ui_sessions (id_hash, token_id, csrf_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)', [
        u.idHash,
        u.tokenId,
        u.csrfHash,
        u.createdAt,
        u.expiresAt,
      ]);
    });
    this.#changed(undefined, { kind: 'admin-tokens' });
  }

  async findUiSession(idHash: string, now: number): Promise<{ session: UiSession; token: AdminToken } | undefined> {
    const rows = await this.#db.query(
      `SELECT s.id_hash, s.token_id, s.csrf_hash, s.created_at AS s_created_at, s.expires_at AS s_expires_at, t.*
        FROM ui_sessions s JOIN admin_tokens t ON t.id = s.token_id
        WHERE s.id_hash = ? AND s.expires_at > ? AND (t.expires_at IS NULL OR t.expires_at > ?)`,
      [idHash, now, now],
    );
    const r = rows[0];
    if (!r) return undefined;
    return {
      session: {
        idHash: r['id_hash'] as string,
        tokenId: r['token_id'] as string,
        csrfHash: r['csrf_hash'] as string,
        createdAt: num(r['s_created_at']),
        expiresAt: num(r['s_expires_at']),
      },
      token: toAdminToken(r),
    };
  }

  async deleteUiSession(idHash: string): Promise<boolean> {
    const deleted = (await this.#db.execute('DELETE FROM ui_sessions WHERE id_hash = ?', [idHash])) > 0;
    return deleted && this.#changed(true, { kind: 'admin-tokens' });
  }

  async syncEntries(parentId: string, sinceRevision: number): Promise<{ entries: Entry[]; removed: string[]; revision: number }> {
    // No transaction needed: the revision is read first, so anything committed after it has a
    // higher revision and is (re)sent by the next call. Sending a change twice is harmless.
    const revision = num((await this.#db.query("SELECT value FROM counters WHERE name = 'entry_revision'"))[0]!['value']);
    const entries = (
      await this.#db.query(`SELECT ${ENTRY_COLUMNS} FROM entries WHERE parent_id = ? AND revision > ? ORDER BY revision`, [parentId, sinceRevision])
    ).map(toEntry);
    const removed =
      sinceRevision === 0
        ? []
        : (await this.#db.query('SELECT entry_id FROM entry_tombstones WHERE parent_id = ? AND revision > ?', [parentId, sinceRevision])).map(
            (r) => r['entry_id'] as string,
          );
    return { entries, removed, revision: entries.reduce((m, e) => Math.max(m, e.revision), revision) };
  }

  async deleteAgent(spiffeId: string): Promise<boolean> {
    const rows = await this.#audited(
      (tx) => tx.query('DELETE FROM agents WHERE spiffe_id = ? RETURNING spiffe_id', [spiffeId]),
      (rows) => rows.map(() => ({ kind: 'agent.evict', subject: spiffeId, detail: {} })),
    );
    const deleted = rows.length > 0;
    return deleted && this.#changed(true, { kind: 'agents', revoked: [spiffeId] });
  }

  async upsertAgent(a: Agent): Promise<void> {
    await this.#audited(
      (tx) =>
        tx.query(
          `INSERT INTO agents (spiffe_id, node_name, attestation_type, selectors, serial, expires_at, banned, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (spiffe_id) DO UPDATE SET node_name = excluded.node_name, attestation_type = excluded.attestation_type,
         selectors = excluded.selectors, serial = excluded.serial, expires_at = excluded.expires_at, banned = excluded.banned, updated_at = excluded.updated_at`,
          [a.spiffeId, a.nodeName, a.attestationType, JSON.stringify(a.selectors), a.serial, a.expiresAt, a.banned ? 1 : 0, a.createdAt, a.updatedAt],
        ),
      () => [
        {
          kind: a.banned ? 'agent.ban' : 'agent.attest',
          subject: a.spiffeId,
          detail: { nodeName: a.nodeName, attestationType: a.attestationType, serial: a.serial, expiresAt: a.expiresAt },
        },
      ],
    );
    this.#changed(undefined, a.banned ? { kind: 'agents', revoked: [a.spiffeId] } : { kind: 'agents', renewed: [a.spiffeId] });
  }

  async getAgent(spiffeId: string): Promise<Agent | undefined> {
    const rows = await this.#db.query('SELECT * FROM agents WHERE spiffe_id = ?', [spiffeId]);
    return rows[0] ? toAgent(rows[0]) : undefined;
  }

  async listAgents(): Promise<Agent[]> {
    return (await this.#db.query('SELECT * FROM agents ORDER BY spiffe_id')).map(toAgent);
  }

  async listAuthorities(): Promise<Authority[]> {
    return (await this.#db.query('SELECT * FROM authorities ORDER BY not_before, id')).map(toAuthority);
  }

  async saveAuthorities(upsert: readonly Authority[], remove: readonly string[]): Promise<void> {
    if (upsert.length === 0 && remove.length === 0) return;
    await this.#db.transaction(async (tx) => {
      for (const a of upsert) {
        await tx.query(
          `INSERT INTO authorities (id, kind, server_id, status, public_data, not_before, not_after) VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET status = excluded.status, public_data = excluded.public_data`,
          [a.id, a.kind, a.serverId, a.status, a.publicData, a.notBefore, a.notAfter],
        );
      }
      for (const id of remove) await tx.query('DELETE FROM authorities WHERE id = ?', [id]);
      await late(tx, "UPDATE counters SET value = value + 1 WHERE name = 'bundle_sequence'");
      await this.#audit(tx, {
        kind: 'authorities.save',
        subject: [...new Set(upsert.map((a) => a.kind))].join(',') || 'removed',
        detail: { upsert: upsert.map((a) => ({ id: a.id, kind: a.kind, status: a.status, serverId: a.serverId, notAfter: a.notAfter })), remove },
      });
    });
    this.#changed(undefined, { kind: 'authorities' });
  }

  async bundleSequence(): Promise<number> {
    const rows = await this.#db.query("SELECT value FROM counters WHERE name = 'bundle_sequence'");
    return num(rows[0]!['value']);
  }

  async appendPolicyRevision(rev: Omit<PolicyRevision, 'revision'>, expectedCurrent: number): Promise<PolicyRevision> {
    try {
      return await this.#db
        .transaction(async (tx) => {
          const cur = num((await tx.query('SELECT COALESCE(MAX(revision), 0) AS r FROM policy_revisions'))[0]!['r']);
          if (cur !== expectedCurrent)
            throw new WritError('ERR_CONFLICT', `the policy set changed meanwhile (revision ${cur}, expected ${expectedCurrent}); apply again`);
          const revision = cur + 1;
          await tx.query('INSERT INTO policy_revisions (revision, created_at, created_by, comment, policies) VALUES (?, ?, ?, ?, ?)', [
            revision,
            rev.createdAt,
            rev.createdBy,
            rev.comment,
            JSON.stringify(rev.policies),
          ]);
          await this.#audit(tx, {
            kind: 'policy.apply',
            subject: `revision ${revision}`,
            detail: {
              revision,
              createdBy: rev.createdBy,
              comment: rev.comment,
              policies: sha256Of(JSON.stringify(rev.policies)),
              names: Object.keys(rev.policies),
            },
          });
          return { ...rev, revision };
        })
        .then((r) => this.#changed(r, { kind: 'policies' }));
    } catch (err) {
      if (this.#db.isUniqueViolation(err)) throw new WritError('ERR_CONFLICT', 'the policy set changed meanwhile; apply again');
      throw err;
    }
  }

  async getPolicyRevision(revision?: number): Promise<PolicyRevision | undefined> {
    const rows =
      revision === undefined
        ? await this.#db.query('SELECT * FROM policy_revisions ORDER BY revision DESC LIMIT 1')
        : await this.#db.query('SELECT * FROM policy_revisions WHERE revision = ?', [revision]);
    return rows[0] ? toPolicyRevision(rows[0]) : undefined;
  }

  async listPolicyRevisions(limit: number): Promise<PolicyRevision[]> {
    return (await this.#db.query('SELECT * FROM policy_revisions ORDER BY revision DESC LIMIT ?', [limit])).map(toPolicyRevision);
  }

  async putQuarantine(q: QuarantineEntry): Promise<void> {
    // Nothing here needs an answer: on PostgreSQL the write, the counter and the leaf are one message with BEGIN and COMMIT.
    await this.#db.transaction(async (tx) => {
      await late(
        tx,
        `INSERT INTO quarantine (spiffe_id, reason, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (spiffe_id) DO UPDATE SET reason = excluded.reason, created_by = excluded.created_by, created_at = excluded.created_at, expires_at = excluded.expires_at`,
        [q.spiffeId, q.reason, q.createdBy, q.createdAt, q.expiresAt],
      );
      await late(tx, QUARANTINE_WRITTEN);
      await this.#audit(tx, quarantineLeaf(q));
    });
    this.#changed(undefined, { kind: 'quarantine' });
  }

  async putQuarantines(qs: readonly QuarantineEntry[], now: number): Promise<QuarantineEntry[]> {
    const added = await this.#db.transaction(async (tx) => {
      const out: QuarantineEntry[] = [];
      for (const q of qs) {
        // An expired row is replaced; a live one (an operator's, or an earlier containment) stands.
        const rows = await tx.query(
          `INSERT INTO quarantine (spiffe_id, reason, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (spiffe_id) DO UPDATE SET reason = excluded.reason, created_by = excluded.created_by, created_at = excluded.created_at, expires_at = excluded.expires_at
           WHERE quarantine.expires_at IS NOT NULL AND quarantine.expires_at <= ? RETURNING spiffe_id`,
          [q.spiffeId, q.reason, q.createdBy, q.createdAt, q.expiresAt, now],
        );
        if (rows.length) out.push(q);
      }
      if (out.length) await late(tx, QUARANTINE_WRITTEN);
      await this.#audit(tx, ...out.map(quarantineLeaf));
      return out;
    });
    if (added.length) this.#changed(undefined, { kind: 'quarantine' });
    return added;
  }

  // ---- alerts (issue 15, section 3)
  async raiseAlert(a: AlertInput, windowMs: number): Promise<{ alert: Alert; created: boolean }> {
    return this.#changed(await al.raiseAlert(this.#db, a, windowMs), { kind: 'alerts' });
  }

  listAlerts(q: { rule?: string; state?: AlertState; limit: number }): Promise<Alert[]> {
    return al.listAlerts(this.#db, q);
  }

  getAlert(id: string): Promise<Alert | undefined> {
    return al.getAlert(this.#db, id);
  }

  async ackAlert(id: string, by: string, at: number): Promise<Alert | undefined> {
    const { alert, changed } = await al.ackAlert(this.#db, id, by, at);
    return changed ? this.#changed(alert, { kind: 'alerts' }) : alert;
  }

  async setAlertResponse(id: string, response: AlertResponse): Promise<Alert | undefined> {
    const a = await al.setAlertResponse(this.#db, id, response);
    return a ? this.#changed(a, { kind: 'alerts' }) : a;
  }

  seenEdges(pairs: readonly { from: string; to: string }[]): Promise<Set<string>> {
    return al.seenEdges(this.#db, pairs);
  }

  seenIdentities(ids: readonly string[]): Promise<Set<string>> {
    return al.seenIdentities(this.#db, ids);
  }

  async pruneAlerts(before: number): Promise<number> {
    const n = await al.pruneAlerts(this.#db, before);
    return n ? this.#changed(n, { kind: 'alerts' }) : n;
  }

  // ---- vulnerability events (issue 13, section 6)
  async syncVulnExposures(current: readonly Omit<VulnEvent, 'seq'>[]): Promise<VulnEvent[]> {
    const events = await ve.syncVulnExposures(this.#db, current);
    return events.length ? this.#changed(events, { kind: 'vuln-events' }) : events;
  }

  queryVulnEvents(q: { since?: number; after?: number; upTo?: number; limit: number }): Promise<VulnEvent[]> {
    return ve.queryVulnEvents(this.#db, q);
  }

  vulnEventCursor(): Promise<number> {
    return ve.vulnEventCursor(this.#db);
  }

  async pruneVulnEvents(before: number): Promise<number> {
    return this.#changed(await ve.pruneVulnEvents(this.#db, before), { kind: 'vuln-events' });
  }

  async removeQuarantine(spiffeId: string): Promise<boolean> {
    const deleted = await this.#db.transaction(async (tx) => {
      const rows = await tx.query('DELETE FROM quarantine WHERE spiffe_id = ? RETURNING spiffe_id', [spiffeId]);
      if (rows.length) await late(tx, QUARANTINE_WRITTEN);
      if (rows.length) await this.#audit(tx, { kind: 'quarantine.remove', subject: spiffeId, detail: {} });
      return rows.length > 0;
    });
    return deleted && this.#changed(true, { kind: 'quarantine' });
  }

  async quarantineVersion(now: number): Promise<number> {
    const r = await this.#db.query(`SELECT ${QUARANTINE_VERSION} AS v`, [now]);
    return num(r[0]!['v']);
  }

  async listQuarantine(now: number): Promise<QuarantineEntry[]> {
    return (await this.#db.query('SELECT * FROM quarantine WHERE expires_at IS NULL OR expires_at > ? ORDER BY spiffe_id', [now])).map((r) => ({
      spiffeId: r['spiffe_id'] as string,
      reason: r['reason'] as string,
      createdBy: r['created_by'] as string,
      createdAt: num(r['created_at']),
      expiresAt: numOrNull(r['expires_at']),
    }));
  }

  async ackPolicies(acks: readonly PolicyAck[]): Promise<void> {
    if (acks.length === 0) return;
    // One statement per ACK_CHUNK agents, not one per agent in a transaction: a change makes every
    // agent acknowledge at once, and a thousand round trips held a pool connection (and the rows'
    // locks) for 0.5-0.8 s on a loaded machine. Each acknowledgement stands alone: no transaction.
    // In spiffe_id order, so two replicas' batches lock shared rows in the same order.
    const sorted = [...acks].sort((x, y) => (x.spiffeId < y.spiffeId ? -1 : x.spiffeId > y.spiffeId ? 1 : 0));
    for (let i = 0; i < sorted.length; i += ACK_CHUNK) {
      const chunk = sorted.slice(i, i + ACK_CHUNK);
      // VALUES columns are column1..column4 in both databases; the casts type PostgreSQL's parameters.
      await this.#db.execute(
        `UPDATE agents SET policy_revision = v.column2, quarantine_version = v.column3, policy_acked_at = v.column4
           FROM (VALUES ${chunk.map(() => '(?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT))').join(', ')}) AS v
          WHERE agents.spiffe_id = v.column1`,
        chunk.flatMap((a) => [a.spiffeId, a.policyRevision, a.quarantineVersion, a.ackedAt]),
      );
    }
    this.#changed(undefined, { kind: 'policy-acks' });
  }

  async changeStamp(now: number): Promise<ChangeStamp> {
    const r = (
      await this.#db.query(
        `SELECT (SELECT value FROM counters WHERE name = 'entry_revision') AS e,
         (SELECT value FROM counters WHERE name = 'bundle_sequence') AS b,
         (SELECT COALESCE(MAX(revision), 0) FROM policy_revisions) AS p,
         ${QUARANTINE_VERSION} AS q,
         (SELECT COUNT(*) FROM federated_bundles) AS fn,
         (SELECT COALESCE(MAX(updated_at), 0) FROM federated_bundles) AS ft,
         (SELECT COUNT(*) FROM agents) AS an,
         (SELECT COALESCE(SUM(banned), 0) FROM agents) AS ab,
         (SELECT value FROM counters WHERE name = 'admitted_image_epoch') AS ie,
         (SELECT COALESCE(MAX(seq), 0) FROM admitted_images) AS iq`,
        [now],
      )
    )[0]!;
    const agents = `${num(r['an'])}/${num(r['ab'])}`;
    const admittedImages = `${num(r['ie'])}.${num(r['iq'])}`;
    const rest = `${num(r['b'])}|${num(r['p'])}|${num(r['q'])}|${num(r['fn'])}@${num(r['ft'])}|${agents}|${admittedImages}`;
    return { entryRevision: num(r['e']), bundleSequence: num(r['b']), agents, admittedImages, rest, all: `${num(r['e'])}|${rest}` };
  }

  async listPolicyAcks(): Promise<PolicyAck[]> {
    const rows = await this.#db.query('SELECT spiffe_id, policy_revision, quarantine_version, policy_acked_at FROM agents WHERE banned = 0 ORDER BY spiffe_id');
    return rows.map((r) => ({
      spiffeId: r['spiffe_id'] as string,
      policyRevision: num(r['policy_revision']),
      quarantineVersion: num(r['quarantine_version']),
      ackedAt: num(r['policy_acked_at']),
    }));
  }

  async addDecisions(records: readonly DecisionRecord[]): Promise<void> {
    if (records.length === 0) return;
    // One leaf per stored batch, its SHA-256: the hot path pays one hash pass and one append.
    const digest = createHash('sha256');
    for (const d of records)
      digest.update(`${JSON.stringify([d.id, d.at, d.from, d.to, d.action, d.decision, d.reason, d.policyRevision, d.rule, d.reporter])}\n`);
    const leaf: AuditLeafInput = {
      kind: 'decisions.batch',
      subject: records[0]!.reporter,
      detail: { count: records.length, sha256: digest.digest('hex') },
    };
    await new Promise<void>((resolve, reject) => {
      this.#decisionQueue.push({ records, leaf, actor: this.#actor.getStore() ?? 'system', resolve, reject });
      this.#writeDecisionQueue();
    });
    this.#changed(undefined, { kind: 'decisions' });
  }

  /**
   * Batches waiting for the decision writer, and whether it runs. Every batch takes the decision
   * counter's row lock for its whole transaction, so batches of one process written side by side
   * only queued on that lock, each holding a pool connection: at 5,000 decisions/s in batches of 50
   * on PostgreSQL, the ten connections waited on it and sync answers, acknowledgements and admin
   * writes timed out for a connection. One writer per process instead, and what arrived while it
   * wrote goes in its next transaction together (each batch still its own audit leaf).
   */
  readonly #decisionQueue: Array<{
    records: readonly DecisionRecord[];
    leaf: AuditLeafInput;
    /** Whose report it is: the writer runs in the first caller's context, not in each batch's. */
    actor: string;
    resolve: () => void;
    reject: (err: unknown) => void;
  }> = [];
  #writingDecisions = false;

  #writeDecisionQueue(): void {
    if (this.#writingDecisions) return;
    this.#writingDecisions = true;
    void (async () => {
      try {
        while (this.#decisionQueue.length > 0) {
          const group = [this.#decisionQueue.shift()!];
          let n = group[0]!.records.length;
          while (this.#decisionQueue.length > 0 && n + this.#decisionQueue[0]!.records.length <= DECISION_GROUP_MAX) {
            const next = this.#decisionQueue.shift()!;
            n += next.records.length;
            group.push(next);
          }
          try {
            await this.#insertDecisions(
              group.flatMap((g) => g.records),
              group.map((g) => ({ actor: g.actor, leaf: g.leaf })),
            );
            for (const g of group) g.resolve();
          } catch (err) {
            for (const g of group) g.reject(err);
          }
        }
      } finally {
        this.#writingDecisions = false;
      }
    })();
  }

  async #insertDecisions(records: readonly DecisionRecord[], leaves: ReadonlyArray<{ actor: string; leaf: AuditLeafInput }>): Promise<void> {
    await this.#db.transaction(async (tx) => {
      // Edges by caller, callee and action (nested maps: no key string per decision).
      type Edges = Map<string, Map<string, Map<string, { first: number; last: number; seen: number }>>>;
      const edges: Edges = new Map();
      // Decisions made while their destination learned, counted again as observed edges.
      const learned: Edges = new Map();
      // The service graph's counts per minute (and, below, per hour) of each edge and rule.
      const graph = new Map<string, GraphCount>();
      const count = (d: DecisionRecord): void => {
        countOn(edges, d);
        if (d.reason === 'LEARNING') countOn(learned, d);
        const bucket = d.at - (d.at % GRAPH_MINUTE);
        const key = `${bucket}\n${d.from}\n${d.to}\n${d.action}\n${d.rule}`;
        let c = graph.get(key);
        if (!c)
          graph.set(
            key,
            (c = { span: GRAPH_MINUTE, bucket, from: d.from, to: d.to, action: d.action, rule: d.rule, allow: 0, deny: 0, wouldDeny: 0, last: d.at }),
          );
        addTo(c, d.decision, 1, d.at);
      };
      const countOn = (edges: Edges, d: DecisionRecord): void => {
        let byTo = edges.get(d.from);
        if (!byTo) edges.set(d.from, (byTo = new Map()));
        let byAction = byTo.get(d.to);
        if (!byAction) byTo.set(d.to, (byAction = new Map()));
        const e = byAction.get(d.action);
        if (e) e.seen++, (e.first = Math.min(e.first, d.at)), (e.last = Math.max(e.last, d.at));
        else byAction.set(d.action, { first: d.at, last: d.at, seen: 1 });
      };
      // The audit leaves first: they need no arrival number, and everything after the counter row's
      // update below runs while that row is locked against every other replica's decisions.
      const at = Date.now();
      for (let i = 0; i < leaves.length; ) {
        let j = i + 1;
        while (j < leaves.length && leaves[j]!.actor === leaves[i]!.actor) j++;
        await audit.queueAudit(
          tx,
          at,
          leaves[i]!.actor,
          leaves.slice(i, j).map((l) => l.leaf),
        );
        i = j;
      }
      // Arrival numbers for the batch: the counter row also orders batches of several replicas (a
      // second one waits for the first to commit), so followers never see a lower seq appear later.
      let seq =
        num((await tx.query("UPDATE counters SET value = value + ? WHERE name = 'decision_seq' RETURNING value", [records.length]))[0]!['value']) -
        records.length;
      for (let i = 0; i < records.length; i += 200) {
        const chunk = records.slice(i, i + 200);
        const insert = `INSERT INTO decisions (id, at, from_id, to_id, action, decision, reason, policy_revision, rule, reporter, seq) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')} ON CONFLICT (id) DO NOTHING`;
        const params = chunk.flatMap((d) => [d.id, d.at, d.from, d.to, d.action, d.decision, d.reason, d.policyRevision, d.rule, d.reporter, ++seq]);
        // Only the rows new here count on their edge: a retried batch's stored ids come back from
        // RETURNING no more. One statement (a savepoint, an insert and its release were three round
        // trips under the counter's lock).
        const inserted = new Set((await tx.query(`${insert} RETURNING id`, params)).map((r) => r['id'] as string));
        // delete, not has: an id twice in one statement (two batches of a group, one retried) is one row.
        for (const d of chunk) if (inserted.delete(d.id)) count(d);
      }
      for (const [table, key, counted] of [
        ['decision_edges', 'from_id, to_id, action', edges],
        ['learned_edges', 'to_id, from_id, action', learned],
      ] as const) {
        const list = [...counted].flatMap(([from, byTo]) =>
          [...byTo].flatMap(([to, byAction]) => [...byAction].map(([action, e]) => ({ from, to, action, ...e }))),
        );
        for (let i = 0; i < list.length; i += 200) {
          const chunk = list.slice(i, i + 200);
          await tx.execute(
            `INSERT INTO ${table} (from_id, to_id, action, first_seen, last_seen, seen) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?)').join(', ')}
              ON CONFLICT (${key}) DO UPDATE SET seen = ${table}.seen + excluded.seen,
                first_seen = CASE WHEN excluded.first_seen < ${table}.first_seen THEN excluded.first_seen ELSE ${table}.first_seen END,
                last_seen = CASE WHEN excluded.last_seen > ${table}.last_seen THEN excluded.last_seen ELSE ${table}.last_seen END`,
            chunk.flatMap((e) => [e.from, e.to, e.action, e.first, e.last, e.seen]),
          );
        }
      }
      await this.#upsertGraphCounts(tx, graph);
    });
  }

  /** Adds a batch's minute counts, and the same summed per hour, to graph_counts (in key order: two replicas never wait on each other crosswise). */
  async #upsertGraphCounts(tx: SqlExecutor, minutes: Map<string, GraphCount>): Promise<void> {
    const all = new Map(minutes);
    for (const m of minutes.values()) {
      const bucket = m.bucket - (m.bucket % GRAPH_HOUR);
      const key = `h${bucket}\n${m.from}\n${m.to}\n${m.action}\n${m.rule}`;
      let h = all.get(key);
      if (!h) all.set(key, (h = { ...m, span: GRAPH_HOUR, bucket, allow: 0, deny: 0, wouldDeny: 0 }));
      h.allow += m.allow;
      h.deny += m.deny;
      h.wouldDeny += m.wouldDeny;
      if (m.last > h.last) h.last = m.last;
    }
    const list = [...all].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, c]) => c);
    for (let i = 0; i < list.length; i += 200) {
      const chunk = list.slice(i, i + 200);
      await tx.execute(
        `INSERT INTO graph_counts (span, bucket, from_id, to_id, action, rule, allow, deny, would_deny, last_seen)
          VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}
          ON CONFLICT (span, bucket, from_id, to_id, action, rule) DO UPDATE SET allow = graph_counts.allow + excluded.allow,
            deny = graph_counts.deny + excluded.deny, would_deny = graph_counts.would_deny + excluded.would_deny,
            last_seen = CASE WHEN excluded.last_seen > graph_counts.last_seen THEN excluded.last_seen ELSE graph_counts.last_seen END`,
        chunk.flatMap((c) => [c.span, c.bucket, c.from, c.to, c.action, c.rule, c.allow, c.deny, c.wouldDeny, c.last]),
      );
    }
  }

  async listLearnedEdges(q: { readonly to?: string; readonly limit: number }): Promise<DecisionEdge[]> {
    const rows = await this.#db.query(
      `SELECT * FROM learned_edges ${q.to !== undefined ? 'WHERE to_id = ?' : ''} ORDER BY seen DESC, to_id, from_id, action LIMIT ?`,
      q.to !== undefined ? [q.to, q.limit] : [q.limit],
    );
    return rows.map(toEdge);
  }

  async deleteLearnedEdges(toIds: readonly string[]): Promise<number> {
    let n = 0;
    for (let i = 0; i < toIds.length; i += 200) {
      const chunk = toIds.slice(i, i + 200);
      n += await this.#db.execute(`DELETE FROM learned_edges WHERE to_id IN (${chunk.map(() => '?').join(', ')})`, chunk);
    }
    return n > 0 ? this.#changed(n, { kind: 'decisions' }) : 0;
  }

  async decisionHits(q: { readonly to?: string; readonly since: number; readonly minRevision: number; readonly limit: number }): Promise<DecisionHit[]> {
    const rows = await this.#db.query(
      `SELECT to_id, rule, decision, COUNT(*) AS n FROM decisions WHERE at >= ? AND policy_revision >= ? ${q.to !== undefined ? 'AND to_id = ?' : ''}
        GROUP BY to_id, rule, decision ORDER BY n DESC, to_id, rule, decision LIMIT ?`,
      [q.since, q.minRevision, ...(q.to !== undefined ? [q.to] : []), q.limit],
    );
    return rows.map((r) => ({
      to: r['to_id'] as string,
      rule: r['rule'] as string,
      decision: r['decision'] as DecisionRecord['decision'],
      count: num(r['n']),
    }));
  }

  async listDecisionEdges(q: { readonly since: number; readonly limit: number }): Promise<DecisionEdge[]> {
    const rows = await this.#db.query('SELECT * FROM decision_edges WHERE last_seen >= ? ORDER BY seen DESC, from_id, to_id, action LIMIT ?', [
      q.since,
      q.limit,
    ]);
    return rows.map(toEdge);
  }

  async graphEdges(q: GraphQuery): Promise<GraphEdgeRow[]> {
    // The hours from the first whole one on, and the minutes before it from the minute of `since`.
    const firstMinute = q.since - (((q.since % GRAPH_MINUTE) + GRAPH_MINUTE) % GRAPH_MINUTE);
    const firstHour = Math.ceil(firstMinute / GRAPH_HOUR) * GRAPH_HOUR;
    const where = ['((span = ? AND bucket >= ?) OR (span = ? AND bucket >= ? AND bucket < ?))'];
    const params: SqlValue[] = [GRAPH_HOUR, firstHour, GRAPH_MINUTE, firstMinute, firstHour];
    // LIKE with every wildcard of the filter escaped: a filter is matched as text, never as a pattern.
    const like = (s: string): string => s.replace(/[\\%_]/g, (c) => `\\${c}`);
    if (q.prefix !== undefined) where.push("(from_id LIKE ? ESCAPE '\\' OR to_id LIKE ? ESCAPE '\\')"), params.push(`${like(q.prefix)}%`, `${like(q.prefix)}%`);
    if (q.contains !== undefined)
      where.push("(from_id LIKE ? ESCAPE '\\' OR to_id LIKE ? ESCAPE '\\')"), params.push(`%${like(q.contains)}%`, `%${like(q.contains)}%`);
    const rows = await this.#db.query(
      `SELECT from_id, to_id, action, rule, SUM(allow) AS allow, SUM(deny) AS deny, SUM(would_deny) AS would_deny, MAX(last_seen) AS last_seen
        FROM graph_counts WHERE ${where.join(' AND ')}
        GROUP BY from_id, to_id, action, rule ORDER BY SUM(allow) + SUM(deny) + SUM(would_deny) DESC, from_id, to_id, action, rule LIMIT ?`,
      [...params, q.limit],
    );
    return rows.map((r) => ({
      from: r['from_id'] as string,
      to: r['to_id'] as string,
      action: r['action'] as string,
      rule: r['rule'] as string,
      allow: num(r['allow']),
      deny: num(r['deny']),
      auditWouldDeny: num(r['would_deny']),
      lastSeen: num(r['last_seen']),
    }));
  }

  async queryDecisions(q: DecisionQuery): Promise<DecisionRecord[]> {
    const where: string[] = [];
    const params: SqlValue[] = [];
    if (q.from !== undefined) where.push('from_id = ?'), params.push(q.from);
    if (q.to !== undefined) where.push('to_id = ?'), params.push(q.to);
    if (q.decision !== undefined) where.push('decision = ?'), params.push(q.decision);
    if (q.since !== undefined) where.push('at >= ?'), params.push(q.since);
    if (q.after !== undefined) where.push('seq > ?'), params.push(q.after);
    if (q.upTo !== undefined) where.push('seq <= ?'), params.push(q.upTo);
    const order = q.after !== undefined ? 'seq' : 'at DESC, id';
    const rows = await this.#db.query(`SELECT * FROM decisions ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ${order} LIMIT ?`, [
      ...params,
      q.limit,
    ]);
    return rows.map(toDecision);
  }

  async decisionCursor(): Promise<number> {
    return num((await this.#db.query("SELECT value FROM counters WHERE name = 'decision_seq'"))[0]?.['value'] ?? 0);
  }

  async pruneDecisions(before: number, batch = 5000): Promise<number> {
    // In batches, each its own statement: one DELETE of an hour's decisions (millions of rows at
    // a busy site) would hold the database's write lock, and stall every report, for seconds.
    let removed = 0;
    for (;;) {
      const n = await this.#db.execute('DELETE FROM decisions WHERE seq IN (SELECT seq FROM decisions WHERE at < ? ORDER BY at LIMIT ?)', [before, batch]);
      removed += n;
      if (n < batch) break;
      await new Promise((r) => setImmediate(r));
    }
    await this.#db.execute('DELETE FROM decision_edges WHERE last_seen < ?', [before]);
    // The graph's minutes and hours that ended before it (one that straddles it stays whole).
    for (const span of [GRAPH_MINUTE, GRAPH_HOUR]) await this.#db.execute('DELETE FROM graph_counts WHERE span = ? AND bucket <= ?', [span, before - span]);
    await this.#db.execute('DELETE FROM learned_edges WHERE last_seen < ?', [before]);
    return this.#changed(removed, { kind: 'decisions' });
  }

  async setFederatedBundle(b: FederatedBundle): Promise<void> {
    await this.#audited(
      (tx) =>
        tx.query(
          'INSERT INTO federated_bundles (trust_domain, bundle, updated_at) VALUES (?, ?, ?) ON CONFLICT (trust_domain) DO UPDATE SET bundle = excluded.bundle, updated_at = excluded.updated_at',
          [b.trustDomain, b.bundle, b.updatedAt],
        ),
      () => [{ kind: 'federated-bundle.set', subject: b.trustDomain, detail: { sha256: sha256Of(b.bundle) } }],
    );
    this.#changed(undefined, { kind: 'federated-bundles' });
  }

  async getFederatedBundle(trustDomain: string): Promise<FederatedBundle | undefined> {
    const rows = await this.#db.query('SELECT * FROM federated_bundles WHERE trust_domain = ?', [trustDomain]);
    return rows[0] ? toFederated(rows[0]) : undefined;
  }

  async listFederatedBundles(): Promise<FederatedBundle[]> {
    return (await this.#db.query('SELECT * FROM federated_bundles ORDER BY trust_domain')).map(toFederated);
  }

  async deleteFederatedBundle(trustDomain: string): Promise<boolean> {
    const rows = await this.#audited(
      (tx) => tx.query('DELETE FROM federated_bundles WHERE trust_domain = ? RETURNING trust_domain', [trustDomain]),
      (rows) => rows.map(() => ({ kind: 'federated-bundle.delete', subject: trustDomain, detail: {} })),
    );
    const deleted = rows.length > 0;
    return deleted && this.#changed(true, { kind: 'federated-bundles' });
  }

  // ---------------------------------------------------------------- federation relationships (issue 14)

  async createFederation(rel: FederationRelationship): Promise<void> {
    await this.#audited(
      (tx) => fed.createFederation(this.#withDriver(tx), rel),
      () => [
        {
          kind: 'federation.create',
          subject: rel.trustDomain,
          detail: { bundleEndpointUrl: rel.bundleEndpointUrl, profile: rel.profile, endpointSpiffeId: rel.endpointSpiffeId },
        },
      ],
    );
    this.#changed(undefined, { kind: 'federation' });
  }

  getFederation(trustDomain: string): Promise<FederationRelationship | undefined> {
    return fed.getFederation(this.#db, trustDomain);
  }

  listFederations(): Promise<FederationRelationship[]> {
    return fed.listFederations(this.#db);
  }

  async updateFederation(trustDomain: string, update: FederationStatusUpdate): Promise<boolean> {
    const updated = await fed.updateFederation(this.#db, trustDomain, update);
    return updated ? this.#changed(true, { kind: 'federation' }) : false;
  }

  async deleteFederation(trustDomain: string): Promise<boolean> {
    const deleted = await this.#audited(
      (tx) => fed.deleteFederation(this.#withDriver(tx), trustDomain),
      (d) => (d ? [{ kind: 'federation.delete', subject: trustDomain, detail: {} }] : []),
    );
    return deleted ? this.#changed(true, { kind: 'federation' }) : false;
  }

  // ---------------------------------------------------------------- admitted images

  get #admitted(): AdmittedImagesSql {
    return { db: this.#db, written: this.#admittedWritten, changed: () => this.#changed(undefined, { kind: 'admitted-images' }) };
  }

  recordAdmittedImages(digests: readonly string[], at: number): Promise<void> {
    return recordAdmittedImages(this.#admitted, digests, at);
  }

  listAdmittedImages(q: { readonly afterSeq?: number; readonly limit: number }): Promise<AdmittedImagesPage> {
    return listAdmittedImages(this.#db, q);
  }

  getAdmittedImage(digest: string): Promise<AdmittedImage | undefined> {
    return getAdmittedImage(this.#db, digest);
  }

  pruneAdmittedImages(before: number): Promise<number> {
    return pruneAdmittedImages(this.#admitted, before);
  }

  // ---------------------------------------------------------------- image inventory and reports (issue 13)

  async putReport(report: Report, now: number): Promise<{ reportId: string; created: boolean; imageDigest: string }> {
    const r = await putReport(this.#db, report, now);
    return r.created ? this.#changed(r, { kind: 'reports' }) : r;
  }

  async platformDigests(indexDigest: string): Promise<string[]> {
    return (await this.#db.query('SELECT digest FROM images WHERE index_digest = ? ORDER BY digest', [indexDigest])).map((r) => r['digest'] as string);
  }

  getImage(digest: string): Promise<ImageDetail | undefined> {
    return getImage(this.#db, digest);
  }

  listImages(limit: number, after?: string): Promise<InventoryImage[]> {
    return listImages(this.#db, limit, after);
  }

  // ---------------------------------------------------------------- images from admission and the registry (issue 13, sources)

  async recordImages(images: readonly InventoryImage[], now: number): Promise<{ added: number; changed: number }> {
    const r = await recordImages(this.#db, images, now);
    return r.added + r.changed > 0 ? this.#changed(r, { kind: 'images' }) : r;
  }

  // ---------------------------------------------------------------- what runs where, now (issue 13)

  async putAgentWorkloads(agentId: string, node: string | null, workloads: readonly WorkloadInput[], now: number): Promise<{ started: number; ended: number }> {
    const { resumed, ...r } = await putAgentWorkloads(this.#db, agentId, node, workloads, now);
    // A workload back within the grace period, or reported again after a silence, is no new start, but the running set changed.
    return r.started + r.ended + resumed > 0 ? this.#changed(r, { kind: 'workloads' }) : r;
  }

  listWorkloads(q: WorkloadQuery): Promise<Workload[]> {
    return listWorkloads(this.#db, q);
  }

  async pruneWorkloads(before: number): Promise<number> {
    const n = await pruneWorkloads(this.#db, before);
    return n > 0 ? this.#changed(n, { kind: 'workloads' }) : n;
  }

  workloadsWentSilent(since: number, now: number): Promise<boolean> {
    return workloadsWentSilent(this.#db, since, now);
  }

  // ---------------------------------------------------------------- answers (issue 13, section 4)

  affected(vulnId: string, now: number): Promise<AffectedRow[]> {
    return vq.affected(this.#db, vulnId, now);
  }

  affectedDigests(vulnId: string): Promise<string[]> {
    return vq.affectedDigests(this.#db, vulnId);
  }

  affectedPage(vulnId: string, now: number, q: AffectedPageQuery): Promise<AffectedPage> {
    return vq.affectedPage(this.#db, vulnId, now, q);
  }

  filedAlsoUnder(vulnId: string, ids: readonly string[]): Promise<boolean> {
    return vq.filedAlsoUnder(this.#db, vulnId, ids);
  }

  listVulnerabilities(q: VulnerabilityQuery): Promise<VulnerabilityFindingRow[]> {
    return vq.listVulnerabilities(this.#db, q);
  }

  runningImageDigests(now: number): Promise<string[]> {
    return vq.runningImageDigests(this.#db, now);
  }

  imageLineage(digest: string): Promise<ImageLineage> {
    return vq.imageLineage(this.#db, digest);
  }

  baseImagesOf(images: readonly LinkedImage[]): Promise<LinkedImage[]> {
    return vq.baseImagesOf(this.#db, images);
  }

  runningWorkloads(digests: readonly string[], now: number): Promise<RunningWorkload[]> {
    return vq.runningWorkloads(this.#db, digests, now);
  }

  rolloutWorkloads(digests: readonly string[], now: number): Promise<{ history: RunningWorkload[]; running: Workload[] }> {
    return vq.rolloutWorkloads(this.#db, digests, now);
  }

  reportedDigests(digests: readonly string[]): Promise<string[]> {
    return vq.reportedDigests(this.#db, digests);
  }

  // ---------------------------------------------------------------- OpenVEX statements (issue 13)

  async putVexDocument(doc: VexDocument, now: number): Promise<{ created: boolean; replaced: number | null; statements: number }> {
    const r = await putVexDocument(this.#db, doc, now);
    return r.created || r.replaced !== null ? this.#changed(r, { kind: 'vex' }) : r;
  }

  listVexStatements(q?: { vulnerability?: string }): Promise<StoredVexStatement[]> {
    return listVexStatements(this.#db, q);
  }

  listVexDocuments(): Promise<StoredVexDocument[]> {
    return listVexDocuments(this.#db);
  }

  async deleteVexDocument(id: string): Promise<boolean> {
    const r = await deleteVexDocument(this.#db, id);
    return r ? this.#changed(r, { kind: 'vex' }) : r;
  }

  async getDecision(id: string): Promise<DecisionRecord | undefined> {
    const rows = await this.#db.query('SELECT * FROM decisions WHERE id = ?', [id]);
    return rows[0] ? toDecision(rows[0]) : undefined;
  }

  // ---- admission events (engineer E) ----
  async addAdmissionEvents(events: readonly AdmissionEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.#db.transaction(async (tx) => {
      // Arrival numbers from the counter row, as for decisions: replicas' batches are ordered by it.
      let seq =
        num((await tx.query("UPDATE counters SET value = value + ? WHERE name = 'admission_event_seq' RETURNING value", [events.length]))[0]!['value']) -
        events.length;
      for (let i = 0; i < events.length; i += 200) {
        const chunk = events.slice(i, i + 200);
        await tx.execute(
          `INSERT INTO admission_events (seq, id, at, uid, operation, namespace, kind, name, sub_resource, hook, allowed, mode, dry_run, message, images, controls, exceptions, policies)
            VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')} ON CONFLICT (id) DO NOTHING`,
          chunk.flatMap((e) => [
            ++seq,
            e.id,
            e.at,
            e.uid,
            e.operation,
            e.namespace,
            e.kind,
            e.name,
            e.subResource,
            e.hook,
            e.allowed ? 1 : 0,
            e.mode,
            e.dryRun ? 1 : 0,
            e.message,
            JSON.stringify(e.images),
            JSON.stringify(e.controls),
            JSON.stringify(e.exceptions),
            JSON.stringify(e.policies),
          ]),
        );
      }
      await this.#audit(tx, {
        kind: 'admission.verdicts',
        subject: `${events.length} verdicts`,
        detail: {
          verdicts: events.map((e) => ({ uid: e.uid, namespace: e.namespace, kind: e.kind, name: e.name, allowed: e.allowed, mode: e.mode, dryRun: e.dryRun })),
        },
      });
    });
    this.#changed(undefined, { kind: 'admission-events' });
  }

  async queryAdmissionEvents(q: AdmissionEventQuery): Promise<AdmissionEvent[]> {
    const where: string[] = [];
    const params: SqlValue[] = [];
    if (q.namespace !== undefined) where.push('namespace = ?'), params.push(q.namespace);
    if (q.allowed !== undefined) where.push('allowed = ?'), params.push(q.allowed ? 1 : 0);
    if (q.since !== undefined) where.push('at >= ?'), params.push(q.since);
    if (q.after !== undefined) where.push('seq > ?'), params.push(q.after);
    if (q.upTo !== undefined) where.push('seq <= ?'), params.push(q.upTo);
    const order = q.after !== undefined ? 'seq' : 'at DESC, seq DESC';
    const rows = await this.#db.query(`SELECT * FROM admission_events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ${order} LIMIT ?`, [
      ...params,
      q.limit,
    ]);
    return rows.map(toAdmissionEvent);
  }

  async admissionEventCursor(): Promise<number> {
    return num((await this.#db.query("SELECT value FROM counters WHERE name = 'admission_event_seq'"))[0]?.['value'] ?? 0);
  }

  async pruneAdmissionEvents(before: number): Promise<number> {
    // In batches, like decisions: one long DELETE would hold the write lock for every verdict.
    let removed = 0;
    for (;;) {
      const n = await this.#db.execute('DELETE FROM admission_events WHERE seq IN (SELECT seq FROM admission_events WHERE at < ? ORDER BY at LIMIT 5000)', [
        before,
      ]);
      removed += n;
      if (n < 5000) break;
      await new Promise((r) => setImmediate(r));
    }
    return this.#changed(removed, { kind: 'admission-events' });
  }
  // ---- end of admission events ----
}

const sha256Of = (text: string): string => createHash('sha256').update(text).digest('hex');

function entryDetail(e: Entry): Record<string, unknown> {
  return {
    id: e.id,
    parentId: e.parentId,
    selectors: e.selectors,
    admin: e.admin,
    dnsNames: e.dnsNames,
    federatesWith: e.federatesWith,
    expiresAt: e.expiresAt,
    revision: e.revision,
  };
}

function quarantineLeaf(q: QuarantineEntry): AuditLeafInput {
  return { kind: 'quarantine.add', subject: q.spiffeId, detail: { reason: q.reason, createdBy: q.createdBy, expiresAt: q.expiresAt } };
}

function toAdmissionEvent(r: Row): AdmissionEvent {
  return {
    id: r['id'] as string,
    at: num(r['at']),
    uid: r['uid'] as string,
    operation: r['operation'] as string,
    namespace: r['namespace'] as string,
    kind: r['kind'] as string,
    name: r['name'] as string,
    subResource: r['sub_resource'] as string,
    hook: r['hook'] as AdmissionEvent['hook'],
    allowed: num(r['allowed']) === 1,
    mode: r['mode'] as string,
    dryRun: num(r['dry_run']) === 1,
    message: r['message'] as string,
    images: JSON.parse(r['images'] as string) as AdmissionEvent['images'],
    controls: JSON.parse(r['controls'] as string) as string[],
    exceptions: JSON.parse(r['exceptions'] as string) as AdmissionEvent['exceptions'],
    policies: JSON.parse(r['policies'] as string) as string[],
    seq: num(r['seq']),
  };
}

// ---------------------------------------------------------------- admitted images

/** `lastSeen` is refreshed at most this often per digest: it is for retention, not an audit trail. */
const LAST_SEEN_EVERY_MS = 60_000;

function toAdmittedImage(r: Row): AdmittedImage {
  return { digest: r['digest'] as string, firstSeen: num(r['first_seen']), lastSeen: num(r['last_seen']), seq: num(r['seq']) };
}

interface AdmittedImagesSql {
  readonly db: SqlDriver;
  readonly written: Map<string, number>;
  readonly changed: () => void;
}

async function recordAdmittedImages(o: AdmittedImagesSql, digests: readonly string[], at: number): Promise<void> {
  for (const [i, d] of digests.entries()) checkImageDigest(String(d), `digests[${i}]`);
  const todo = [...new Set(digests)].filter((d) => at - (o.written.get(d) ?? -Infinity) >= LAST_SEEN_EVERY_MS);
  if (todo.length === 0) return;
  let added = 0;
  // Chunks are transactions of their own: those committed before a failure are announced all the same.
  try {
    await recordChunks(o, todo, at, (n) => (added += n));
  } finally {
    if (added > 0) o.changed();
  }
  if (o.written.size > 100_000) o.written.clear();
  for (const d of todo) o.written.set(d, at);
}

async function recordChunks(o: AdmittedImagesSql, todo: readonly string[], at: number, committed: (n: number) => void): Promise<void> {
  for (let i = 0; i < todo.length; i += INSERT_CHUNK) {
    const chunk = todo.slice(i, i + INSERT_CHUNK);
    const marks = chunk.map(() => '?').join(', ');
    const n = await o.db.transaction(async (tx) => {
      const known = new Set((await tx.query(`SELECT digest FROM admitted_images WHERE digest IN (${marks})`, chunk)).map((r) => r['digest'] as string));
      if (known.size)
        await tx.execute(`UPDATE admitted_images SET last_seen = ? WHERE last_seen < ? AND digest IN (${[...known].map(() => '?').join(', ')})`, [
          at,
          at,
          ...known,
        ]);
      const fresh = chunk.filter((d) => !known.has(d));
      if (fresh.length === 0) return 0;
      // The counter row is locked until commit, so arrival numbers become visible in order: a
      // follower that saw number N never sees a lower one appear later.
      let seq =
        num((await tx.query("UPDATE counters SET value = value + ? WHERE name = 'admitted_image_seq' RETURNING value", [fresh.length]))[0]!['value']) -
        fresh.length;
      // A racing replica may have inserted one meanwhile: it keeps its number (a gap is harmless).
      await tx.execute(
        `INSERT INTO admitted_images (digest, first_seen, last_seen, seq) VALUES ${fresh.map(() => '(?, ?, ?, ?)').join(', ')}
         ON CONFLICT (digest) DO UPDATE SET last_seen = CASE WHEN excluded.last_seen > admitted_images.last_seen THEN excluded.last_seen ELSE admitted_images.last_seen END`,
        fresh.flatMap((d) => [d, at, at, ++seq]),
      );
      return fresh.length;
    });
    committed(n);
  }
}

async function listAdmittedImages(db: SqlDriver, q: { readonly afterSeq?: number; readonly limit: number }): Promise<AdmittedImagesPage> {
  // The epoch first: items read after a prune under the old epoch are read again under the new one, never the reverse.
  const epoch = num((await db.query("SELECT value FROM counters WHERE name = 'admitted_image_epoch'"))[0]!['value']);
  const rows = await db.query('SELECT * FROM admitted_images WHERE seq > ? ORDER BY seq LIMIT ?', [q.afterSeq ?? 0, Math.max(1, q.limit)]);
  return { epoch, items: rows.map(toAdmittedImage) };
}

async function getAdmittedImage(db: SqlDriver, digest: string): Promise<AdmittedImage | undefined> {
  const rows = await db.query('SELECT * FROM admitted_images WHERE digest = ?', [digest]);
  return rows[0] ? toAdmittedImage(rows[0]) : undefined;
}

async function pruneAdmittedImages(o: AdmittedImagesSql, before: number): Promise<number> {
  const n = await o.db.transaction(async (tx) => {
    const removed = await tx.execute('DELETE FROM admitted_images WHERE last_seen < ?', [before]);
    if (removed > 0) await tx.execute("UPDATE counters SET value = value + 1 WHERE name = 'admitted_image_epoch'");
    return removed;
  });
  o.written.clear();
  if (n > 0) o.changed();
  return n;
}

function toEdge(r: Row): DecisionEdge {
  return {
    from: r['from_id'] as string,
    to: r['to_id'] as string,
    action: r['action'] as string,
    firstSeen: num(r['first_seen']),
    lastSeen: num(r['last_seen']),
    seen: num(r['seen']),
  };
}

function toDecision(r: Row): DecisionRecord {
  return {
    id: r['id'] as string,
    at: num(r['at']),
    from: r['from_id'] as string,
    to: r['to_id'] as string,
    action: r['action'] as string,
    decision: r['decision'] as DecisionRecord['decision'],
    reason: r['reason'] as string,
    policyRevision: num(r['policy_revision']),
    rule: r['rule'] as string,
    reporter: r['reporter'] as string,
    seq: num(r['seq']),
  };
}
