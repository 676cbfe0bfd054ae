/**
 * Backup benchmark (SQLite): `createBackup` of a store with BENCH_ENTRIES entries against a plain
 * copy of the same database file (the baseline: what any file-level backup costs at least), and
 * the server's single-entry write rate while `writ server backup` runs in a loop in another
 * process against the rate without it (the online snapshot must not stall the writer).
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createBackup, openStore, type EntryInput, type Store } from '@writ/server';
import { fmt, percentile, row } from './util.ts';

const N = Number(process.env['BENCH_ENTRIES'] ?? 50_000);
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 4);
const WRIT = new URL('../packages/cli/bin/writ.js', import.meta.url).pathname;

const entry = (i: number): EntryInput => ({
  spiffeId: `spiffe://bench.example/ns/n${i % 97}/sa/w${i}`,
  parentId: `spiffe://bench.example/writ/agent/node-${i % 1000}`,
  selectors: [`k8s:ns:n${i % 97}`, `k8s:sa:w${i}`],
  x509SvidTtl: 0,
  jwtSvidTtl: 0,
  dnsNames: [],
  federatesWith: [],
  admin: false,
  hint: '',
  expiresAt: null,
});

/** Single-entry creates for `seconds`: writes per second and the p99 latency. */
async function writes(store: Store, from: number, seconds: number): Promise<{ rate: number; p99: number; n: number }> {
  const lat: number[] = [];
  const end = performance.now() + seconds * 1000;
  const start = performance.now();
  let i = from;
  while (performance.now() < end) {
    const t = performance.now();
    await store.createEntries([entry(i++)], Date.now());
    lat.push(performance.now() - t);
  }
  lat.sort((a, b) => a - b);
  return { rate: lat.length / ((performance.now() - start) / 1000), p99: percentile(lat, 99), n: lat.length };
}

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-backup-'));
  try {
    const store = await openStore({ db: 'sqlite', dataDir: dir });
    writeFileSync(join(dir, 'server.id'), 'bench\n');
    for (let i = 0; i < N; i += 5000)
      await store.createEntries(
        Array.from({ length: Math.min(5000, N - i) }, (_, k) => entry(i + k)),
        Date.now(),
      );
    const kek = 'bench-kek';
    let t = performance.now();
    await createBackup({ dataDir: dir, out: join(dir, 'a.backup'), kek });
    const backupMs = performance.now() - t;
    t = performance.now();
    copyFileSync(join(dir, 'writ.db'), join(dir, 'copy.db'));
    const copyMs = performance.now() - t;
    const mib = statSync(join(dir, 'writ.db')).size / 2 ** 20;
    row(
      `backup: ${fmt(N)} entries (${mib.toFixed(1)} MiB db)`,
      `${backupMs.toFixed(0)} ms`,
      `cp of the file ${copyMs.toFixed(0)} ms`,
      (backupMs / copyMs).toFixed(1),
      'online, consistent',
    );

    const base = await writes(store, N, SECONDS);
    // Backups back to back in another process, as an operator's cron job would run them.
    let stop = false;
    let backups = 0;
    const loop = (async () => {
      while (!stop) {
        await new Promise<void>((resolve, reject) => {
          const c = spawn(process.execPath, [WRIT, 'server', 'backup', '--data-dir', dir, '--out', join(dir, 'b.backup')], {
            stdio: 'ignore',
            env: { ...process.env, WRIT_KEK: kek },
          });
          c.on('exit', (code) => (code === 0 ? (backups++, resolve()) : reject(new Error(`backup exited ${code}`))));
        });
      }
    })();
    await new Promise((r) => setTimeout(r, 1500)); // the first child is past its start-up
    const during = await writes(store, N + base.n, SECONDS);
    stop = true;
    await loop;
    row(
      'backup: writes/s while backups run',
      `${fmt(during.rate)}/s`,
      `without ${fmt(base.rate)}/s`,
      (during.rate / base.rate).toFixed(2),
      `${backups} backups`,
    );
    row('', `p99 ${during.p99.toFixed(2)} ms`, `without p99 ${base.p99.toFixed(2)} ms`, (during.p99 / base.p99).toFixed(2), '');
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
