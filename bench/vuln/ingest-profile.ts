/**
 * Where `putReport`'s time goes: the same reports as the vuln benchmark through a driver that times
 * every statement by kind (and the transaction's commit), on SQLite and PostgreSQL.
 *
 *   npx node bench/vuln/ingest-profile.ts [images=3000] [sqlite|postgres]
 *
 * `VARIANT=ordered-ids` runs a copy of putReport whose report ids are time-ordered (UUIDv7-like)
 * instead of random, to measure what that changes: an experiment, not the store's code.
 * `DROP_INDEXES=report_packages_name,...` drops secondary indexes after migrating, for their cost.
 * `ASYNC_COMMIT=1` (PostgreSQL) makes each report's transaction `SET LOCAL synchronous_commit = off`.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { parseReport, type Report } from '@writ/vuln';
import type { SqlDriver, SqlExecutor, SqlValue } from '../../packages/server/src/store/driver.ts';
import { mergeImageTx, putReport, REPORT_COLUMNS } from '../../packages/server/src/store/inventory-sql.ts';
import { PostgresDriver } from '../../packages/server/src/store/postgres.ts';
import { SqlStore } from '../../packages/server/src/store/sql-store.ts';
import { SqliteDriver } from '../../packages/server/src/store/sqlite.ts';
import { makeCorpus } from './corpus.ts';

const N = Number(process.argv[2] ?? 3000);
const DB = process.argv[3] ?? 'sqlite';
const VARIANT = process.env['VARIANT'] ?? 'store';
const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

const spent = new Map<string, number>();
const add = (k: string, t: number): void => void spent.set(k, (spent.get(k) ?? 0) + t);
const kind = (sql: string): string => sql.trim().split(/\s+/).slice(0, 3).join(' ').replace(/\(.*/, '');

function timedExecutor(ex: SqlExecutor): SqlExecutor {
  return {
    query: async (sql, params) => {
      const s = performance.now();
      try {
        return await ex.query(sql, params);
      } finally {
        add(kind(sql), performance.now() - s);
      }
    },
    execute: async (sql, params) => {
      const s = performance.now();
      try {
        return await ex.execute(sql, params);
      } finally {
        add(kind(sql), performance.now() - s);
      }
    },
  };
}

function timedDriver(d: SqlDriver): SqlDriver {
  const t = timedExecutor(d);
  return {
    dialect: d.dialect,
    query: t.query,
    execute: t.execute,
    transaction: async (fn) => {
      const s = performance.now();
      let inner = 0;
      try {
        return await d.transaction(async (tx) => {
          // ASYNC_COMMIT=1 (PostgreSQL): the commit does not wait for its WAL flush.
          if (process.env['ASYNC_COMMIT'] && d.dialect === 'postgres') await tx.execute('SET LOCAL synchronous_commit = off');
          const i = performance.now();
          try {
            return await fn(timedExecutor(tx));
          } finally {
            inner = performance.now() - i;
          }
        });
      } finally {
        add('BEGIN + COMMIT', performance.now() - s - inner);
      }
    },
    lockForMigration: (tx) => d.lockForMigration(tx),
    isUniqueViolation: (e) => d.isUniqueViolation(e),
    close: () => d.close(),
  };
}

/** Time-ordered ids: 48 bits of milliseconds, a counter, then random (the shape of UUIDv7). */
let seq = 0;
function orderedId(): string {
  const h = Date.now().toString(16).padStart(12, '0') + (seq++ & 0xffff).toString(16).padStart(4, '0') + randomBytes(8).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-7${h.slice(13, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** putReport's statements with ordered ids (no idempotency check: every report here is new). */
async function putOrdered(db: SqlDriver, report: Report, now: number): Promise<void> {
  const digest = report.image.repoDigests[0]!.split('@')[1]!;
  const id = orderedId();
  await db.transaction(async (tx) => {
    await mergeImageTx(tx, {
      digest,
      configDigest: report.image.configDigest ?? null,
      indexDigest: null,
      platform: null,
      names: report.image.names,
      tags: report.image.repoTags,
      layers: report.image.diffIds,
      annotations: report.image.annotations,
      labels: report.image.labels,
      created: null,
      firstSeen: now,
      lastSeen: now,
    });
    await tx.execute(`INSERT INTO reports (${REPORT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
      id,
      digest,
      'trivy',
      '0.58.1',
      'trivy',
      '2',
      `trivy ${report.scannedAt}`,
      Date.parse(report.scannedAt!),
      now,
      report.packages.length,
      report.findings.length,
    ]);
    const p = report.packages;
    await tx.execute(
      `INSERT INTO report_packages (report_id, idx, ref, name, version, type, purl, layer) VALUES ${p.map(() => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
      p.flatMap((x, j): SqlValue[] => [id, j, x.id, x.name, x.version, x.type, x.purl ?? null, x.layer ?? null]),
    );
    const f = report.findings;
    if (f.length)
      await tx.execute(
        `INSERT INTO report_findings (report_id, idx, vuln_id, severity, status, installed, fixed, package_ref) VALUES ${f.map(() => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
        f.flatMap((x, j): SqlValue[] => [id, j, x.id, x.severity, x.status, x.installed, x.fixed ?? null, x.packageRef]),
      );
  });
}

const corpus = makeCorpus(N);
const docs = [...corpus.bases, ...corpus.apps].map((i) => Buffer.from(JSON.stringify(i.doc)));
const dir = mkdtempSync(join(tmpdir(), 'writ-ingest-profile-'));
const schema = `writ_ingest_${process.pid}`;
let admin: pg.Client | undefined;
let raw: SqlDriver;
if (DB === 'sqlite') raw = new SqliteDriver(join(dir, 'writ.db'));
else {
  admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  raw = new PostgresDriver({ url: PG_URL, schema });
}
try {
  await new SqlStore(raw).migrate();
  // DROP_INDEXES=a,b: the same ingest without these secondary indexes (what each costs).
  for (const ix of (process.env['DROP_INDEXES'] ?? '').split(',').filter(Boolean)) await raw.execute(`DROP INDEX ${ix}`);
  const db = timedDriver(raw);
  let parse = 0;
  const t0 = performance.now();
  const marks: string[] = [];
  for (let k = 0; k < docs.length; k++) {
    let s = performance.now();
    const r = parseReport(docs[k]!);
    parse += performance.now() - s;
    s = performance.now();
    if (VARIANT === 'ordered-ids') await putOrdered(db, r, Date.now());
    else await putReport(db, r, Date.now());
    add('putReport (total)', performance.now() - s);
    if ((k + 1) % 1000 === 0) marks.push(`${k + 1}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const total = performance.now() - t0;
  console.log(
    `${DB}, ${VARIANT}${process.env['DROP_INDEXES'] ? ` without ${process.env['DROP_INDEXES']}` : ''}${process.env['ASYNC_COMMIT'] ? ', async commit' : ''}: ${docs.length} reports in ${(total / 1000).toFixed(1)} s = ${Math.round(docs.length / (total / 1000))}/s; parse ${(parse / docs.length).toFixed(2)} ms/report`,
  );
  console.log(`  progress: ${marks.join(', ')}`);
  for (const [k, v] of [...spent.entries()].sort((a, b) => b[1] - a[1])) console.log(`  ${k.padEnd(36)} ${(v / docs.length).toFixed(3)} ms/report`);
} finally {
  await raw.close();
  if (admin) {
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  }
  rmSync(dir, { recursive: true, force: true });
}
