/**
 * Index digests in the answers, on SQLite and PostgreSQL: a runtime that reports the index digest it
 * pulled still runs the affected manifest, and a base annotation naming an index finds the
 * manifest of the image's platform. Images get their index digest through `mergeImageTx`, as
 * `writ image add` and admission put them into the inventory.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { Report } from '@writ/vuln';
import { TEST_PG_URL } from '../testing/stores.ts';
import type { SqlDriver } from './driver.ts';
import { mergeImageTx } from './inventory-sql.ts';
import { PostgresDriver } from './postgres.ts';
import { MIGRATIONS } from './schema.ts';
import { SqlStore } from './sql-store.ts';
import { SqliteDriver } from './sqlite.ts';
import type { InventoryImage } from './types.ts';

const dg = (c: string): string => `sha256:${c.repeat(64)}`;
const APP = dg('a');
const APP_INDEX = dg('b');
const BASE = dg('c');
const BASE_INDEX = dg('d');
const L1 = dg('1');
const L2 = dg('2');

const report = (digest: string, name: string, layers: string[], annotations: Record<string, string>, cve: boolean): Report => ({
  format: 'trivy',
  scanner: { name: 'trivy' },
  scannedAt: '2026-01-01T00:00:00.000Z',
  image: { digest, names: [name], repoTags: [], repoDigests: [], diffIds: layers, annotations, labels: {} },
  packages: [{ id: 'p0', name: 'zlib', version: '1.2', type: 'apk', layer: L1 }],
  findings: cve ? [{ id: 'CVE-2022-37434', aliases: [], severity: 'critical', packageRef: 'p0', installed: '1.2', fixed: '1.3', status: 'affected' }] : [],
  vex: [],
  vulnerabilityData: true,
});

const withIndex = (digest: string, indexDigest: string, names: string[]): InventoryImage => ({
  digest,
  configDigest: null,
  indexDigest,
  platform: 'linux/amd64',
  names,
  tags: [],
  layers: [],
  annotations: {},
  labels: {},
  created: null,
  firstSeen: 5,
  lastSeen: 5,
});

const drivers: Array<{ name: string; open: () => Promise<{ driver: SqlDriver; dispose: () => Promise<void> }> }> = [
  {
    name: 'sqlite',
    open: async () => {
      const dir = mkdtempSync(join(tmpdir(), 'writ-idx-'));
      return { driver: new SqliteDriver(join(dir, 'writ.db')), dispose: async () => rmSync(dir, { recursive: true, force: true }) };
    },
  },
  {
    name: 'postgres',
    open: async () => {
      const schema = `writ_idx_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
      const admin = async (sql: string): Promise<void> => {
        const c = new pg.Client({ connectionString: TEST_PG_URL });
        await c.connect();
        await c.query(sql);
        await c.end();
      };
      await admin(`CREATE SCHEMA ${schema}`);
      return { driver: new PostgresDriver({ url: TEST_PG_URL, schema }), dispose: () => admin(`DROP SCHEMA ${schema} CASCADE`) };
    },
  },
];

for (const d of drivers) {
  describe(`answers with index digests: ${d.name}`, () => {
    let store: SqlStore;
    let driver: SqlDriver;
    let dispose: () => Promise<void>;
    before(async () => {
      ({ driver, dispose } = await d.open());
      store = new SqlStore(driver);
      await store.migrate();
      // The app names its base by the base's index digest (as buildkit does for a multi-arch base).
      await store.putReport(
        report(
          APP,
          'reg.example/shop/app',
          [L1, L2],
          { 'org.opencontainers.image.base.name': 'reg.example/base/zlib:1', 'org.opencontainers.image.base.digest': BASE_INDEX },
          true,
        ),
        1,
      );
      await store.putReport(report(BASE, 'reg.example/base/zlib', [L1], {}, true), 2);
      await driver.transaction(async (tx) => {
        await mergeImageTx(tx, withIndex(APP, APP_INDEX, ['reg.example/shop/app']));
        await mergeImageTx(tx, withIndex(BASE, BASE_INDEX, ['reg.example/base/zlib']));
      });
      await store.putAgentWorkloads(
        'spiffe://example.org/writ/agent/n1',
        'n1',
        [
          {
            key: 'c1',
            spiffeIds: ['spiffe://example.org/app'],
            containerId: 'c1',
            containerName: 'app',
            podUid: null,
            podName: 'app-1',
            namespace: 'shop',
            podOwner: null,
            imageDigest: APP_INDEX,
            imageName: 'reg.example/shop/app',
            labels: {},
            annotations: {},
            owner: 'shop',
          },
        ],
        10,
      );
    });
    after(async () => {
      await store.close();
      await dispose();
    });

    it('a workload reported by the index digest runs the affected manifest', async () => {
      const rows = await store.affected('CVE-2022-37434', 10);
      const app = rows.find((r) => r.image.digest === APP)!;
      assert.deepEqual(
        app.running.map((w) => [w.key, w.imageDigest, w.manifestDigest]),
        [['c1', APP_INDEX, APP]],
      );
      assert.deepEqual(
        (await store.runningWorkloads([APP], 10)).map((w) => w.manifestDigest),
        [APP],
      );
      assert.deepEqual(await store.runningImageDigests(10), [APP]);
      assert.deepEqual(await store.reportedDigests([APP_INDEX, dg('e')]), [APP_INDEX]);
      const page = await store.affectedPage('CVE-2022-37434', 10, { limit: 100, workloadLimit: 1000 });
      assert.deepEqual(page.owners, [{ owner: 'shop', workloads: 1, images: 1 }], 'counted through the index digest too');
      assert.equal(page.runningByImage.get(APP), 1);
      assert.deepEqual(
        page.rows.filter((x) => x.image.digest === APP).flatMap((x) => x.running.map((w) => [w.key, w.manifestDigest])),
        [['c1', APP]],
      );
      const r = await store.rolloutWorkloads([APP], 10);
      assert.deepEqual(
        r.history.map((w) => w.key),
        ['c1'],
      );
    });

    it('a base annotation naming an index resolves to the manifest once the index is known, recomputed for the child', async () => {
      const app = (await store.affected('CVE-2022-37434', 10)).find((r) => r.image.digest === APP)!;
      assert.deepEqual(app.image.parent, { digest: BASE, name: 'reg.example/base/zlib:1', source: 'annotation', baseLayers: 1 });
      const l = await store.imageLineage(BASE);
      assert.deepEqual(
        l.children.map((c) => c.digest),
        [APP],
      );
    });
  });
}

for (const d of drivers) {
  describe(`migrations 13 and 19 over stored reports and workloads: ${d.name}`, () => {
    it('flags the latest report of each (image, scanner), files existing findings under their IDs, and counts what carries them and runs', async () => {
      const { driver, dispose } = await d.open();
      try {
        // The schema as version 12 left it, with two scans of one image (the newer without the CVE) and one of another.
        await driver.query('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
        const int64Key = driver.dialect === 'sqlite' ? 'INTEGER PRIMARY KEY' : 'BIGINT PRIMARY KEY';
        for (const m of MIGRATIONS.filter((x) => x.version <= 12)) {
          for (const stmt of m.statements) await driver.query(stmt.replaceAll('{INT64_PRIMARY_KEY}', int64Key));
          await driver.query('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)', [m.version, 0]);
        }
        for (const digest of [APP, BASE])
          await driver.query(
            `INSERT INTO images (digest, config_digest, index_digest, platform, names, tags, layers, annotations, labels, created, first_seen, last_seen)
             VALUES (?, NULL, NULL, NULL, '[]', '[]', '[]', '{}', '{}', NULL, 1, 1)`,
            [digest],
          );
        const reports: Array<[string, string, number | null, number, boolean]> = [
          ['r-old', APP, 100, 1, true],
          ['r-new', APP, 200, 2, false],
          ['r-base', BASE, null, 3, true],
        ];
        for (const [id, digest, scanned, ingested, cve] of reports) {
          await driver.query(
            `INSERT INTO reports (id, image_digest, scanner, scanner_version, format, format_version, scan_key, scanned_at, ingested_at, package_count, finding_count)
             VALUES (?, ?, 'trivy', NULL, 'trivy', '2', ?, ?, ?, 1, ?)`,
            [id, digest, `k-${id}`, scanned, ingested, cve ? 1 : 0],
          );
          await driver.query(
            `INSERT INTO report_packages (report_id, idx, ref, name, version, type, purl, layer) VALUES (?, 0, 'p0', 'zlib', '1.2', 'apk', NULL, NULL)`,
            [id],
          );
          if (cve)
            await driver.query(
              `INSERT INTO report_findings (report_id, idx, vuln_id, severity, status, installed, fixed, package_ref) VALUES (?, 0, 'CVE-2022-37434', 'critical', 'affected', '1.2', NULL, 'p0')`,
              [id],
            );
        }
        // Workloads as version 12 kept them: on the base two running for ops, one without an owner, one ended; one on the app.
        const workloads: Array<[string, string, string | null, number | null]> = [
          ['w1', BASE, 'ops', null],
          ['w2', BASE, 'ops', null],
          ['w3', BASE, null, null],
          ['w4', BASE, 'ops', 40],
          ['w5', APP, 'ops', null],
        ];
        for (const [key, digest, owner, ended] of workloads)
          await driver.query(
            `INSERT INTO workloads (agent_id, wkey, node, spiffe_ids, container_id, container_name, pod_uid, pod_name, namespace, pod_owner, image_digest,
               image_name, labels, annotations, owner, first_seen, last_seen, ended_at)
             VALUES ('spiffe://example.org/writ/agent/n1', ?, 'n1', '[]', NULL, NULL, NULL, NULL, NULL, NULL, ?, NULL, '{}', '{}', ?, 1, 50, ?)`,
            [key, digest, owner, ended],
          );
        const store = new SqlStore(driver);
        await store.migrate();
        assert.deepEqual(await store.affectedDigests('CVE-2022-37434'), [BASE], 'the newer scan of the app has no CVE; the base has only one scan');
        // Migration 19 fills vuln_images and workload_counts from what is stored.
        const page = await store.affectedPage('CVE-2022-37434', 50, { limit: 100, workloadLimit: 1000 });
        assert.deepEqual(page.carrying, [BASE]);
        assert.deepEqual(page.owners, [
          { owner: 'ops', workloads: 2, images: 1 },
          { owner: null, workloads: 1, images: 1 },
        ]);
        assert.equal((await store.getImage(APP))?.reports[0]?.id, 'r-new');
        await store.close();
      } finally {
        await dispose();
      }
    });
  });
}
