/**
 * The audit log end to end (issue 15, section 1): a real server on SQLite and on PostgreSQL, real
 * changes through the CLI, then rows edited, deleted, inserted and reordered directly in the
 * database behind the server's back: `writ audit verify` exits 3 naming the first bad index each
 * time. A history rewritten consistently (the server signing the forged head) passes on its own
 * and is caught by a checkpoint exported earlier.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer as createHttpsServer, request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { AUDIT_PAGE_MEDIA_TYPE, CompactRange, decodeAuditPage, encodeAuditLeaf, leafHash, noteVerifier, openNote, parseCheckpoint } from '@writ/transparency';
import { verifyLog } from '../../packages/cli/src/audit.ts';
import { ApiClient } from '../../packages/cli/src/client.ts';
import { cleanup, postgresDb, sqliteDb, startServerProcess, waitFor, writ, type Db, type ServerProcess } from './helpers.ts';

const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

/** SQL straight on the server's database, `?` placeholders on both. */
/** GET with the server's CA: status, content type and body, for the hostile-input checks. */
function get(
  srv: ServerProcess,
  path: string,
  token = srv.adminToken,
  headers: Record<string, string> = {},
): Promise<{ status: number; type: string; body: string; bytes: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, srv.url),
      { ca: readFileSync(join(srv.dataDir, 'bundle.pem')), headers: { authorization: `Bearer ${token}`, ...headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          const bytes = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body: bytes.toString('utf8'), bytes });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const leafCount = async (db: Db): Promise<number> => Number((await db.query('SELECT COUNT(*) AS n FROM audit_leaves'))[0]!['n']);

async function checkpointSize(srv: ServerProcess): Promise<number> {
  const r = await get(srv, '/v1/audit/checkpoint');
  return r.status === 200 ? Number(r.body.split('\n')[1]) : 0;
}

/** Waits until the checkpointer has signed every leaf there is. */
async function checkpointed(srv: ServerProcess, db: Db): Promise<number> {
  return waitFor('a checkpoint of every leaf', async () => {
    const n = await leafCount(db);
    return (await checkpointSize(srv)) === n && n > 0 ? n : undefined;
  });
}

async function verify(srv: ServerProcess, ...args: string[]): Promise<{ code: number | null; out: string }> {
  const r = await writ(srv, ['audit', 'verify', ...args]);
  return { code: r.code, out: r.stdout + r.stderr };
}

/**
 * verify in this process with pages of 1 to 3 entries (the CLI asks for 10,000, so a small log is
 * one page): every page boundary, where the pages' workers hand over to each other, is crossed.
 * The verdict: 'verified N' or the violation's message.
 */
async function pagedVerdicts(srv: ServerProcess, trustedFile?: string): Promise<string[]> {
  const api = new ApiClient({ server: srv.url, token: srv.adminToken, caFile: join(srv.dataDir, 'bundle.pem') });
  const out: string[] = [];
  for (const pageSize of [1, 2, 3])
    out.push(
      await verifyLog(api, { pageSize, ...(trustedFile ? { trustedFile } : {}) }).then(
        (r) => `verified ${r.size}`,
        (e: Error) => e.message,
      ),
    );
  return out;
}

async function expectBad(srv: ServerProcess, index: number, what: string, ...args: string[]): Promise<void> {
  const r = await verify(srv, ...args);
  assert.equal(r.code, 3, `${what}: ${r.out}`);
  assert.match(r.out, new RegExp(`first bad index ${index}\\b`), `${what}: ${r.out}`);
  for (const v of await pagedVerdicts(srv)) assert.match(v, new RegExp(`first bad index ${index}\\b`), `${what}, small pages: ${v}`);
}

/** Rebuilds leaf hashes from `from` on, every node and the head from the bodies as they are now: a history rewritten with care. */
async function rewriteConsistently(db: Db, from: number): Promise<void> {
  const rows = await db.query('SELECT leaf_index, body FROM audit_leaves ORDER BY leaf_index');
  const range = new CompactRange();
  const nodes: [number, string][] = [];
  let prev: Uint8Array | null = null;
  for (const r of rows) {
    const i = Number(r['leaf_index']);
    const h = leafHash(encodeAuditLeaf(i, prev, Buffer.from(r['body'] as string, 'utf8')));
    if (i >= from) await db.query('UPDATE audit_leaves SET leaf_hash = ? WHERE leaf_index = ?', [Buffer.from(h).toString('hex'), i]);
    range.append(h, (level, index, hash) => void nodes.push([index * 2 ** (level + 1) + 2 ** level - 1, Buffer.from(hash).toString('hex')]));
    prev = h;
  }
  await db.query('DELETE FROM audit_nodes');
  // Keyed by in-order position, as the store keys them (audit-sql.ts).
  for (const [id, hash] of nodes) await db.query('INSERT INTO audit_nodes (node_id, hash) VALUES (?, ?)', [id, hash]);
  await db.query('UPDATE audit_head SET size = ?, hashes = ?, last_leaf = ? WHERE id = 1', [
    range.size,
    range.hashes.map((h) => Buffer.from(h).toString('hex')).join(''),
    Buffer.from(prev!).toString('hex'),
  ]);
  await db.query('DELETE FROM audit_checkpoints');
}

/**
 * A server as one older than the compact page format answers: an HTTPS front (its own
 * certificate, made by openssl, naming the server's SPIFFE ID) that forwards every request to
 * `srv` but drops `Accept` from the entries requests, so they are answered in JSON; with
 * `html`, entries are answered as a web page instead (not a Writ server at all).
 */
async function olderServer(srv: ServerProcess, answer: 'json' | 'html'): Promise<{ env: NodeJS.ProcessEnv; close(): void }> {
  const dir = join(srv.dataDir, `older-${answer}`);
  mkdirSync(dir, { recursive: true });
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '1'],
      ...['-subj', '/CN=older', '-addext', 'subjectAltName=URI:spiffe://e2e.test/writ/server,IP:127.0.0.1,DNS:localhost'],
    ],
    { cwd: dir, stdio: 'pipe' },
  );
  const ca = readFileSync(join(srv.dataDir, 'bundle.pem'));
  const front = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (req, res) => {
    const entries = (req.url ?? '').startsWith('/v1/audit/entries');
    if (entries && answer === 'html') return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html>a proxy login page</html>');
    const headers = { ...req.headers };
    delete headers.host;
    if (entries) delete headers.accept;
    const up = request(new URL(req.url ?? '/', srv.url), { method: req.method ?? 'GET', headers, ca }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', () => r()));
  const port = (front.address() as AddressInfo).port;
  return {
    env: { WRIT_SERVER: `https://127.0.0.1:${port}`, WRIT_CA_FILE: join(dir, 'cert.pem'), WRIT_SERVER_SPIFFE_ID: 'spiffe://e2e.test/writ/server' },
    close: () => void (front.closeAllConnections(), front.close()),
  };
}

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`audit log on ${backend}`, () => {
    const dbName = `writ_audit_${process.pid}`;
    let srv: ServerProcess;
    let db: Db;

    before(async () => {
      let dbUrl: string | undefined;
      if (backend === 'postgres') {
        const c = new pg.Client({ connectionString: PG_URL });
        await c.connect();
        await c.query(`CREATE DATABASE ${dbName}`);
        await c.end();
        const u = new URL(PG_URL);
        u.pathname = `/${dbName}`;
        dbUrl = u.toString();
      }
      srv = await startServerProcess(dbUrl ? { args: ['--db', dbUrl] } : {});
      db = dbUrl ? await postgresDb(dbUrl) : sqliteDb(join(srv.dataDir, 'writ.db'));
      // Real changes through the CLI: entries, a token, a quarantine and its removal.
      for (const name of ['web', 'api', 'db', 'cache']) {
        const r = await writ(srv, [
          'entry',
          'create',
          '--spiffe-id',
          `spiffe://e2e.test/${name}`,
          '--parent-id',
          'spiffe://e2e.test/writ/agent/n1',
          '--selector',
          `unix:uid:${name.length}`,
        ]);
        assert.equal(r.code, 0, r.stderr);
      }
      assert.equal((await writ(srv, ['admin-token', 'create', '--role', 'viewer', '--name', 'auditor'])).code, 0);
      assert.equal((await writ(srv, ['quarantine', 'add', 'spiffe://e2e.test/api', '--reason', 'incident 42'])).code, 0);
      assert.equal((await writ(srv, ['quarantine', 'remove', 'spiffe://e2e.test/api'])).code, 0);
    });
    after(async () => {
      await db?.close();
      await srv?.stop();
      if (srv) cleanup(srv.dataDir);
      if (backend === 'postgres') {
        const c = new pg.Client({ connectionString: PG_URL });
        await c.connect();
        await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
        await c.end();
      }
    });

    it('logs every change by who made it, signs checkpoints with the log key, and verify passes on the untouched log', async () => {
      const n = await checkpointed(srv, db);
      assert.ok(n >= 9, `the authorities, the initial token, 4 entries, a token, quarantine add and remove: ${n}`);
      const tail = await writ(srv, ['audit', 'tail', '-n', '50']);
      assert.equal(tail.code, 0, tail.stderr);
      assert.match(tail.stdout, /^0 .* system {2}authorities\.save {2}x509,jwt$/m, 'the CA and JWT keys made at the first start');
      assert.match(tail.stdout, /^1 .* system {2}token\.create {2}initial$/m, 'the initial admin token, made by the server itself');
      assert.match(tail.stdout, /token:initial {2}entry\.create {2}spiffe:\/\/e2e\.test\/web$/m);
      assert.match(tail.stdout, /token:initial {2}quarantine\.add {2}spiffe:\/\/e2e\.test\/api$/m);
      assert.match(tail.stdout, /token:initial {2}quarantine\.remove {2}spiffe:\/\/e2e\.test\/api$/m);
      // The vkey the server published in DATA_DIR opens the checkpoint, under the log's origin.
      const vkey = readFileSync(join(srv.dataDir, 'audit-log.vkey'), 'utf8').trim();
      const note = (await get(srv, '/v1/audit/checkpoint')).body;
      const cp = parseCheckpoint(openNote(note, [noteVerifier(vkey)]).text);
      assert.equal(cp.origin, 'e2e.test/writ-audit');
      assert.equal(cp.size, n);
      const ok = await verify(srv, '--key', join(srv.dataDir, 'audit-log.vkey'));
      assert.equal(ok.code, 0, ok.out);
      assert.match(ok.out, new RegExp(`^verified ${n} entries of e2e\\.test/writ-audit: root \\S+ matches the signed checkpoint$`, 'm'));
      const prove = await writ(srv, ['audit', 'prove', '4']);
      assert.equal(prove.code, 0, prove.stderr);
      assert.match(prove.stdout, /^entry 4 \(entry\.create spiffe:\/\/e2e\.test\/db by token:initial at .*\) is in the tree of \d+ entries/m);
    });

    it('a viewer token reads the log; hostile ranges, negative and fractional numbers and sizes past the checkpoint are 400 ERR_AUDIT_RANGE', async () => {
      const viewer = JSON.parse((await writ(srv, ['admin-token', 'create', '--role', 'viewer', '--name', 'v', '-o', 'json'])).stdout) as { token: string };
      const size = await checkpointed(srv, db);
      assert.equal((await get(srv, '/v1/audit/entries?start=0&end=2', viewer.token)).status, 200);
      assert.equal((await get(srv, '/v1/audit/key', viewer.token)).status, 200);
      // The compact page (what writ audit verify asks for) holds the same entries as the JSON one, which stays the default.
      const json = await get(srv, '/v1/audit/entries?start=1&end=4', viewer.token, { accept: 'application/json' });
      assert.equal(json.type, 'application/json');
      const compact = await get(srv, '/v1/audit/entries?start=1&end=4', viewer.token, { accept: `application/json;q=0.5, ${AUDIT_PAGE_MEDIA_TYPE}` });
      assert.equal(compact.status, 200);
      assert.equal(compact.type, AUDIT_PAGE_MEDIA_TYPE);
      const page = decodeAuditPage(compact.bytes, 3);
      assert.deepEqual(
        {
          size: page.size,
          start: page.start,
          end: page.end,
          entries: page.entries.map((e) => ({ index: e.index, body: Buffer.from(e.body).toString('utf8'), leafHash: Buffer.from(e.leafHash).toString('hex') })),
        },
        JSON.parse(json.body),
      );
      const refused = await get(srv, `/v1/audit/entries?start=0&end=${size + 1}`, viewer.token, { accept: AUDIT_PAGE_MEDIA_TYPE });
      assert.equal(refused.status, 400);
      assert.equal((JSON.parse(refused.body) as { code: string }).code, 'ERR_AUDIT_RANGE');
      for (const path of [
        `/v1/audit/entries?start=0&end=${size + 1}`,
        `/v1/audit/entries?start=${size + 5}`,
        '/v1/audit/entries?start=-1',
        '/v1/audit/entries?start=1.5',
        '/v1/audit/entries?start=3&end=2',
        '/v1/audit/entries?end=99999999999999999999',
        `/v1/audit/proof/inclusion?index=${size}&size=${size}`,
        `/v1/audit/proof/inclusion?index=0&size=${size + 1}`,
        '/v1/audit/proof/inclusion?index=-2',
        '/v1/audit/proof/inclusion?index=1e3',
        '/v1/audit/proof/consistency?from=0',
        `/v1/audit/proof/consistency?from=2&to=${size + 1}`,
        `/v1/audit/proof/consistency?from=${size + 1}`,
      ]) {
        const r = await get(srv, path, viewer.token);
        assert.equal(r.status, 400, `${path}: ${r.body}`);
        assert.equal((JSON.parse(r.body) as { code: string }).code, 'ERR_AUDIT_RANGE', path);
      }
      const missing = await get(srv, '/v1/audit/proof/inclusion', viewer.token);
      assert.equal(missing.status, 400);
      assert.equal((JSON.parse(missing.body) as { code: string }).code, 'ERR_FIELD_MISSING');
    });

    it('a change just made is in the next read of the log: tail, prove and verify fold and sign it first', async () => {
      const before = await checkpointed(srv, db);
      assert.equal((await writ(srv, ['quarantine', 'add', 'spiffe://e2e.test/cache', '--reason', 'just now'])).code, 0);
      const tail = await writ(srv, ['audit', 'tail', '-n', '1']);
      assert.equal(tail.code, 0, tail.stderr);
      assert.match(tail.stdout, new RegExp(`^${before} .* token:initial {2}quarantine\\.add {2}spiffe://e2e\\.test/cache$`, 'm'));
      const prove = await writ(srv, ['audit', 'prove', String(before)]);
      assert.equal(prove.code, 0, prove.stderr);
      assert.match(prove.stdout, new RegExp(`^entry ${before} \\(quarantine\\.add spiffe://e2e\\.test/cache by token:initial`, 'm'));
      assert.equal((await writ(srv, ['quarantine', 'remove', 'spiffe://e2e.test/cache'])).code, 0);
      const ok = await verify(srv);
      assert.match(ok.out, new RegExp(`^verified ${before + 2} entries`, 'm'));
    });

    it('verify against a server that answers entries only in JSON checks those (an edit still found at its index); entries as neither format: exit 1, no index', async () => {
      const size = await checkpointed(srv, db);
      const older = await olderServer(srv, 'json');
      try {
        const ok = await writ(srv, ['audit', 'verify', '--key', join(srv.dataDir, 'audit-log.vkey')], { env: older.env });
        assert.equal(ok.code, 0, ok.stdout + ok.stderr);
        assert.match(ok.stdout, new RegExp(`^verified ${size} entries of e2e\\.test/writ-audit`, 'm'));
        const two = (await db.query('SELECT body FROM audit_leaves WHERE leaf_index = 2'))[0]!['body'] as string;
        await db.query('UPDATE audit_leaves SET body = ? WHERE leaf_index = 2', [two.replace('e2e.test/web', 'e2e.test/wEb')]);
        try {
          const bad = await writ(srv, ['audit', 'verify'], { env: older.env });
          assert.equal(bad.code, 3, bad.stdout + bad.stderr);
          assert.match(bad.stderr, /first bad index 2\b/);
        } finally {
          await db.query('UPDATE audit_leaves SET body = ? WHERE leaf_index = 2', [two]);
        }
      } finally {
        older.close();
      }
      const html = await olderServer(srv, 'html');
      try {
        const r = await writ(srv, ['audit', 'verify'], { env: html.env });
        assert.equal(r.code, 1, r.stdout + r.stderr);
        assert.match(r.stderr, /answered GET \/v1\/audit\/entries as "text\/html", neither application\/x-writ-audit-entries nor application\/json/);
        assert.doesNotMatch(r.stderr, /bad index/);
      } finally {
        html.close();
      }
    });

    it('catches an edited, deleted, reordered and inserted row at its index, and a rewritten history with a checkpoint saved earlier', async () => {
      const size = await checkpointed(srv, db);
      const trusted = join(srv.dataDir, 'witness.checkpoint');
      const ex = await writ(srv, ['audit', 'export-checkpoint', '--out', trusted]);
      assert.equal(ex.code, 0, ex.stderr);
      assert.equal(readFileSync(trusted, 'utf8'), (await get(srv, '/v1/audit/checkpoint')).body);
      const row = async (i: number) => (await db.query('SELECT * FROM audit_leaves WHERE leaf_index = ?', [i]))[0]!;

      // An edit: entry 2's subject changed in place.
      const two = await row(2);
      await db.query('UPDATE audit_leaves SET body = ? WHERE leaf_index = 2', [(two['body'] as string).replace('e2e.test/web', 'e2e.test/wEb')]);
      await expectBad(srv, 2, 'edit');
      await db.query('UPDATE audit_leaves SET body = ? WHERE leaf_index = 2', [two['body'] as string]);
      assert.equal((await verify(srv)).code, 0, 'restored');
      assert.deepEqual(await pagedVerdicts(srv), Array(3).fill(`verified ${size}`), 'restored, small pages');

      // The edit with its leaf hash recomputed: caught where the chain breaks, named at the edited entry.
      const forged = (two['body'] as string).replace('e2e.test/web', 'e2e.test/wEb');
      const prev = (await row(1))['leaf_hash'] as string;
      const forgedHash = Buffer.from(leafHash(encodeAuditLeaf(2, Buffer.from(prev, 'hex'), Buffer.from(forged)))).toString('hex');
      await db.query('UPDATE audit_leaves SET body = ?, leaf_hash = ? WHERE leaf_index = 2', [forged, forgedHash]);
      await expectBad(srv, 2, 'edit with its hash');
      await db.query('UPDATE audit_leaves SET body = ?, leaf_hash = ? WHERE leaf_index = 2', [two['body'] as string, two['leaf_hash'] as string]);

      // A deletion.
      const four = await row(4);
      await db.query('DELETE FROM audit_leaves WHERE leaf_index = 4');
      await expectBad(srv, 4, 'deletion');
      await db.query('INSERT INTO audit_leaves (leaf_index, at, actor, kind, subject, body, leaf_hash) VALUES (?, ?, ?, ?, ?, ?, ?)', [
        4,
        Number(four['at']),
        four['actor'] as string,
        four['kind'] as string,
        four['subject'] as string,
        four['body'] as string,
        four['leaf_hash'] as string,
      ]);

      // A reordering: entries 3 and 5 swapped, rows and all.
      const three = await row(3);
      const five = await row(5);
      await db.query('UPDATE audit_leaves SET body = ?, leaf_hash = ? WHERE leaf_index = 3', [five['body'] as string, five['leaf_hash'] as string]);
      await db.query('UPDATE audit_leaves SET body = ?, leaf_hash = ? WHERE leaf_index = 5', [three['body'] as string, three['leaf_hash'] as string]);
      await expectBad(srv, 3, 'reordering');
      await db.query('UPDATE audit_leaves SET body = ?, leaf_hash = ? WHERE leaf_index = 3', [three['body'] as string, three['leaf_hash'] as string]);
      await db.query('UPDATE audit_leaves SET body = ?, leaf_hash = ? WHERE leaf_index = 5', [five['body'] as string, five['leaf_hash'] as string]);

      // An insertion: a forged entry at 1, the later ones moved up by one.
      await db.query('UPDATE audit_leaves SET leaf_index = -leaf_index - 1 WHERE leaf_index >= 1');
      await db.query('UPDATE audit_leaves SET leaf_index = -leaf_index WHERE leaf_index < 0');
      await db.query('INSERT INTO audit_leaves (leaf_index, at, actor, kind, subject, body, leaf_hash) VALUES (1, 0, ?, ?, ?, ?, ?)', [
        'system',
        'token.create',
        'backdoor',
        JSON.stringify({ at: 0, actor: 'system', kind: 'token.create', subject: 'backdoor', detail: {} }),
        '00'.repeat(32),
      ]);
      await expectBad(srv, 1, 'insertion');
      await db.query('DELETE FROM audit_leaves WHERE leaf_index = 1');
      await db.query('UPDATE audit_leaves SET leaf_index = -leaf_index + 1 WHERE leaf_index > 1');
      await db.query('UPDATE audit_leaves SET leaf_index = -leaf_index WHERE leaf_index < 0');
      const back = await verify(srv, '--trusted-checkpoint', trusted);
      assert.equal(back.code, 0, `every row restored: ${back.out}`);

      // A history rewritten consistently: entry 2 changed, every hash after it, the nodes and the head
      // recomputed, the old checkpoints dropped; the server then signs the forged head.
      await db.query('UPDATE audit_leaves SET body = ? WHERE leaf_index = 2', [forged]);
      await rewriteConsistently(db, 2);
      await waitFor('a checkpoint of the forged head', async () => ((await checkpointSize(srv)) === size ? true : undefined));
      const alone = await verify(srv);
      assert.equal(alone.code, 0, `self-consistent on its own: ${alone.out}`);
      const caught = await verify(srv, '--trusted-checkpoint', trusted);
      assert.equal(caught.code, 3, caught.out);
      assert.match(caught.out, new RegExp(`the first ${size} entries are not those of the trusted checkpoint`));
      for (const v of await pagedVerdicts(srv, trusted)) assert.match(v, new RegExp(`the first ${size} entries are not those of the trusted checkpoint`));
    });
  });
}
