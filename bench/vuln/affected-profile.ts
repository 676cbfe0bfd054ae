/**
 * Where the `affected` answer's time goes: ingests the vuln benchmark's corpus and workloads once, then
 * times each statement the answer runs for CVEs of different spread (`PLANS=1`: and their query plans).
 *
 *   npx node bench/vuln/affected-profile.ts [images=1000] [sqlite|postgres] [workloads per image=10]
 *
 * `ANALYZE=1` gathers planner statistics first; `PRE_SQL='DROP INDEX x; CREATE INDEX ...'` changes
 * the schema first (an experiment, not the store's migrations).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { parseReport } from '@writ/vuln';
import type { SqlDriver, SqlValue } from '../../packages/server/src/store/driver.ts';
import { PostgresDriver } from '../../packages/server/src/store/postgres.ts';
import { SqlStore } from '../../packages/server/src/store/sql-store.ts';
import { SqliteDriver } from '../../packages/server/src/store/sqlite.ts';
import type { WorkloadInput } from '../../packages/server/src/store/types.ts';
import { affectedAnswer } from '../../packages/server/src/vuln-answers.ts';
import { makeCorpus } from './corpus.ts';

const N = Number(process.argv[2] ?? 1000);
const DB = process.argv[3] ?? 'sqlite';
const PER_IMAGE = Number(process.argv[4] ?? 10);
const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

const log: { sql: string; params: readonly SqlValue[]; ms: number; rows: number }[] = [];
function recording(d: SqlDriver): SqlDriver {
  return {
    dialect: d.dialect,
    query: async (sql, params = []) => {
      const s = performance.now();
      const r = await d.query(sql, params);
      log.push({ sql, params, ms: performance.now() - s, rows: r.length });
      return r;
    },
    execute: (sql, params) => d.execute(sql, params),
    transaction: (fn) => d.transaction(fn),
    lockForMigration: (tx) => d.lockForMigration(tx),
    isUniqueViolation: (e) => d.isUniqueViolation(e),
    close: () => d.close(),
  };
}

const corpus = makeCorpus(N);
const images = [...corpus.bases, ...corpus.apps];
const truth = new Map<string, number>();
for (const i of images) for (const c of i.cves) truth.set(c, (truth.get(c) ?? 0) + 1);
const dir = mkdtempSync(join(tmpdir(), 'writ-affected-profile-'));
const schema = `writ_affected_${process.pid}`;
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
  const store = new SqlStore(recording(raw));
  await store.migrate();
  for (const i of images) await store.putReport(parseReport(JSON.stringify(i.doc)), Date.now());
  const now = Date.now();
  const apps = corpus.apps;
  const total = apps.length * PER_IMAGE;
  for (let a = 0; a < total / 100; a++) {
    const ws: WorkloadInput[] = Array.from({ length: 100 }, (_, k) => {
      const n = a * 100 + k;
      const img = apps[(n * 7919) % apps.length]!;
      return {
        key: `c${n}`,
        spiffeIds: [`spiffe://bench.example/w${n % 5000}`],
        containerId: `c${n}`,
        containerName: 'app',
        podUid: `p${n}`,
        podName: `p${n}`,
        namespace: 'ns',
        podOwner: null,
        imageDigest: img.digest,
        imageName: img.repository,
        labels: {},
        annotations: {},
        owner: 'team',
      };
    });
    await store.putAgentWorkloads(`spiffe://bench.example/writ/agent/n${a}`, `n${a}`, ws, now);
  }
  // PRE_SQL='stmt; stmt': an experiment on the schema before querying (an index changed, say).
  for (const stmt of (process.env['PRE_SQL'] ?? '')
    .split(';')
    .map((x) => x.trim())
    .filter(Boolean))
    await raw.execute(stmt);
  // ANALYZE=1: statistics first (the store itself never runs ANALYZE; PostgreSQL's autovacuum does, later).
  if (process.env['ANALYZE']) await raw.execute('ANALYZE');
  const byCount = [...truth.entries()].sort((a, b) => b[1] - a[1]);
  for (const [cve, count] of [byCount[0]!, byCount[Math.floor(byCount.length / 10)]!, byCount[byCount.length - 1]!]) {
    // FULL=1: every row (`store.affected`, what events and rollouts read) instead of the answer's page.
    const answer = async () => {
      if (!process.env['FULL']) return affectedAnswer(store, cve, Date.now());
      const rows = await store.affected(cve, Date.now());
      return { images: rows, page: { workloadsListed: rows.reduce((n, r) => n + r.running.length, 0) }, counts: { workloads: Number.NaN } };
    };
    await answer();
    log.length = 0;
    const s = performance.now();
    const a = await answer();
    const total = performance.now() - s;
    const sql = log.reduce((n, q) => n + q.ms, 0);
    console.log(
      `\n${DB}: affected ${cve} (${count} images): ${total.toFixed(1)} ms (SQL ${sql.toFixed(1)}, the rest ${(total - sql).toFixed(1)}), a page of ${a.images.length} images, ${a.page.workloadsListed} of ${a.counts.workloads} workloads listed`,
    );
    for (const q of log) console.log(`  ${q.ms.toFixed(1).padStart(8)} ms ${String(q.rows).padStart(6)} rows  ${q.sql.replace(/\s+/g, ' ').slice(0, 110)}`);
    if (process.env['PLANS'] && cve === byCount[0]![0])
      for (const q of log) {
        const plan =
          DB === 'sqlite'
            ? (new DatabaseSync(join(dir, 'writ.db')).prepare(`EXPLAIN QUERY PLAN ${q.sql}`).all(...q.params) as { detail: string }[])
                .map((r) => `    ${r.detail}`)
                .join('\n')
            : (await raw.query(`EXPLAIN ANALYZE ${q.sql}`, q.params)).map((r) => `    ${r['QUERY PLAN']}`).join('\n');
        console.log(`  plan of ${q.sql.replace(/\s+/g, ' ').slice(0, 60)}:\n${plan}`);
      }
  }
} finally {
  await raw.close();
  if (admin) {
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  }
  rmSync(dir, { recursive: true, force: true });
}
