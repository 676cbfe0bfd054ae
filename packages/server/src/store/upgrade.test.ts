/**
 * Upgrades (issue 16 §3): a database made by an earlier version — the schema as of migration 15,
 * rows written with that version's columns — migrated by this version's `migrate()`, read back
 * through the Store. Migrations that backfill (19: vuln_images, workload_counts) must find the old
 * rows. Run on SQLite and PostgreSQL, like the conformance suite.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pg from 'pg';
import { SCHEMA_VERSION } from '../backup.ts';
import { TEST_PG_URL } from '../testing/stores.ts';
import type { SqlDriver } from './driver.ts';
import { openStore } from './open.ts';
import { PostgresDriver } from './postgres.ts';
import { MIGRATIONS } from './schema.ts';
import { SqliteDriver } from './sqlite.ts';
import type { Store } from './types.ts';

const OLD_VERSION = 15;
const NOW = Date.now();
const DIGEST = `sha256:${'a'.repeat(64)}`;

/** What the migrate() of a version that stopped at `upTo` did. */
async function migrateTo(db: SqlDriver, upTo: number): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
    const key = db.dialect === 'sqlite' ? 'INTEGER PRIMARY KEY' : 'BIGINT PRIMARY KEY';
    for (const m of MIGRATIONS.filter((x) => x.version <= upTo)) {
      for (const stmt of m.statements) await tx.query(stmt.replaceAll('{INT64_PRIMARY_KEY}', key));
      await tx.query('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)', [m.version, NOW]);
    }
  });
}

/** Rows as the version at migration 15 wrote them (its columns, no later ones). */
async function oldRows(db: SqlDriver): Promise<void> {
  await db.transaction(async (tx) => {
    for (const [seq, decision] of [
      [1, 'allow'],
      [2, 'allow'],
      [3, 'deny'],
    ] as const)
      await tx.execute(
        `INSERT INTO decisions (seq, id, at, from_id, to_id, action, decision, reason, policy_revision, rule, reporter) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [
          seq,
          `d-old-${seq}`,
          NOW - 60_000 * seq,
          'spiffe://up.test/web',
          'spiffe://up.test/api',
          'GET /',
          decision,
          'ALLOW_RULE',
          1,
          'r#0',
          'spiffe://up.test/agent/n1',
        ],
      );
    await tx.execute(`UPDATE counters SET value = 7 WHERE name = 'entry_revision'`);
    await tx.execute(
      `INSERT INTO entries (id, spiffe_id, parent_id, selectors, selectors_key, x509_svid_ttl, jwt_svid_ttl, dns_names, federates_with, admin, hint,
        expires_at, revision, created_at, updated_at, require_admitted_image, owner)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        'e-old',
        'spiffe://up.test/web',
        'spiffe://up.test/agent/n1',
        '["unix:uid:1000"]',
        'unix:uid:1000',
        3600,
        300,
        '["web.local"]',
        '[]',
        0,
        'from 15',
        null,
        7,
        NOW - 1000,
        NOW - 1000,
        1,
        'team-a',
      ],
    );
    await tx.execute('INSERT INTO entry_selectors (entry_id, selector) VALUES (?, ?)', ['e-old', 'unix:uid:1000']);
    await tx.execute('INSERT INTO admin_tokens (id, hash, role, name, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)', [
      't-old',
      'h'.repeat(64),
      'operator',
      'ci',
      NOW - 1000,
      null,
    ]);
    await tx.execute(
      `INSERT INTO agents (spiffe_id, node_name, attestation_type, selectors, serial, expires_at, banned, created_at, updated_at, policy_revision, policy_acked_at, quarantine_version)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ['spiffe://up.test/agent/n1', 'n1', 'join_token', '[]', '01', NOW + 3_600_000, 0, NOW - 1000, NOW - 1000, 3, NOW - 500, 2],
    );
    // An image with a report carrying a CVE, and a workload running it: migration 19 backfills from these.
    await tx.execute(
      `INSERT INTO images (digest, names, tags, layers, annotations, labels, first_seen, last_seen) VALUES (?, '["reg.test/web"]', '["1.0"]', '[]', '{}', '{}', ?, ?)`,
      [DIGEST, NOW - 1000, NOW - 1000],
    );
    await tx.execute(
      `INSERT INTO reports (id, image_digest, scanner, format, scan_key, scanned_at, ingested_at, package_count, finding_count, latest, vuln_data)
       VALUES ('r-old', ?, 'trivy', 'trivy', 'k1', ?, ?, 1, 1, 1, 1)`,
      [DIGEST, NOW - 2000, NOW - 1000],
    );
    await tx.execute(`INSERT INTO report_packages (report_id, idx, ref, name, version, type) VALUES ('r-old', 0, 'p0', 'openssl', '3.0.1', 'deb')`);
    await tx.execute(
      `INSERT INTO report_findings (report_id, idx, vuln_id, severity, status, installed, fixed, package_ref, aliases)
       VALUES ('r-old', 0, 'CVE-2026-0001', 'high', 'affected', '3.0.1', '3.0.2', 'p0', '[]')`,
    );
    await tx.execute(`INSERT INTO finding_ids (vuln_id, report_id, idx) VALUES ('CVE-2026-0001', 'r-old', 0)`);
    await tx.execute(
      `INSERT INTO workloads (agent_id, wkey, node, spiffe_ids, image_digest, labels, annotations, owner, first_seen, last_seen, ended_at)
       VALUES ('spiffe://up.test/agent/n1', 'w1', 'n1', '["spiffe://up.test/web"]', ?, '{}', '{}', 'team-a', ?, ?, NULL)`,
      [DIGEST, NOW - 5000, NOW - 1000],
    );
  });
}

async function checkUpgraded(store: Store): Promise<void> {
  const entry = await store.getEntry('e-old');
  assert.ok(entry, 'the entry written at migration 15 reads back');
  assert.equal(entry.spiffeId, 'spiffe://up.test/web');
  assert.deepEqual(entry.selectors, ['unix:uid:1000']);
  assert.equal(entry.owner, 'team-a');
  assert.equal(entry.requireAdmittedImage, true);
  const tokens = await store.listAdminTokens();
  assert.deepEqual(
    tokens.map((t) => [t.id, t.role]),
    [['t-old', 'operator']],
  );
  const agent = await store.getAgent('spiffe://up.test/agent/n1');
  assert.equal(agent?.nodeName, 'n1');
  // The agent's next sync still finds its entry, from the revision it had.
  const sync = await store.syncEntries('spiffe://up.test/agent/n1', 0);
  assert.deepEqual(
    sync.entries.map((e) => e.id),
    ['e-old'],
  );
  // Backfilled by migration 19 from rows the old version wrote: the CVE's image and its running workload, by owner.
  const page = await store.affectedPage('CVE-2026-0001', NOW, { limit: 10, workloadLimit: 10 });
  assert.equal(page.images, 1);
  assert.equal(page.workloads, 1);
  assert.deepEqual(
    page.owners.map((o) => [o.owner, o.workloads]),
    [['team-a', 1]],
  );
  // Backfilled by migration 28 from the decisions the old version logged: the service graph's counts.
  const graph = await store.graphEdges({ since: NOW - 3_600_000, limit: 10 });
  assert.deepEqual(
    graph.map((r) => [r.from, r.to, r.rule, r.allow, r.deny]),
    [['spiffe://up.test/web', 'spiffe://up.test/api', 'r#0', 2, 1]],
  );
  // New writes work on the upgraded schema.
  const [made] = await store.createEntries(
    [
      {
        spiffeId: 'spiffe://up.test/api',
        parentId: 'spiffe://up.test/agent/n1',
        selectors: ['unix:uid:1001'],
        x509SvidTtl: 0,
        jwtSvidTtl: 0,
        dnsNames: [],
        federatesWith: [],
        admin: false,
        hint: '',
        expiresAt: null,
      },
    ],
    NOW,
  );
  assert.ok(made && (await store.getEntry(made.id)));
}

describe(`upgrade from the schema of migration ${OLD_VERSION} with data in it`, () => {
  it('the migrations this test replays stop before the current version', () => {
    assert.ok(SCHEMA_VERSION > OLD_VERSION, `the current schema (${SCHEMA_VERSION}) is newer than ${OLD_VERSION}`);
  });

  it('sqlite', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-upgrade-'));
    try {
      const old = new SqliteDriver(join(dir, 'writ.db'));
      await migrateTo(old, OLD_VERSION);
      await oldRows(old);
      await old.close();
      const store = await openStore({ db: 'sqlite', dataDir: dir });
      try {
        await checkUpgraded(store);
      } finally {
        await store.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('postgres', async () => {
    const schema = `writ_up_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    const admin = new pg.Client({ connectionString: TEST_PG_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    try {
      const old = new PostgresDriver({ url: TEST_PG_URL, schema });
      await migrateTo(old, OLD_VERSION);
      await oldRows(old);
      await old.close();
      const store = await openStore({ db: TEST_PG_URL, dataDir: tmpdir(), schema });
      try {
        await checkUpgraded(store);
      } finally {
        await store.close();
      }
    } finally {
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.end();
    }
  });
});
