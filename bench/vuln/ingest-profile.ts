/**
 * Where `putReport`'s time goes: the same reports as the vuln benchmark through a driver that times
 * every statement by kind (and the transaction's commit), on SQLite and PostgreSQL.
 *
 *   npx node bench/vuln/ingest-profile.ts [images=3000] [sqlite|postgres]
 *
 * `DROP_INDEXES=report_packages_name,...` drops secondary indexes after migrating, for their cost.
 * `PRE_SQL='CREATE INDEX ...; ...'` runs schema experiments after migrating.
 * `ASYNC_COMMIT=1` (PostgreSQL) makes each report's transaction `SET LOCAL synchronous_commit = off`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { parseReport } from '@writ/vuln';
import type { SqlDriver, SqlExecutor } from '../../packages/server/src/store/driver.ts';
import { putReport } from '../../packages/server/src/store/inventory-sql.ts';
import { PostgresDriver } from '../../packages/server/src/store/postgres.ts';
import { SqlStore } from '../../packages/server/src/store/sql-store.ts';
import { SqliteDriver } from '../../packages/server/src/store/sqlite.ts';
import { makeCorpus } from './corpus.ts';

const N = Number(process.argv[2] ?? 3000);
const DB = process.argv[3] ?? 'sqlite';
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
  // PRE_SQL='CREATE INDEX ...; ...': other schema experiments, run after migrating.
  for (const stmt of (process.env['PRE_SQL'] ?? '')
    .split(';')
    .map((x) => x.trim())
    .filter(Boolean))
    await raw.execute(stmt);
  const db = timedDriver(raw);
  let parse = 0;
  const t0 = performance.now();
  const marks: string[] = [];
  for (let k = 0; k < docs.length; k++) {
    let s = performance.now();
    const r = parseReport(docs[k]!);
    parse += performance.now() - s;
    s = performance.now();
    await putReport(db, r, Date.now());
    add('putReport (total)', performance.now() - s);
    if ((k + 1) % 1000 === 0) marks.push(`${k + 1}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const total = performance.now() - t0;
  console.log(
    `${DB}${process.env['DROP_INDEXES'] ? ` without ${process.env['DROP_INDEXES']}` : ''}${process.env['PRE_SQL'] ? `, ${process.env['PRE_SQL']}` : ''}${process.env['ASYNC_COMMIT'] ? ', async commit' : ''}: ${docs.length} reports in ${(total / 1000).toFixed(1)} s = ${Math.round(docs.length / (total / 1000))}/s; parse ${(parse / docs.length).toFixed(2)} ms/report`,
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
