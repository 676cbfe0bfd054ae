/**
 * Audit log benchmark (issue 15, section 1), `npm run bench -- audit`:
 * - appends per second on SQLite and PostgreSQL with the checkpointer signing every second beside
 *   them: a quarantine write (one change, one leaf, one transaction each; 8 writers at once), and
 *   entries created 100 per transaction (a leaf each), timed until the last leaf is folded into
 *   the tree. Baseline in the same run: the same change through the raw driver in the same
 *   transactions, without its leaf.
 * - `writ audit verify` over 1,000,000 leaves (appended by the store's own append, 5,000 per
 *   transaction) against a real server (SQLite): the CLI as a child
 *   process; baseline in the same run: the same pages fetched and parsed without being checked.
 * - inclusion proofs at 10,000,000 leaves: bench/transparency.ts's proofBench, printed here too.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { AuditLog, auditOrigin, loadLogKey, openStore, type EntryInput, type Store } from '@writ/server';
import { PostgresDriver } from '../packages/server/src/store/postgres.ts';
import { SqliteDriver } from '../packages/server/src/store/sqlite.ts';
import type { SqlDriver, SqlExecutor, SqlValue } from '../packages/server/src/store/driver.ts';
import { appendAudit, foldAudit, queueAudit } from '../packages/server/src/store/audit-sql.ts';
import { ApiClient } from '../packages/cli/src/client.ts';
import { AUDIT_PAGE_MEDIA_TYPE, MAX_AUDIT_PAGE_BYTES, decodeAuditPage } from '@writ/transparency';
import { printProofBench, proofBench } from './transparency.ts';
import { startServer } from './vuln/server.ts';
import { fmt, row } from './util.ts';

const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const WRITES = Number(process.env['BENCH_AUDIT_WRITES'] ?? 10_000);
const VERIFY_LEAVES = Number(process.env['BENCH_AUDIT_LEAVES'] ?? 1_000_000);
/** Concurrent writers (BENCH_AUDIT_WRITERS, default 8). */
const WRITERS = Number(process.env['BENCH_AUDIT_WRITERS'] ?? 8);
const WRIT = new URL('../packages/cli/bin/writ.js', import.meta.url).pathname;

const entry = (i: number, tag: string): EntryInput => ({
  spiffeId: `spiffe://bench.example/ns/n${i % 97}/sa/${tag}${i}`,
  parentId: `spiffe://bench.example/writ/agent/node-${i % 100}`,
  selectors: [`k8s:sa:${tag}${i}`],
  x509SvidTtl: 0,
  jwtSvidTtl: 0,
  dnsNames: [],
  federatesWith: [],
  admin: false,
  hint: '',
  expiresAt: null,
});

const QUARANTINE_UPSERT = `INSERT INTO quarantine (spiffe_id, reason, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
  ON CONFLICT (spiffe_id) DO UPDATE SET reason = excluded.reason, created_by = excluded.created_by, created_at = excluded.created_at, expires_at = excluded.expires_at`;

/**
 * The store's quarantine write without its leaf, through the raw driver in `tx`: sent as the
 * store sends it (`late`: with the COMMIT where the driver can, so on PostgreSQL one message with
 * BEGIN and COMMIT), or a round trip per statement as before (`late` false).
 */
async function quarantineWrite(tx: SqlExecutor, spiffeId: string, late: boolean): Promise<void> {
  const statements: [string, SqlValue[]][] = [
    [QUARANTINE_UPSERT, [spiffeId, 'bench', 'bench', Date.now(), null]],
    ["UPDATE counters SET value = value + 2 WHERE name = 'quarantine_writes'", []],
  ];
  for (const [sql, params] of statements) {
    if (late && tx.atCommit) tx.atCommit(sql, params);
    else await tx.execute(sql, params);
  }
}

/** User + system CPU seconds of process `pid` so far (Linux /proc, 100 ticks a second; 0 elsewhere). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

/** `n` calls of `fn` by WRITERS concurrent writers, then `settle` (timed too); calls per second. */
async function concurrently(n: number, fn: (i: number) => Promise<unknown>, settle?: () => Promise<unknown>): Promise<number> {
  let next = 0;
  const t = performance.now();
  await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      for (let i = next++; i < n; i = next++) await fn(i);
    }),
  );
  await settle?.();
  return n / ((performance.now() - t) / 1000);
}

async function appends(name: string, store: Store, raw: SqlDriver, dataDir: string): Promise<void> {
  const key = loadLogKey(dataDir, auditOrigin('bench.example'), undefined);
  const log = new AuditLog({ store, origin: auditOrigin('bench.example'), signer: key.signer, vkey: key.vkey, clock: Date.now });
  log.start();
  try {
    const q = (i: number, tag: string) => ({
      spiffeId: `spiffe://bench.example/${tag}/${i}`,
      reason: 'bench',
      createdBy: 'bench',
      createdAt: Date.now(),
      expiresAt: null,
    });
    // Timed until every leaf is in the tree: the writes queue their leaves, and the last ones are
    // folded by the auditHead() that ends the run (the checkpointer folds the others each second).
    const audited = await concurrently(
      WRITES,
      (i) => store.putQuarantine(q(i, 'a')),
      () => store.auditHead(),
    );
    // The same statements as the store's putQuarantine, sent the same way, without the leaf; and a round trip each (how they were sent before).
    const plain = await concurrently(WRITES, (i) => raw.transaction((tx) => quarantineWrite(tx, q(i, 'p').spiffeId, true)));
    const stepwise = await concurrently(WRITES, (i) => raw.transaction((tx) => quarantineWrite(tx, q(i, 's').spiffeId, false)));
    row(`${name}: quarantine writes, 1 leaf each`, `${fmt(audited)}/s`, `without the leaf ${fmt(plain)}/s`, (audited / plain).toFixed(2), '>= 5,000/s');
    row(`${name}: the same without the leaf, a round trip a statement`, `${fmt(stepwise)}/s`, `(as sent before)`, (audited / stepwise).toFixed(2), '');

    const BATCH = 100;
    const batches = Math.max(1, Math.floor(WRITES / BATCH));
    let t = performance.now();
    for (let b = 0; b < batches; b++)
      await store.createEntries(
        Array.from({ length: BATCH }, (_, i) => entry(b * BATCH + i, 'a')),
        Date.now(),
      );
    await store.auditHead();
    const auditedEntries = (batches * BATCH) / ((performance.now() - t) / 1000);
    t = performance.now();
    for (let b = 0; b < batches; b++) {
      const rows = Array.from({ length: BATCH }, (_, i) => entry(b * BATCH + i, 'p'));
      await raw.transaction(async (tx) => {
        await tx.query("UPDATE counters SET value = value + ? WHERE name = 'entry_revision' RETURNING value", [BATCH]);
        await tx.query(
          `INSERT INTO entries (id, spiffe_id, parent_id, selectors, selectors_key, x509_svid_ttl, jwt_svid_ttl, dns_names, federates_with, admin, hint, expires_at, revision, created_at, updated_at, require_admitted_image, owner)
           VALUES ${rows.map(() => '(?, ?, ?, ?, ?, 0, 0, ?, ?, 0, ?, NULL, 0, 0, 0, 0, NULL)').join(', ')}`,
          rows.flatMap((e, i) => [`p-${b}-${i}`, e.spiffeId, e.parentId, JSON.stringify(e.selectors), e.selectors.join('\n'), '[]', '[]', '']),
        );
        await tx.query(
          `INSERT INTO entry_selectors (entry_id, selector) VALUES ${rows.map(() => '(?, ?)').join(', ')}`,
          rows.flatMap((e, i) => [`p-${b}-${i}`, e.selectors[0]!]),
        );
      });
    }
    const plainEntries = (batches * BATCH) / ((performance.now() - t) / 1000);
    row(
      `${name}: entries, ${BATCH} per transaction`,
      `${fmt(auditedEntries)}/s`,
      `without the leaves ${fmt(plainEntries)}/s`,
      (auditedEntries / plainEntries).toFixed(2),
      '>= 5,000/s',
    );
    const c = await log.checkpoint();
    if (!c || c.size !== (await store.auditHead()).size) throw new Error('the checkpointer did not keep up');
  } finally {
    await log.close();
  }
}

/**
 * BENCH_AUDIT_ONLY=ab: the one-leaf write three ways in alternating rounds under the same load,
 * in one process: without the leaf; with the leaf appended in the write's transaction under the
 * head row's lock (`appendAudit`: the append before the queue, kept for bulk loads); and with the
 * leaf queued (`queueAudit`, what the store's writes do), the round timed until its last leaf is
 * folded. The checkpointer runs beside all three.
 */
async function abBench(name: string, store: Store, raw: SqlDriver, dataDir: string, rounds: number): Promise<void> {
  const key = loadLogKey(dataDir, auditOrigin('bench.example'), undefined);
  const log = new AuditLog({ store, origin: auditOrigin('bench.example'), signer: key.signer, vkey: key.vkey, clock: Date.now });
  log.start();
  const n = Math.max(WRITERS, Math.floor(WRITES / rounds));
  const rates = { plain: [] as number[], direct: [] as number[], queued: [] as number[] };
  let seq = 0;
  const write = (leaf: 'none' | 'direct' | 'queued') => (_: number) =>
    raw.transaction(async (tx) => {
      const id = `spiffe://bench.example/ab/${leaf}/${seq++}`;
      await quarantineWrite(tx, id, leaf !== 'direct');
      const leaves = [{ kind: 'quarantine.add', subject: id, detail: { reason: 'bench', expiresAt: null } }];
      if (leaf === 'direct') await appendAudit(tx, raw.dialect, Date.now(), 'bench', leaves);
      if (leaf === 'queued') await queueAudit(tx, Date.now(), 'bench', leaves);
    });
  try {
    for (let r = 0; r < rounds; r++) {
      rates.plain.push(await concurrently(n, write('none')));
      rates.direct.push(await concurrently(n, write('direct')));
      rates.queued.push(await concurrently(n, write('queued'), () => foldAudit(raw)));
    }
  } finally {
    await log.close();
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const [plain, direct, queued] = [median(rates.plain), median(rates.direct), median(rates.queued)];
  const all = (xs: number[]) => xs.map(fmt).join(' ');
  console.log(
    `(${name}, ${rounds} rounds of ${fmt(n)} writes each way, per round: plain ${all(rates.plain)}; appended ${all(rates.direct)}; queued ${all(rates.queued)})`,
  );
  row(`${name}: 1 leaf, appended under the head lock`, `${fmt(direct)}/s`, `without the leaf ${fmt(plain)}/s`, (direct / plain).toFixed(2), 'median');
  row(`${name}: 1 leaf, queued and folded`, `${fmt(queued)}/s`, `without the leaf ${fmt(plain)}/s`, (queued / plain).toFixed(2), '>= 5,000/s');
}

async function verifyBench(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-audit-'));
  try {
    // The leaves, appended 5,000 per transaction by the store's own append (audit-sql.ts) on a
    // migrated store's file, before the server starts on it: the tree is what any write makes.
    const store = await openStore({ db: 'sqlite', dataDir: dir });
    await store.close();
    const raw = new SqliteDriver(join(dir, 'writ.db'));
    let t = performance.now();
    for (let b = 0; b < VERIFY_LEAVES / 5000; b++)
      await raw.transaction((tx) =>
        appendAudit(
          tx,
          'sqlite',
          Date.now(),
          'token:bench',
          Array.from({ length: 5000 }, (_, i) => ({
            kind: 'entry.create',
            subject: `spiffe://bench.example/ns/n${i % 97}/sa/v${b * 5000 + i}`,
            detail: { id: `v-${b}-${i}`, parentId: `spiffe://bench.example/writ/agent/node-${i % 100}`, selectors: [`k8s:sa:v${i}`], revision: b * 5000 + i },
          })),
        ),
      );
    const loadRate = VERIFY_LEAVES / ((performance.now() - t) / 1000);
    await raw.close();
    console.log(`(appended ${fmt(VERIFY_LEAVES)} leaves at ${fmt(loadRate)}/s, 5,000 per transaction)`);
    const srv = await startServer(dir, 'sqlite');
    try {
      const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
      const api = new ApiClient({ server: srv.url, token, caFile: join(dir, 'bundle.pem') });
      // The checkpointer signs within a second of the start.
      for (let i = 0; i < 100; i++) {
        const size = await api.call<{ size: number }>('GET', '/v1/audit/entries?start=0&end=0').then((p) => p.size);
        if (size > VERIFY_LEAVES) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      t = performance.now();
      // On a loaded machine the wall time is mostly waiting for a core: the CPU seconds of verify
      // (GNU time, when there is one) and of the server while it ran are printed beside it.
      const serverCpu0 = cpuSeconds(srv.pid);
      const timed = existsSync('/usr/bin/time');
      const run = spawnSync(timed ? '/usr/bin/time' : process.execPath, [...(timed ? ['-f', 'cpu %U %S', process.execPath] : []), WRIT, 'audit', 'verify'], {
        env: { ...process.env, WRIT_SERVER: srv.url, WRIT_TOKEN: token, WRIT_CA_FILE: join(dir, 'bundle.pem') },
        encoding: 'utf8',
      });
      const verifyS = (performance.now() - t) / 1000;
      const serverCpu = cpuSeconds(srv.pid) - serverCpu0;
      const out = run.stdout;
      if (!/^verified \d+ entries/.test(out)) throw new Error(`writ audit verify said: ${out} ${run.stderr}`);
      const cpu = /cpu ([\d.]+) ([\d.]+)/.exec(run.stderr);
      // A client of its own: the polling one's keep-alive connection may have been closed while verify ran.
      const fetcher = new ApiClient({ server: srv.url, token, caFile: join(dir, 'bundle.pem') });
      t = performance.now();
      let n = 0;
      for (let start = 0; ; ) {
        const p = await fetcher.call<{ size: number; end: number; entries: unknown[] }>('GET', `/v1/audit/entries?start=${start}`, undefined, {
          timeoutMs: 120_000,
        });
        n += p.entries.length;
        start = p.end;
        if (p.end >= p.size) break;
      }
      const fetchS = (performance.now() - t) / 1000;
      row(
        `writ audit verify, ${fmt(n)} leaves`,
        `${verifyS.toFixed(2)} s`,
        `fetch+parse only ${fetchS.toFixed(2)} s`,
        (verifyS / fetchS).toFixed(2),
        '<= 10 s',
      );
      console.log(
        `(CPU while verify ran: verify ${cpu ? `${(Number(cpu[1]) + Number(cpu[2])).toFixed(2)} s` : '?'}, the server ${serverCpu.toFixed(2)} s; load average ${loadavg()
          .map((l) => l.toFixed(1))
          .join(' ')})`,
      );
      // The compact pages verify reads, fetched one after another and decoded, nothing checked (a server that answers only JSON: skipped).
      t = performance.now();
      let compact = 0;
      for (let start = 0; ; ) {
        const r = await fetcher.bytes(`/v1/audit/entries?start=${start}`, {
          accept: AUDIT_PAGE_MEDIA_TYPE,
          maxBytes: MAX_AUDIT_PAGE_BYTES,
          timeoutMs: 120_000,
        });
        if (!r.type.startsWith(AUDIT_PAGE_MEDIA_TYPE)) break;
        const p = decodeAuditPage(r.body, 10_000);
        compact += p.entries.length;
        start = p.end;
        if (p.end >= p.size) break;
      }
      const compactS = (performance.now() - t) / 1000;
      if (compact === n)
        row(
          `compact pages fetched + decoded only, ${fmt(n)} leaves`,
          `${compactS.toFixed(2)} s`,
          `JSON ${fetchS.toFixed(2)} s`,
          (compactS / fetchS).toFixed(2),
          '',
        );
    } finally {
      await srv.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<void> {
  console.log('audit log (issue 15): appends with a checkpoint each second, and verify');
  row('measurement', 'value', 'baseline (same run)', 'ratio', 'target');
  // BENCH_AUDIT_ONLY=appends|verify|proofs: one part; =ab the appended/queued comparison (not in the default run).
  const only = process.env['BENCH_AUDIT_ONLY'];
  const ab = only === 'ab' ? Number(process.env['BENCH_AUDIT_ROUNDS'] ?? 5) : 0;
  // BENCH_AUDIT_DB=sqlite|postgres: the appends on one database only.
  const dbs = process.env['BENCH_AUDIT_DB'];
  if ((!only || only === 'appends' || ab) && dbs !== 'postgres') {
    const dir = mkdtempSync(join(tmpdir(), 'writ-bench-audit-'));
    const store = await openStore({ db: 'sqlite', dataDir: dir });
    const raw = new SqliteDriver(join(dir, 'writ.db'));
    try {
      await (ab ? abBench('SQLite', store, raw, dir, ab) : appends('SQLite', store, raw, dir));
    } finally {
      await raw.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if ((!only || only === 'appends' || ab) && dbs !== 'sqlite') {
    const schema = `writ_bench_audit_${process.pid}`;
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    const dir = mkdtempSync(join(tmpdir(), 'writ-bench-audit-'));
    const store = await openStore({ db: PG_URL, dataDir: dir, schema });
    const raw = new PostgresDriver({ url: PG_URL, schema });
    try {
      await (ab ? abBench('PostgreSQL', store, raw, dir, ab) : appends('PostgreSQL', store, raw, dir));
    } finally {
      await raw.close();
      await store.close();
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.end();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if (!only || only === 'verify') await verifyBench();
  if (only && only !== 'proofs') return;
  // The proof half of the issue's numbers (inclusion at 10,000,000 leaves) is @writ/transparency's own benchmark.
  printProofBench(await proofBench());
}
