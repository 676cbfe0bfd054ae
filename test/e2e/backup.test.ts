/**
 * `writ server backup` / `restore` (issue 16 §3): a backup taken while the server takes writes
 * holds every write acknowledged before it started; the restored server has the same CA and JWT
 * keys, so SVIDs minted before still validate against its bundle; a damaged archive is refused.
 */
import assert from 'node:assert/strict';
import { createPublicKey, verify, type JsonWebKey } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { cleanup, run, startServerProcess, writ, type ServerProcess } from './helpers.ts';

/** One API call as an independent HTTPS client trusting only the server's bundle.pem. */
function api(
  srv: ServerProcess,
  method: string,
  path: string,
  body?: unknown,
  ca = readFileSync(join(srv.dataDir, 'bundle.pem')),
): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const u = new URL(path, srv.url);
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      u,
      {
        method,
        ca,
        headers: {
          authorization: `Bearer ${srv.adminToken}`,
          ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : null }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** Checks an ES256/RS256 JWT's signature against a JWKS with node:crypto alone (no Writ code). */
function jwtVerifies(token: string, jwks: { keys: Array<JsonWebKey & { kid?: string }> }): boolean {
  const [h, p, s] = token.split('.') as [string, string, string];
  const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as { alg: string; kid: string };
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  if (!jwk) return false;
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  const hash = header.alg.endsWith('384') ? 'sha384' : 'sha256';
  const ec = header.alg.startsWith('ES');
  return verify(hash, Buffer.from(`${h}.${p}`), ec ? { key, dsaEncoding: 'ieee-p1363' } : key, Buffer.from(s, 'base64url'));
}

describe('writ server backup and restore', () => {
  const dirs: string[] = [];
  const servers: ServerProcess[] = [];
  after(async () => {
    for (const s of servers) await s.stop();
    for (const d of dirs) cleanup(d);
  });

  it('a backup under write load restores every acknowledged write, and SVIDs minted before still validate', async () => {
    const work = mkdtempSync(join(tmpdir(), 'writ-backup-'));
    dirs.push(work);
    const kekFile = join(work, 'kek');
    writeFileSync(kekFile, 'a long key-encryption passphrase\n', { mode: 0o600 });
    const srv = await startServerProcess({ args: ['--kek-file', kekFile] });
    servers.push(srv);
    dirs.push(srv.dataDir);
    // The keys at rest are wrapped with the KEK already; the archive encrypts them again.
    const keyFiles = readdirSync(join(srv.dataDir, 'keys'));
    assert.ok(keyFiles.length >= 2, 'an X.509 CA key and a JWT key');
    assert.match(readFileSync(join(srv.dataDir, 'keys', keyFiles[0]!), 'utf8'), /ENCRYPTED PRIVATE KEY/);

    const x509Dir = join(work, 'x509');
    assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/before/x509', '--out', x509Dir])).code, 0);
    const jwt = (await writ(srv, ['svid', 'mint-jwt', '--spiffe-id', 'spiffe://e2e.test/before/jwt', '--audience', 'backup-test'])).stdout.trim();
    assert.match(jwt, /^[\w-]+\.[\w-]+\.[\w-]+$/);

    // Write load: entries created one after another through the API until told to stop.
    const acked: string[] = [];
    let writing = true;
    let failed = 0;
    const load = (async () => {
      for (let i = 0; writing; i++) {
        const res = await api(srv, 'POST', '/v1/entries', {
          spiffeId: `spiffe://e2e.test/load/${i}`,
          parentId: 'spiffe://e2e.test/agent/n1',
          selectors: [`unix:uid:${1000 + i}`],
        });
        if (res.status === 201 || res.status === 200) acked.push((res.json as { id: string }).id);
        else failed++;
      }
    })();
    while (acked.length < 30) await new Promise((r) => setTimeout(r, 20));
    const ackedBefore = [...acked];
    const archive = join(work, 'writ.backup');
    const backup = await writ(undefined, ['server', 'backup', '--data-dir', srv.dataDir, '--out', archive, '--kek-file', kekFile]);
    assert.equal(backup.code, 0, backup.stderr);
    assert.match(backup.stdout, /keys encrypted/);
    const duringBackup = acked.length - ackedBefore.length;
    while (acked.length < ackedBefore.length + duringBackup + 20) await new Promise((r) => setTimeout(r, 20));
    writing = false;
    await load;
    assert.equal(failed, 0, 'no write failed while the backup ran');
    assert.ok(duringBackup > 0, 'the server took writes while the backup ran');

    // No secret in the clear inside the archive.
    const raw = readFileSync(archive);
    assert.ok(!raw.includes(Buffer.from(srv.adminToken)), 'the admin token is not in the clear');
    assert.ok(!raw.includes(Buffer.from('PRIVATE KEY')), 'no PEM key in the clear');

    // Restore into a fresh data dir and run a new server there; the old one goes away.
    await srv.stop();
    const restored = join(work, 'restored');
    const r = await writ(undefined, ['server', 'restore', '--in', archive, '--data-dir', restored, '--kek-file', kekFile]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /restored \d+ files/);
    const srv2 = await startServerProcess({ dataDir: restored, args: ['--kek-file', kekFile] });
    servers.push(srv2);
    assert.equal(srv2.adminToken, srv.adminToken, 'the admin token came back');

    const ids = new Set<string>();
    let token = '';
    do {
      const page = (await api(srv2, 'GET', `/v1/entries?pageSize=1000${token ? `&pageToken=${encodeURIComponent(token)}` : ''}`)).json as {
        entries: Array<{ id: string }>;
        nextPageToken?: string;
      };
      for (const e of page.entries) ids.add(e.id);
      token = page.nextPageToken ?? '';
    } while (token);
    const missing = ackedBefore.filter((id) => !ids.has(id));
    assert.deepEqual(missing, [], 'every write acknowledged before the backup started is restored');

    // The same trust: the restored server's bundle verifies the X.509-SVID minted before the backup…
    const bundle2 = join(restored, 'bundle.pem');
    const ok = await run('openssl', ['verify', '-CAfile', bundle2, '-untrusted', join(x509Dir, 'svid.pem'), join(x509Dir, 'svid.pem')]);
    assert.equal(ok.code, 0, ok.stderr);
    // …and its JWKS the JWT-SVID.
    const jwks = (await api(srv2, 'GET', '/keys')).json as { keys: Array<JsonWebKey & { kid?: string }> };
    assert.ok(jwtVerifies(jwt, jwks), 'the JWT-SVID minted before the backup verifies against the restored JWKS');
    // And it still signs: a new SVID chains to the same bundle the old one did.
    const after2 = join(work, 'x509-after');
    assert.equal((await writ(srv2, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/after', '--out', after2])).code, 0);
    const ok2 = await run('openssl', ['verify', '-CAfile', join(x509Dir, 'bundle.pem'), '-untrusted', join(after2, 'svid.pem'), join(after2, 'svid.pem')]);
    assert.equal(ok2.code, 0, `a new SVID chains to the bundle of before the backup: ${ok2.stderr}`);
  });

  it('PostgreSQL: the archive holds the keys, the printed pg_dump the database; both restored, the same trust', { timeout: 120_000 }, async () => {
    const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
    const admin = async (sql: string): Promise<void> => {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      try {
        await c.query(sql);
      } finally {
        await c.end();
      }
    };
    const names = [`writ_backup_${process.pid}`, `writ_backup_${process.pid}_restored`];
    const urlOf = (db: string): string => Object.assign(new URL(PG_URL), { pathname: `/${db}` }).toString();
    for (const n of names) await admin(`DROP DATABASE IF EXISTS ${n} WITH (FORCE)`);
    await admin(`CREATE DATABASE ${names[0]}`);
    const work = mkdtempSync(join(tmpdir(), 'writ-backup-pg-'));
    dirs.push(work);
    try {
      const kekFile = join(work, 'kek');
      writeFileSync(kekFile, 'pg backup kek\n');
      const srv = await startServerProcess({ args: ['--db', urlOf(names[0]!)] });
      servers.push(srv);
      dirs.push(srv.dataDir);
      const made = await writ(srv, [
        'entry',
        'create',
        '--spiffe-id',
        'spiffe://e2e.test/pg/web',
        '--parent-id',
        'spiffe://e2e.test/agent/n1',
        '--selector',
        'unix:uid:7',
        '-o',
        'json',
      ]);
      assert.equal(made.code, 0, made.stderr);
      const id = (JSON.parse(made.stdout) as { id: string }).id;
      const jwt = (await writ(srv, ['svid', 'mint-jwt', '--spiffe-id', 'spiffe://e2e.test/pg/web', '--audience', 'pg'])).stdout.trim();
      const archive = join(work, 'pg.backup');
      const b = await writ(undefined, ['server', 'backup', '--data-dir', srv.dataDir, '--db', urlOf(names[0]!), '--out', archive, '--kek-file', kekFile]);
      assert.equal(b.code, 0, b.stderr);
      assert.match(b.stdout, /the database is PostgreSQL: it is not in the archive/);
      // The command as printed (trust auth here: no password to redact).
      const dump = /^ {2}(pg_dump .*)$/m.exec(b.stdout)?.[1];
      assert.ok(dump, b.stdout);
      const d = await run('bash', ['-c', dump]);
      assert.equal(d.code, 0, d.stderr);
      await srv.stop();

      await admin(`CREATE DATABASE ${names[1]}`);
      const restoredUrl = urlOf(names[1]!);
      const r = await run('pg_restore', ['--no-owner', '--dbname', restoredUrl, `${archive}.pgdump`]);
      assert.equal(r.code, 0, r.stderr);
      const dir = join(work, 'restored');
      const rr = await writ(undefined, ['server', 'restore', '--in', archive, '--data-dir', dir, '--kek-file', kekFile]);
      assert.equal(rr.code, 0, rr.stderr);
      assert.match(rr.stdout, /pg_restore/);
      const srv2 = await startServerProcess({ dataDir: dir, args: ['--db', restoredUrl] });
      servers.push(srv2);
      assert.equal((await api(srv2, 'GET', `/v1/entries/${id}`)).status, 200, 'the entry is in the restored database');
      const jwks = (await api(srv2, 'GET', '/keys')).json as { keys: Array<JsonWebKey & { kid?: string }> };
      assert.ok(jwtVerifies(jwt, jwks), "the JWT-SVID verifies: the replica's key came back with its server.id");
      assert.equal(readFileSync(join(dir, 'bundle.pem'), 'utf8'), readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8'));
      await srv2.stop();
    } finally {
      for (const n of names) await admin(`DROP DATABASE IF EXISTS ${n} WITH (FORCE)`);
    }
  });

  it('refuses a corrupt or truncated archive, a wrong KEK and a non-empty data dir, and leaves the target untouched', async () => {
    const work = mkdtempSync(join(tmpdir(), 'writ-backup-bad-'));
    dirs.push(work);
    const kekFile = join(work, 'kek');
    writeFileSync(kekFile, 'kek-one\n');
    const srv = await startServerProcess();
    servers.push(srv);
    dirs.push(srv.dataDir);
    const archive = join(work, 'a.backup');
    // The server's keys are not wrapped here: a backup still needs a key to encrypt them with.
    const noKek = await writ(undefined, ['server', 'backup', '--data-dir', srv.dataDir, '--out', archive]);
    assert.equal(noKek.code, 1);
    assert.match(noKek.stderr, /\[ERR_BACKUP_KEK_REQUIRED\]/);
    assert.equal((await writ(undefined, ['server', 'backup', '--data-dir', srv.dataDir, '--out', archive, '--kek-file', kekFile])).code, 0);
    const good = readFileSync(archive);

    const flipped = Buffer.from(good);
    flipped[Math.floor(flipped.length / 2)]! ^= 0x40;
    const cases: Array<[string, Buffer]> = [
      ['flipped', flipped],
      ['truncated', good.subarray(0, good.length - 100)],
      ['empty', Buffer.alloc(0)],
    ];
    for (const [name, bytes] of cases) {
      const f = join(work, `${name}.backup`);
      writeFileSync(f, bytes);
      const target = join(work, `target-${name}`);
      const res = await writ(undefined, ['server', 'restore', '--in', f, '--data-dir', target, '--kek-file', kekFile]);
      assert.equal(res.code, 1, name);
      assert.match(res.stderr, /\[ERR_BACKUP_CORRUPT\]/, name);
      assert.equal(existsSync(target), false, `${name}: nothing restored`);
    }
    const wrong = join(work, 'kek-wrong');
    writeFileSync(wrong, 'kek-two\n');
    const target = join(work, 'target-wrong-kek');
    const wk = await writ(undefined, ['server', 'restore', '--in', archive, '--data-dir', target, '--kek-file', wrong]);
    assert.equal(wk.code, 1);
    assert.match(wk.stderr, /\[ERR_KEY_INVALID\]/);
    assert.equal(existsSync(target), false);
    assert.deepEqual(
      readdirSync(work).filter((f) => f.includes('.restore-')),
      [],
      'no half-restored temporary directory left behind',
    );

    // Over a data dir that is in use: refused without --force, its files untouched.
    const before = readFileSync(join(srv.dataDir, 'server.id'), 'utf8');
    const busy = await writ(undefined, ['server', 'restore', '--in', archive, '--data-dir', srv.dataDir, '--kek-file', kekFile]);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /\[ERR_RESTORE_TARGET_NOT_EMPTY\]/);
    assert.equal(readFileSync(join(srv.dataDir, 'server.id'), 'utf8'), before);
    await srv.stop();
    const forced = await writ(undefined, ['server', 'restore', '--in', archive, '--data-dir', srv.dataDir, '--kek-file', kekFile, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(readFileSync(join(srv.dataDir, 'server.id'), 'utf8'), before);
  });
});
