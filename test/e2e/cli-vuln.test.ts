/**
 * `writ vuln ingest` and `writ image show` as a user runs them: a real server process, the
 * Trivy/Grype/CycloneDX test documents of packages/vuln, a second ingest that stores nothing, a
 * malformed report refused with its JSON path, an OpenVEX document stored as statements, and the
 * image's packages, findings and layers.
 */
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, cleanup, type ServerProcess, startServerProcess, writ } from './helpers.ts';

const TESTDATA = join(ROOT, 'packages/vuln/src/testdata');
const DIGEST = `sha256:${'9e'.repeat(32)}`;
const dir = mkdtempSync(join(tmpdir(), 'writ-cli-vuln-'));
let srv: ServerProcess;

before(async () => {
  srv = await startServerProcess();
});
after(async () => {
  await srv?.stop();
  cleanup(dir);
});

/** A POST whose head declares `declared` bytes but sends `body` (the server must answer from the head alone). */
function postHead(path: string, declared: number, body: string): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, srv.url),
      {
        method: 'POST',
        ca: readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8'),
        checkServerIdentity: () => undefined,
        headers: { authorization: `Bearer ${srv.adminToken}`, 'content-type': 'application/json', 'content-length': declared },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function get(path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, srv.url),
      {
        ca: readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8'),
        headers: { authorization: `Bearer ${srv.adminToken}` },
        checkServerIdentity: () => undefined,
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(`${res.statusCode}: ${text}`))));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const field = (out: string, name: string): string => new RegExp(`^${name}\\s+(.*)$`, 'm').exec(out)?.[1] ?? '';

describe('writ vuln ingest', () => {
  it('stores a Trivy report: image digest, scanner, packages, findings by severity, created', async () => {
    const r = await writ(srv, ['vuln', 'ingest', '-f', join(TESTDATA, 'trivy-image.json')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(field(r.stdout, 'image'), DIGEST);
    assert.match(field(r.stdout, 'scanner'), /^trivy \(trivy\), scanned 2026-11-30T09:15:42\.123Z$/);
    assert.equal(field(r.stdout, 'packages'), '5');
    assert.equal(field(r.stdout, 'findings'), '4 (critical 1, high 1, medium 2)');
    assert.match(field(r.stdout, 'report'), /^[0-9a-f-]{36} created$/);
  });

  it('the same report again (from stdin) is already stored, with the same id, and changes nothing', async () => {
    const before = await writ(srv, ['image', 'show', DIGEST, '-o', 'json']);
    const again = await writ(srv, ['vuln', 'ingest', '-f', '-'], { input: readFileSync(join(TESTDATA, 'trivy-image.json'), 'utf8') });
    assert.equal(again.code, 0, again.stderr);
    assert.match(field(again.stdout, 'report'), / already stored$/);
    const first = JSON.parse(before.stdout) as { reports: Array<{ id: string }> };
    assert.equal(field(again.stdout, 'report').split(' ')[0], first.reports[0]!.id);
    assert.deepEqual(JSON.parse((await writ(srv, ['image', 'show', DIGEST, '-o', 'json'])).stdout), first);
  });

  it('Grype and CycloneDX reports of the same image are filed beside it, one latest report per scanner', async () => {
    const g = await writ(srv, ['vuln', 'ingest', '-f', join(TESTDATA, 'grype-image.json'), '-o', 'json']);
    assert.equal(g.code, 0, g.stderr);
    const gj = JSON.parse(g.stdout) as { created: boolean; image: string; scanner: string; findings: number };
    assert.deepEqual([gj.created, gj.image, gj.scanner, gj.findings], [true, DIGEST, 'grype', 3]);
    const c = await writ(srv, ['vuln', 'ingest', '-f', join(TESTDATA, 'cyclonedx-1.6.json')]);
    assert.equal(c.code, 0, c.stderr);
    assert.equal(field(c.stdout, 'image'), DIGEST);
    assert.match(field(c.stdout, 'scanner'), /^syft \(cyclonedx\)/);
    const show = await writ(srv, ['image', 'show', DIGEST, '-o', 'json']);
    const d = JSON.parse(show.stdout) as { reports: Array<{ scanner: string }>; names: string[] };
    assert.deepEqual(
      d.reports.map((r) => r.scanner),
      ['grype', 'syft', 'trivy'],
    );
    assert.ok(d.names.includes('registry.example.com/shop/web'), show.stdout);
  });

  it('a malformed report is refused with its code and JSON path, exit 1, and nothing is stored', async () => {
    const doc = JSON.parse(readFileSync(join(TESTDATA, 'trivy-image.json'), 'utf8')) as {
      Results: Array<{ Vulnerabilities?: Array<Record<string, unknown>> }>;
    };
    const withVulns = doc.Results.findIndex((x) => (x.Vulnerabilities ?? []).length > 0);
    doc.Results[withVulns]!.Vulnerabilities![0]!['PkgName'] = 42;
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ ...doc, CreatedAt: '2026-12-01T00:00:00Z' }));
    const r = await writ(srv, ['vuln', 'ingest', '-f', bad]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, new RegExp(`at Results\\[${withVulns}\\]\\.Vulnerabilities\\[0\\]\\.PkgName\\) \\[ERR_VULN_REPORT_INVALID\\]`));
    const show = JSON.parse((await writ(srv, ['image', 'show', DIGEST, '-o', 'json'])).stdout) as { reports: Array<{ scannedAt: string }> };
    assert.ok(!show.reports.some((x) => x.scannedAt.startsWith('2026-12-01')), 'the refused report left nothing');

    writeFileSync(join(dir, 'notjson.json'), '{"SchemaVersion": 2,');
    const nj = await writ(srv, ['vuln', 'ingest', '-f', join(dir, 'notjson.json')]);
    assert.equal(nj.code, 1);
    assert.match(nj.stderr, /is not JSON/);
    writeFileSync(join(dir, 'other.json'), '{"hello": "world"}');
    const other = await writ(srv, ['vuln', 'ingest', '-f', join(dir, 'other.json')]);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /\[ERR_VULN_FORMAT_UNKNOWN\]/);
    const missing = await writ(srv, ['vuln', 'ingest', '-f', join(dir, 'nope.json')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read .*nope\.json: ENOENT/);
  });
});

describe('POST /v1/reports', () => {
  it('a body over 64 MiB is refused from its declared length (413), and the server keeps serving', async () => {
    const big = await postHead('/v1/reports', 65 * 1024 * 1024, '');
    assert.equal(big.status, 413);
    assert.equal(big.json['code'], 'ERR_BODY_TOO_LARGE');
    const doc = readFileSync(join(TESTDATA, 'grype-image.json'), 'utf8');
    const again = await postHead('/v1/reports', Buffer.byteLength(doc), doc);
    assert.equal(again.status, 200, 'already stored: 200, not 201');
    assert.equal(again.json['created'], false);
  });

  it('an OpenVEX document is stored as statements under its @id, not as a report of an image', async () => {
    const vex = readFileSync(join(TESTDATA, 'openvex-0.2.0.json'), 'utf8');
    const r = await postHead('/v1/reports', Buffer.byteLength(vex), vex);
    assert.equal(r.status, 201);
    assert.equal(r.json['format'], 'openvex');
    assert.equal(r.json['document'], 'https://example.com/vex/2026-0001');
    assert.equal(
      ((await get(`/v1/images/${DIGEST}`)) as { reports: unknown[] }).reports.filter((x) => (x as { format: string }).format === 'openvex').length,
      0,
    );
  });
});

describe('writ image show', () => {
  it('shows the layers, and per scanner the packages count and findings by severity', async () => {
    const r = await writ(srv, ['image', 'show', DIGEST]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(field(r.stdout, 'digest'), DIGEST);
    assert.equal(field(r.stdout, 'layers'), '2');
    const layerLines = r.stdout.split('\n').filter((l) => /^\s+\d+\s+sha256:[0-9a-f]{64}/.test(l));
    assert.equal(layerLines.length, 2, r.stdout);
    assert.match(
      r.stdout,
      /^report trivy 0\.58\.1 \(trivy\), scanned 2026-11-30T09:15:42\.123Z\n {2}packages {2}5\n {2}findings {2}4 \(critical 1, high 1, medium 2\)$/m,
    );
    assert.match(r.stdout, /^report grype 0\.84\.0 \(grype\).*\n {2}packages {2}2\n {2}findings {2}3 \(medium 3\)$/m);
  });

  it('an unknown digest is not found (exit 1); a malformed one is refused', async () => {
    const unknown = await writ(srv, ['image', 'show', `sha256:${'0'.repeat(64)}`]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no image sha256:0{64} in the inventory.*\[ERR_NOT_FOUND\]/);
    const bad = await writ(srv, ['image', 'show', 'alpine:3']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /\[ERR_FIELD_INVALID\]/);
  });

  it('GET /v1/images lists the image once, and a viewer token may read but not ingest', async () => {
    const list = (await get('/v1/images?pageSize=10')) as { images: Array<{ digest: string; layers: string[] }> };
    assert.deepEqual(
      list.images.map((i) => i.digest),
      [DIGEST],
      'three scanners, one image',
    );
    assert.equal(list.images[0]!.layers.length, 2);
    const tok = await writ(srv, ['admin-token', 'create', '--role', 'viewer', '--name', 'reader', '-o', 'json']);
    assert.equal(tok.code, 0, tok.stderr);
    const viewer = (JSON.parse(tok.stdout) as { token: string }).token;
    const shown = await writ(srv, ['image', 'show', DIGEST], { token: viewer });
    assert.equal(shown.code, 0, shown.stderr);
    const refused = await writ(srv, ['vuln', 'ingest', '-f', join(TESTDATA, 'grype-image.json')], { token: viewer });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /\[ERR_PERMISSION_DENIED\]|\[ERR_FORBIDDEN\]/);
  });
});
