/**
 * Exceptions and VEX as a user works with them (issue 13, section 5): a real server process
 * (`--vuln-exception-max-age 30d`, on SQLite and on PostgreSQL) and the real CLI. A VulnException applied, listed, refused when
 * it would last too long or has already ended; an OpenVEX document ingested, again, replaced by a
 * newer version, refused for an older one; the export read back through parseReport (the same
 * reader every report goes through) with the stored statements and the exception as not_affected.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { parseReport } from '@writ/vuln';
import { TEST_PG_URL } from '../../packages/server/src/testing/stores.ts';
import { ROOT, cleanup, ordersPolicy, run, type ServerProcess, startServerProcess, writ } from './helpers.ts';

const TESTDATA = join(ROOT, 'packages/vuln/src/testdata');
// OpenVEX's own Go library (github.com/openvex/go-vex, pinned in test/go/vexcheck), built by .ci/run.
const VEXCHECK = join(ROOT, 'test/go/bin/vexcheck');
function vexcheck(args: string[]) {
  if (!existsSync(VEXCHECK)) throw new Error(`${VEXCHECK} is missing: build it as .ci/run does (cd test/go/vexcheck && go build -o ../bin/vexcheck .)`);
  return run(VEXCHECK, args);
}
const VEX_ID = 'https://example.com/vex/2026-0001';
const dir = mkdtempSync(join(tmpdir(), 'writ-e2e-vex-'));
let srv: ServerProcess;

const day = (n: number): string => new Date(Date.now() + n * 86_400_000).toISOString().slice(0, 10);
const exceptionYaml = (name: string, expires: string, scope = '{ repository: [registry.example.com/shop/web] }') => `apiVersion: writ.dev/v1
kind: VulnException
metadata:
  name: ${name}
spec:
  vulnerability: cve-2024-9143
  scope: ${scope}
  reason: "SEC-42: only reachable through the admin port, closed in prod"
  owner: team-shop
  expires: ${expires}
`;
const file = (name: string, text: string): string => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const vexDoc = (edit: (d: Record<string, unknown>) => void): string => {
  const d = JSON.parse(readFileSync(join(TESTDATA, 'openvex-0.2.0.json'), 'utf8')) as Record<string, unknown>;
  edit(d);
  return JSON.stringify(d);
};

after(() => cleanup(dir));

/** A fresh database of the test PostgreSQL for one server; dropped by the returned function. */
async function freshPostgres(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `writ_e2e_vex_${process.pid}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: TEST_PG_URL });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await admin(`DROP DATABASE IF EXISTS ${name}`);
  await admin(`CREATE DATABASE ${name}`);
  const u = new URL(TEST_PG_URL);
  u.pathname = `/${name}`;
  return { url: u.toString(), drop: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

for (const backend of ['sqlite', 'postgres'] as const)
  describe(`on ${backend}`, () => {
    let db: { url: string; drop(): Promise<void> } | undefined;
    before(async () => {
      db = backend === 'postgres' ? await freshPostgres() : undefined;
      srv = await startServerProcess({ args: ['--vuln-exception-max-age', '30d', ...(db ? ['--db', db.url] : [])] });
    });
    after(async () => {
      await srv?.stop();
      await db?.drop();
    });

    describe('VulnException through writ policy apply', () => {
      it('applies one (a date as expires), lists it in its own table with owner and expiry', async () => {
        const r = await writ(srv, ['policy', 'apply', '-f', file('exc.yaml', exceptionYaml('shop-web-9143', day(10)))]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /changed: VulnException\/shop-web-9143/);
        const list = await writ(srv, ['policy', 'list']);
        assert.equal(list.code, 0, list.stderr);
        const row = list.stdout.split('\n').find((l) => l.startsWith('VulnException/shop-web-9143 '));
        assert.ok(row, list.stdout);
        assert.match(list.stdout, /^VULN EXCEPTION\s+VULNERABILITY\s+SCOPE\s+OWNER\s+EXPIRES$/m);
        assert.match(row, /CVE-2024-9143\s+repository registry.example.com\/shop\/web\s+team-shop\s+until \d{4}-\d\d-\d\dT00:00:00.000Z$/);
        const json = JSON.parse((await writ(srv, ['-o', 'json', 'policy', 'list'])).stdout) as { policies: Array<Record<string, unknown>> };
        const e = json.policies.find((p) => p['name'] === 'VulnException/shop-web-9143');
        assert.deepEqual(
          { kind: e?.['kind'], vulnerability: e?.['vulnerability'], scope: e?.['scope'], expired: e?.['expired'] },
          { kind: 'VulnException', vulnerability: 'CVE-2024-9143', scope: { repository: ['registry.example.com/shop/web'] }, expired: false },
        );
      });

      it("refuses one longer than the server's maximum, saying the maximum, and applies nothing", async () => {
        const r = await writ(srv, ['policy', 'apply', '-f', file('long.yaml', exceptionYaml('too-long', day(45)))]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /request:10:\d+: spec\.expires is 4[45](\.\d+)? days away; an exception may last at most 30 days \(until \d{4}-/);
        const list = JSON.parse((await writ(srv, ['-o', 'json', 'policy', 'list'])).stdout) as { policies: Array<{ name: string }> };
        assert.deepEqual(
          list.policies.map((p) => p.name),
          ['VulnException/shop-web-9143'],
        );
      });

      it('applies one beside an AccessPolicy and an AdmissionException in the same file, each under its kind', async () => {
        const admissionException = `apiVersion: writ.dev/v1
kind: AdmissionException
metadata: { name: legacy-exporter }
spec: { namespaces: [monitoring], controls: [hostPathVolumes], reason: "T-1", expires: ${new Date(Date.now() + 5 * 86_400_000).toISOString()} }
`;
        const text = [ordersPolicy('spiffe://e2e.test/ns/orders', 'GET'), admissionException, exceptionYaml('shop-web-9143', day(10))].join('---\n');
        const r = await writ(srv, ['policy', 'apply', '-f', file('mixed.yaml', text)]);
        assert.equal(r.code, 0, r.stderr);
        const list = JSON.parse((await writ(srv, ['-o', 'json', 'policy', 'list'])).stdout) as { policies: Array<{ name: string; kind: string }> };
        assert.deepEqual(
          list.policies.map((p) => [p.name, p.kind]),
          [
            ['AdmissionException/legacy-exporter', 'AdmissionException'],
            ['VulnException/shop-web-9143', 'VulnException'],
            ['orders', 'AccessPolicy'],
          ],
        );
        for (const name of ['AdmissionException/legacy-exporter', 'orders']) assert.equal((await writ(srv, ['policy', 'delete', name])).code, 0);
      });

      it('refuses one already expired before sending it, naming the file and line', async () => {
        const r = await writ(srv, ['policy', 'apply', '-f', file('past.yaml', exceptionYaml('past', '2020-01-01'))]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /past\.yaml:10:\d+: spec\.expires is in the past \(2020-01-01T00:00:00.000Z\)/);
      });
    });

    describe('OpenVEX in', () => {
      it('writ vuln ingest stores a document, the same again stores nothing', async () => {
        const r = await writ(srv, ['vuln', 'ingest', '-f', join(TESTDATA, 'openvex-0.2.0.json')]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`^document\\s+${VEX_ID}$`, 'm'));
        assert.match(r.stdout, /^version\s+1 \(stored\)$/m);
        assert.match(r.stdout, /^statements\s+\d+ \(not_affected \d+, fixed \d+/m);
        const again = await writ(srv, ['vuln', 'ingest', '-f', join(TESTDATA, 'openvex-0.2.0.json')]);
        assert.equal(again.code, 0, again.stderr);
        assert.match(again.stdout, /^version\s+1 \(already stored\)$/m);
      });

      it('the same version with other statements, or an older one, is refused; a newer one replaces the statements', async () => {
        const changed = file(
          'changed.json',
          vexDoc((d) => ((d.statements as unknown[]).length = 1)),
        );
        const r = await writ(srv, ['vuln', 'ingest', '-f', changed]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /version 1 of https:\/\/example\.com\/vex\/2026-0001 is already stored with other statements.*\[ERR_VEX_VERSION_CONFLICT\]/);
        const v2 = file(
          'v2.json',
          vexDoc((d) => ((d.version = 2), ((d.statements as unknown[]).length = 1))),
        );
        const ok = await writ(srv, ['vuln', 'ingest', '-f', v2]);
        assert.equal(ok.code, 0, ok.stderr);
        assert.match(ok.stdout, /^version\s+2 \(replaced version 1\)$/m);
        const old = await writ(srv, ['vuln', 'ingest', '-f', join(TESTDATA, 'openvex-0.2.0.json')]);
        assert.equal(old.code, 1);
        assert.match(old.stderr, /version 2 of .* is stored; version 1 is older.*\[ERR_VEX_VERSION_CONFLICT\]/);
        const list = JSON.parse((await writ(srv, ['-o', 'json', 'vuln', 'vex', 'list'])).stdout) as {
          documents: Array<{ version: number; statements: number }>;
        };
        assert.deepEqual(
          list.documents.map((d) => [d.version, d.statements]),
          [[2, 1]],
        );
      });

      it('a document without @id is refused naming the field', async () => {
        const r = await writ(srv, [
          'vuln',
          'ingest',
          '-f',
          file(
            'noid.json',
            vexDoc((d) => delete d['@id']),
          ),
        ]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /needs an "@id".*\(at \["@id"\]\) \[ERR_VULN_REPORT_INVALID\]/);
      });

      it('writ vuln vex list shows the statements; a bad vulnerability ID is a usage error from the server', async () => {
        const r = await writ(srv, ['vuln', 'vex', 'list', '--vulnerability', 'cve-2025-26519']);
        assert.equal(r.code, 0, r.stderr);
        assert.match(
          r.stdout,
          /^CVE-2025-26519\s+not_affected\s+pkg:oci\/web@sha256%3A9e9e.*\[pkg:apk\/alpine\/musl@1\.2\.5-r0\?arch=x86_64&distro=3\.20\.3\]\s+vulnerable_code_not_in_execute_path\s+https:\/\/example\.com\/vex\/2026-0001$/m,
        );
        const bad = await writ(srv, ['vuln', 'vex', 'list', '--vulnerability', 'CVE-24-1']);
        assert.equal(bad.code, 1);
        assert.match(bad.stderr, /\[ERR_VULN_ID_INVALID\]/);
      });
    });

    describe('writ vuln vex export', () => {
      it('writes an OpenVEX v0.2.0 document of the stored statements and the active exception, read back by parseReport', async () => {
        const out = join(dir, 'export.openvex.json');
        const r = await writ(srv, ['vuln', 'vex', 'export', '-f', out]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, /^wrote .*export\.openvex\.json: 2 statements$/m);
        const text = readFileSync(out, 'utf8');
        const doc = JSON.parse(text) as Record<string, unknown>;
        assert.equal(doc['@context'], 'https://openvex.dev/ns/v0.2.0');
        assert.equal(doc['@id'], 'urn:writ:e2e.test:vex-export');
        assert.equal(doc['author'], 'spiffe://e2e.test');
        assert.ok(Number.isSafeInteger(doc['version']) && (doc['version'] as number) > 0);
        const back = parseReport(text);
        assert.equal(back.format, 'openvex');
        assert.equal(back.formatVersion, 'v0.2.0');
        assert.deepEqual(
          back.vex.map((s) => [s.vulnerability, s.status]),
          [
            ['CVE-2025-26519', 'not_affected'],
            ['CVE-2024-9143', 'not_affected'],
          ],
        );
        const ex = back.vex[1]!;
        assert.equal(ex.justification, undefined);
        assert.match(
          ex.impactStatement ?? '',
          /^Accepted risk \(Writ VulnException shop-web-9143, owner team-shop, until \d{4}-\d\d-\d\dT00:00:00\.000Z\): SEC-42/,
        );
        assert.deepEqual(ex.products, [
          { id: 'pkg:oci/web?repository_url=registry.example.com%2Fshop', purl: 'pkg:oci/web?repository_url=registry.example.com%2Fshop', subcomponents: [] },
        ]);
        // OpenVEX's own library reads it, every statement valid by its rules ...
        const checked = await vexcheck(['validate', out]);
        assert.equal(checked.code, 0, checked.stderr);
        const summary = JSON.parse(checked.stdout) as { id: string; version: number; statements: Array<{ vulnerability: string; status: string }> };
        assert.equal(summary.id, 'urn:writ:e2e.test:vex-export');
        assert.equal(summary.version, doc['version']);
        assert.deepEqual(
          summary.statements.map((s) => [s.vulnerability, s.status]),
          [
            ['CVE-2025-26519', 'not_affected'],
            ['CVE-2024-9143', 'not_affected'],
          ],
        );
        // ... and matches products as Writ does: the repository exception covers an image of it by
        // digest; the stored statement only the package its subcomponent names.
        const image = `pkg:oci/web@sha256%3A${'9e'.repeat(32)}?repository_url=registry.example.com%2Fshop`;
        const match = async (...a: string[]) => (await vexcheck(['match', out, ...a])).stdout.trim();
        assert.equal(await match('CVE-2024-9143', image), 'not_affected');
        assert.equal(await match('CVE-2024-9143', `pkg:oci/web@sha256%3A${'9e'.repeat(32)}?repository_url=registry.example.com%2Fother`), 'none');
        const stored = `pkg:oci/web@sha256%3A${'9e'.repeat(32)}?repository_url=registry.example.com%2Fshop%2Fweb`;
        assert.equal(await match('CVE-2025-26519', stored, 'pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=3.20.3'), 'not_affected');
        assert.equal(await match('CVE-2025-26519', stored, 'pkg:apk/alpine/busybox@1.36.1-r29'), 'none');
        // What was exported is what Writ takes in again.
        const again = await writ(srv, ['vuln', 'ingest', '-f', out]);
        assert.equal(again.code, 0, again.stderr);
        assert.match(again.stdout, /^document\s+urn:writ:e2e\.test:vex-export$/m);
        await writ(srv, ['vuln', 'vex', 'delete', 'urn:writ:e2e.test:vex-export']);
      });

      it('a digest exception is exported as pkg:oci/NAME@DIGEST of each repository the inventory knows the image under', async () => {
        assert.equal((await writ(srv, ['vuln', 'ingest', '-f', join(TESTDATA, 'trivy-image.json')])).code, 0);
        const digest = `sha256:${'9e'.repeat(32)}`;
        const yaml = exceptionYaml('web-digest', day(3), `{ digest: ["${digest}"] }`).replace('cve-2024-9143', 'CVE-2024-7777');
        assert.equal((await writ(srv, ['policy', 'apply', '-f', file('digest.yaml', yaml)])).code, 0);
        const out = join(dir, 'digest.openvex.json');
        assert.equal((await writ(srv, ['vuln', 'vex', 'export', '--vulnerability', 'CVE-2024-7777', '-f', out])).code, 0);
        const doc = JSON.parse(readFileSync(out, 'utf8')) as { statements: Array<{ products: Array<{ '@id': string }> }> };
        const purl = `pkg:oci/web@sha256%3A${'9e'.repeat(32)}?repository_url=registry.example.com%2Fshop`;
        assert.deepEqual(
          doc.statements.map((x) => x.products.map((p) => p['@id'])),
          [[purl]],
        );
        // A scanner that names the image by its purl (as Trivy does) finds it not affected.
        assert.equal((await vexcheck(['match', out, 'CVE-2024-7777', purl])).stdout.trim(), 'not_affected');
        assert.equal((await writ(srv, ['policy', 'delete', 'VulnException/web-digest'])).code, 0);
      });

      it('--vulnerability narrows it; a deleted exception and a deleted document leave it', async () => {
        const only = JSON.parse((await writ(srv, ['vuln', 'vex', 'export', '--vulnerability', 'CVE-2024-9143'])).stdout) as {
          '@id': string;
          statements: Array<{ vulnerability: { name: string } }>;
        };
        assert.equal(only['@id'], 'urn:writ:e2e.test:vex-export:CVE-2024-9143');
        assert.deepEqual(
          only.statements.map((s) => s.vulnerability.name),
          ['CVE-2024-9143'],
        );
        assert.equal((await writ(srv, ['policy', 'delete', 'VulnException/shop-web-9143'])).code, 0);
        const del = await writ(srv, ['vuln', 'vex', 'delete', VEX_ID]);
        assert.equal(del.code, 0, del.stderr);
        const none = JSON.parse((await writ(srv, ['vuln', 'vex', 'export'])).stdout) as { statements: unknown[] };
        assert.deepEqual(none.statements, []);
        const gone = await writ(srv, ['vuln', 'vex', 'delete', VEX_ID]);
        assert.equal(gone.code, 1);
        assert.match(gone.stderr, /\[ERR_NOT_FOUND\]/);
      });
    });
  });
