/**
 * What `putAgentWorkloads` costs per agent report, and what batching its statements would save: the
 * store's method (one upsert per workload, one inventory lookup per digest) against an experiment
 * doing the same writes in three statements (the agent's current keys, one multi-row upsert, one
 * lookup of all digests). An experiment beside the store, not its code.
 *
 *   npx node bench/vuln/workloads-profile.ts [agents=200] [sqlite|postgres]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import type { SqlDriver, SqlValue } from '../../packages/server/src/store/driver.ts';
import { PostgresDriver } from '../../packages/server/src/store/postgres.ts';
import { SqlStore } from '../../packages/server/src/store/sql-store.ts';
import { SqliteDriver } from '../../packages/server/src/store/sqlite.ts';
import type { WorkloadInput } from '../../packages/server/src/store/types.ts';
import { WORKLOAD_COLUMNS } from '../../packages/server/src/store/workloads-sql.ts';

const AGENTS = Number(process.argv[2] ?? 200);
const DB = process.argv[3] ?? 'sqlite';
const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const digest = (n: number): string => `sha256:${(n % 5000).toString(16).padStart(64, '0')}`;

const workloads = (a: number): WorkloadInput[] =>
  Array.from({ length: 100 }, (_, k) => {
    const n = a * 100 + k;
    return {
      key: `c${n}`,
      spiffeIds: [`spiffe://bench.example/w${n % 5000}`],
      containerId: `c${n}`,
      containerName: 'app',
      podUid: `p${n}`,
      podName: `p${n}`,
      namespace: 'ns',
      podOwner: 'ReplicaSet/app-1',
      imageDigest: digest(n * 7919),
      imageName: 'registry.example/app',
      labels: { team: 'payments' },
      annotations: {},
      owner: 'payments',
    };
  });

/** The same writes as putAgentWorkloads for a report of already-running, already-known workloads (a heartbeat). */
async function batchedHeartbeat(db: SqlDriver, agentId: string, node: string, ws: readonly WorkloadInput[], now: number): Promise<void> {
  await db.transaction(async (tx) => {
    const current = new Map(
      (await tx.query('SELECT wkey, first_seen FROM workloads WHERE agent_id = ? AND ended_at IS NULL', [agentId])).map((r) => [
        r['wkey'] as string,
        Number(r['first_seen']),
      ]),
    );
    const rows: SqlValue[] = [];
    for (const w of ws)
      rows.push(
        agentId,
        w.key,
        node,
        JSON.stringify([...w.spiffeIds].sort()),
        w.containerId,
        w.containerName,
        w.podUid,
        w.podName,
        w.namespace,
        w.podOwner,
        w.imageDigest,
        w.imageName,
        JSON.stringify(w.labels),
        JSON.stringify(w.annotations),
        w.owner,
        current.get(w.key) ?? now,
        now,
      );
    await tx.execute(
      `INSERT INTO workloads (${WORKLOAD_COLUMNS}) VALUES ${ws.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)').join(', ')}
       ON CONFLICT (agent_id, wkey) DO UPDATE SET node = excluded.node, spiffe_ids = excluded.spiffe_ids, container_id = excluded.container_id,
         container_name = excluded.container_name, pod_uid = excluded.pod_uid, pod_name = excluded.pod_name, namespace = excluded.namespace,
         pod_owner = excluded.pod_owner, image_digest = excluded.image_digest, image_name = excluded.image_name, labels = excluded.labels,
         annotations = excluded.annotations, owner = excluded.owner, first_seen = excluded.first_seen, last_seen = excluded.last_seen, ended_at = NULL`,
      rows,
    );
    const ds = [...new Set(ws.map((w) => w.imageDigest!))];
    const marks = ds.map(() => '?').join(', ');
    await tx.query(`SELECT digest, index_digest FROM images WHERE digest IN (${marks}) OR index_digest IN (${marks})`, [...ds, ...ds]);
  });
}

const dir = mkdtempSync(join(tmpdir(), 'writ-workloads-profile-'));
const schema = `writ_workloads_${process.pid}`;
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
  const store = new SqlStore(raw);
  await store.migrate();
  const now = Date.now();
  for (let a = 0; a < AGENTS; a++) await store.putAgentWorkloads(`agent-${a}`, `node-${a}`, workloads(a), now);
  for (let round = 0; round < 2; round++) {
    let s = performance.now();
    for (let a = 0; a < AGENTS; a++) await store.putAgentWorkloads(`agent-${a}`, `node-${a}`, workloads(a), now + 1 + round);
    const storeMs = (performance.now() - s) / AGENTS;
    s = performance.now();
    for (let a = 0; a < AGENTS; a++) await batchedHeartbeat(raw, `agent-${a}`, `node-${a}`, workloads(a), now + 1 + round);
    const batchedMs = (performance.now() - s) / AGENTS;
    console.log(
      `${DB}, heartbeat of ${AGENTS} agents × 100 (round ${round + 1}): putAgentWorkloads ${storeMs.toFixed(2)} ms/agent (${Math.round(100_000 / storeMs)} workloads/s), batched ${batchedMs.toFixed(2)} ms/agent (${Math.round(100_000 / batchedMs)} workloads/s): ${(storeMs / batchedMs).toFixed(1)}x`,
    );
  }
} finally {
  await raw.close();
  if (admin) {
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  }
  rmSync(dir, { recursive: true, force: true });
}
