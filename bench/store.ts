/**
 * Store benchmark on SQLite and Postgres: bulk-create 100,000 entries, then list one parent's
 * entries among them. Baselines in the same run: the same rows through the raw driver into a bare
 * table (no indexes, no selector table, no revision counter), and the same SELECT on the store's own
 * indexed table through the raw driver (no row mapping).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { openStore, type EntryInput, type Store } from '@writ/server';
import { fmt, percentile, row } from './util.ts';

const N = Number(process.env['BENCH_ENTRIES'] ?? 100_000);
const PARENTS = 1000;
const BATCH = 5000;
const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

function entries(): EntryInput[] {
  return Array.from({ length: N }, (_, i) => ({
    spiffeId: `spiffe://bench.example/ns/n${i % 97}/sa/w${i}`,
    parentId: `spiffe://bench.example/writ/agent/node-${i % PARENTS}`,
    selectors: [`k8s:ns:n${i % 97}`, `k8s:sa:w${i}`, 'k8s:cluster:bench'],
    x509SvidTtl: 0,
    jwtSvidTtl: 0,
    dnsNames: [],
    federatesWith: [],
    admin: false,
    hint: '',
    expiresAt: null,
  }));
}

async function measure(name: string, store: Store, raw: { insert(rows: EntryInput[]): Promise<void>; list(parent: string): Promise<number> }): Promise<void> {
  const all = entries();
  let t = performance.now();
  for (let i = 0; i < all.length; i += BATCH) await store.createEntries(all.slice(i, i + BATCH), Date.now());
  const writeRate = N / ((performance.now() - t) / 1000);
  t = performance.now();
  for (let i = 0; i < all.length; i += BATCH) await raw.insert(all.slice(i, i + BATCH));
  const rawRate = N / ((performance.now() - t) / 1000);
  row(`${name}: bulk-create ${fmt(N)} entries`, `${fmt(writeRate)}/s`, `raw driver ${fmt(rawRate)}/s`, (writeRate / rawRate).toFixed(2), '>= 5,000/s');

  const times: number[] = [];
  const rawTimes: number[] = [];
  for (let i = 0; i < 60; i++) {
    const parent = `spiffe://bench.example/writ/agent/node-${(i * 37) % PARENTS}`;
    let s = performance.now();
    const page = await store.listEntries({ parentId: parent, pageSize: 1000 });
    times.push(performance.now() - s);
    if (page.items.length !== N / PARENTS) throw new Error(`expected ${N / PARENTS} entries, got ${page.items.length}`);
    s = performance.now();
    await raw.list(parent);
    rawTimes.push(performance.now() - s);
  }
  times.sort((a, b) => a - b);
  rawTimes.sort((a, b) => a - b);
  const p50 = percentile(times, 50);
  row(
    `${name}: list one parent (${N / PARENTS}) of ${fmt(N)}`,
    `p50 ${p50.toFixed(2)} ms`,
    `raw SELECT p50 ${percentile(rawTimes, 50).toFixed(2)} ms`,
    (p50 / percentile(rawTimes, 50)).toFixed(2),
    '< 20 ms',
  );
  row('', `p99 ${percentile(times, 99).toFixed(2)} ms`, '', '', '');
}

const RAW_COLUMNS =
  'id TEXT, spiffe_id TEXT, parent_id TEXT, selectors TEXT, x509_svid_ttl INTEGER, jwt_svid_ttl INTEGER, dns_names TEXT, federates_with TEXT, admin INTEGER, hint TEXT, expires_at BIGINT, revision BIGINT, created_at BIGINT, updated_at BIGINT';
const rawValues = (e: EntryInput, i: number): Array<string | number | null> => [
  `raw-${i}-${e.spiffeId}`,
  e.spiffeId,
  e.parentId,
  JSON.stringify(e.selectors),
  0,
  0,
  '[]',
  '[]',
  0,
  '',
  null,
  i,
  0,
  0,
];

export async function run(): Promise<void> {
  console.log(`\nStore benchmark (${fmt(N)} entries over ${PARENTS} parents, batches of ${BATCH})\n`);
  row('measurement', 'result', 'baseline (same run)', 'ratio', 'target');

  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-store-'));
  const sqlite = await openStore({ db: 'sqlite', dataDir: dir });
  const rawDb = new DatabaseSync(join(dir, 'raw.db'));
  rawDb.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE raw (${RAW_COLUMNS})`);
  const ins = rawDb.prepare(`INSERT INTO raw VALUES (${Array(14).fill('?').join(',')})`);
  const storeDb = new DatabaseSync(join(dir, 'writ.db'));
  const sel = storeDb.prepare('SELECT * FROM entries WHERE parent_id = ? ORDER BY id LIMIT 1001');
  let k = 0;
  await measure('SQLite', sqlite, {
    insert: async (rows) => {
      rawDb.exec('BEGIN');
      for (const r of rows) ins.run(...rawValues(r, k++));
      rawDb.exec('COMMIT');
    },
    list: async (p) => sel.all(p).length,
  });
  await sqlite.close();
  rawDb.close();
  storeDb.close();
  rmSync(dir, { recursive: true, force: true });

  const schema = `writ_bench_${process.pid}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.query(`CREATE TABLE ${schema}.raw (${RAW_COLUMNS})`);
  try {
    const pgStore = await openStore({ db: PG_URL, dataDir: tmpdir(), schema });
    await measure('Postgres', pgStore, {
      insert: async (rows) => {
        for (let i = 0; i < rows.length; i += 500) {
          const chunk = rows.slice(i, i + 500);
          const params = chunk.flatMap((r) => rawValues(r, k++));
          await admin.query(
            `INSERT INTO ${schema}.raw VALUES ${chunk.map((_, j) => `(${Array.from({ length: 14 }, (_, c) => `$${j * 14 + c + 1}`).join(',')})`).join(',')}`,
            params,
          );
        }
      },
      list: async (p) => (await admin.query(`SELECT * FROM ${schema}.entries WHERE parent_id = $1 ORDER BY id LIMIT 1001`, [p])).rowCount ?? 0,
    });
    await pgStore.close();
  } finally {
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  }
}
