/**
 * The server on PostgreSQL as a real child process: what happens when the database is away at
 * start and while running (a cuttable TCP proxy in front of the real Postgres), and an upstream
 * CA made by openssl.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent as HttpsAgent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { MIGRATIONS } from '../../packages/server/src/store/schema.ts';
import { CuttableProxy, cleanup, ordersPolicy, run, startServerProcess, waitFor, writ, WRIT, type ServerProcess } from './helpers.ts';

const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgPort = Number(new URL(PG_URL).port || 5432);

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

describe('server on PostgreSQL', () => {
  const dbName = `writ_e2e_${process.pid}`;
  const proxy = new CuttableProxy(pgPort);
  let srv: ServerProcess;
  let dbUrl: string;

  before(async () => {
    await admin((c) => c.query(`CREATE DATABASE ${dbName}`));
    await proxy.open();
    const u = new URL(PG_URL);
    u.port = String(proxy.port);
    u.pathname = `/${dbName}`;
    dbUrl = u.toString();
    srv = await startServerProcess({ args: ['--db', dbUrl] });
  });
  after(async () => {
    await srv?.stop();
    await proxy.close();
    if (srv) cleanup(srv.dataDir);
    await admin((c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`));
  });

  it('keeps its state in Postgres: a second replica with its own data dir sees the entries and publishes its own CA', async () => {
    const r = await writ(srv, [
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://e2e.test/pg',
      '--parent-id',
      'spiffe://e2e.test/writ/agent/a',
      '--selector',
      'unix:uid:7',
      '-o',
      'json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const replica = await startServerProcess({ args: ['--db', dbUrl] });
    try {
      const list = JSON.parse((await writ(replica, ['entry', 'list', '-o', 'json'], { token: srv.adminToken })).stdout);
      assert.deepEqual(
        list.map((e: { spiffeId: string }) => e.spiffeId),
        ['spiffe://e2e.test/pg'],
      );
      // both replicas' CAs are in the one bundle, so an SVID from either verifies against either's bundle
      const bundle = JSON.parse((await writ(replica, ['bundle', 'show'])).stdout);
      assert.equal(bundle.keys.filter((k: { use: string }) => k.use === 'x509-svid').length, 2);
      const out = join(replica.dataDir, 'minted');
      assert.equal((await writ(replica, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/r2', '--out', out], { token: srv.adminToken })).code, 0);
      await waitFor('the first replica to pick up the second CA', async () => {
        const pem = (await writ(srv, ['bundle', 'show', '--format', 'pem'])).stdout;
        writeFileSync(join(out, 'srv-bundle.pem'), pem);
        const v = await run('openssl', ['verify', '-CAfile', join(out, 'srv-bundle.pem'), join(out, 'svid.pem')]);
        return v.code === 0 ? true : undefined;
      });
    } finally {
      await replica.stop();
      cleanup(replica.dataDir);
    }
  });

  it('answers 503 on /readyz and writes while the database is away, and resumes by itself when it returns', async () => {
    const ready = async (): Promise<string> =>
      (await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', join(srv.dataDir, 'bundle.pem'), `${srv.url}/readyz`])).stdout;
    assert.equal(await ready(), '200');
    await proxy.cut();
    try {
      assert.equal(await ready(), '503');
      const w = await writ(srv, [
        'entry',
        'create',
        '--spiffe-id',
        'spiffe://e2e.test/during-outage',
        '--parent-id',
        'spiffe://e2e.test/writ/agent/a',
        '--selector',
        'unix:uid:8',
      ]);
      assert.equal(w.code, 1);
      assert.match(w.stderr, /ERR_STORE_UNAVAILABLE/);
      const live = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', join(srv.dataDir, 'bundle.pem'), `${srv.url}/livez`]);
      assert.equal(live.stdout, '200', 'the process itself is alive');
      assert.equal(srv.child.exitCode, null);
    } finally {
      await proxy.open();
    }
    await waitFor('readiness after the database returns', async () => ((await ready()) === '200' ? true : undefined));
    const w = await writ(srv, [
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://e2e.test/after-outage',
      '--parent-id',
      'spiffe://e2e.test/writ/agent/a',
      '--selector',
      'unix:uid:8',
    ]);
    assert.equal(w.code, 0, w.stderr);
    const log = srv.logs.join('\n');
    assert.ok(!/"level":50/.test(log), 'an outage is not an internal error');
  });

  it('refuses to start when the database is unreachable: one clear line, exit 1', async () => {
    // Port 1 (tcpmux), where nothing listens: a port picked free could be someone's by the time it is dialled.
    const dead = 1;
    const dir = mkdtempSync(join(tmpdir(), 'writ-dead-'));
    const r = await run(process.execPath, [
      WRIT,
      'server',
      'start',
      '--data-dir',
      dir,
      '--trust-domain',
      'e2e.test',
      '--db',
      `postgres://postgres:s3cret-pw@127.0.0.1:${dead}/x`,
    ]);
    cleanup(dir);
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^writ: cannot open the database postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/x: .*ECONNREFUSED.* \[ERR_STORE_UNAVAILABLE\]$/);
    assert.ok(!r.stderr.includes('s3cret-pw') && !r.stdout.includes('s3cret-pw'), 'the password is redacted');
  });

  it('refuses bad configuration with one line naming the setting and exit 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-cfg-'));
    const cfg = join(dir, 'writ.yaml');
    for (const [args, pattern] of [
      [['--trust-domain', 'Bad_TD'], /trustDomain: .*lowercase/],
      [['--trust-domain', 'e2e.test', '--ca-ttl', '0s'], /caTtl: must be at least 1s/],
      [['--trust-domain', 'e2e.test', '--listen', 'nowhere'], /listen: .*HOST:PORT/],
      [['--trust-domain', 'e2e.test', '--decision-retention', '12h'], /decisionRetention: must be at least 1d/],
      [['--trust-domain', 'e2e.test', '--db', 'mysql://x'], /--db must be/],
      [['--config', cfg], /colour: unknown setting/],
    ] as const) {
      writeFileSync(cfg, 'trustDomain: e2e.test\ncolour: blue\n');
      const r = await run(process.execPath, [WRIT, 'server', 'start', '--data-dir', dir, ...args]);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, pattern);
    }
    cleanup(dir);
  });
});

describe('server on PostgreSQL: its connections terminated under load', () => {
  const dbName = `writ_e2e_term_${process.pid}`;
  let dbUrl: string;
  let srv: ServerProcess | undefined;
  const terminate = (): Promise<number> =>
    admin(
      async (c) =>
        (await c.query('SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [dbName]))
          .rows[0].n as number,
    );
  before(async () => {
    await admin((c) => c.query(`CREATE DATABASE ${dbName}`));
    const u = new URL(PG_URL);
    u.pathname = `/${dbName}`;
    dbUrl = u.toString();
  });
  after(async () => {
    if (srv && srv.child.exitCode === null && srv.child.signalCode === null) await srv.stop();
    if (srv) cleanup(srv.dataDir);
    await admin((c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`));
  });

  it('pg_terminate_backend of every backend, then the database closed for a while: the process lives, answers 503, serves again when it is back, and stops with exit 0 while it is dropped', async () => {
    const server = await startServerProcess({ args: ['--db', dbUrl] });
    srv = server;
    const ca = readFileSync(join(server.dataDir, 'bundle.pem'), 'utf8');
    const agent = new HttpsAgent({ ca, keepAlive: true, maxSockets: 64 });
    /** Statuses answered, by phase; 0 for a connection that failed. */
    const seen = new Map<string, Map<number, number>>();
    let phase = 'before';
    let stop = false;
    const one = (method: string, path: string, body?: unknown): Promise<number> =>
      new Promise((resolve) => {
        const req = request(
          new URL(path, server.url),
          { method, agent, headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/json' } },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', () => resolve(0));
        req.end(body === undefined ? undefined : JSON.stringify(body));
      });
    // More requests at once than the pool has connections: clients go from one user to a waiting one all the time.
    let n = 0;
    const loops = Array.from({ length: 24 }, async (_, i) => {
      while (!stop) {
        const at = phase;
        const status =
          i % 3 === 0
            ? await one('POST', '/v1/entries', {
                spiffeId: `spiffe://e2e.test/term/${n++}`,
                parentId: 'spiffe://e2e.test/writ/agent/t',
                selectors: ['unix:uid:9'],
              })
            : await one('GET', '/v1/entries?pageSize=20');
        const m = seen.get(at) ?? seen.set(at, new Map()).get(at)!;
        m.set(status, (m.get(status) ?? 0) + 1);
        if (status !== 200 && status !== 201) await new Promise((r) => setTimeout(r, 50));
      }
    });
    const count = (p: string, ok: (s: number) => boolean): number =>
      [...(seen.get(p) ?? new Map<number, number>())].reduce((t, [s, k]) => t + (ok(s) ? k : 0), 0);
    try {
      await waitFor('the load under way', async () => (count('before', (s) => s === 201) >= 10 ? true : undefined));
      phase = 'terminated';
      let killed = 0;
      for (let i = 0; i < 8; i++) {
        killed += await terminate();
        await new Promise((r) => setTimeout(r, 150 + i * 40));
      }
      assert.ok(killed >= 8, `backends terminated (${killed})`);
      assert.equal(server.child.exitCode, null, `the server outlived its connections being terminated: ${server.stderr.join('')}`);

      // Away: closed to new connections, and every open one terminated.
      phase = 'away';
      await admin((c) => c.query(`ALTER DATABASE ${dbName} WITH ALLOW_CONNECTIONS false`));
      await terminate();
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(server.child.exitCode, null, server.stderr.join(''));
      phase = 'back';
      await admin((c) => c.query(`ALTER DATABASE ${dbName} WITH ALLOW_CONNECTIONS true`));
      await waitFor('writes answered again', async () => (count('back', (s) => s === 201) >= 5 ? true : undefined));
    } finally {
      stop = true;
      await Promise.all(loops);
      await admin((c) => c.query(`ALTER DATABASE ${dbName} WITH ALLOW_CONNECTIONS true`));
    }
    const summary = JSON.stringify(Object.fromEntries([...seen].map(([p, m]) => [p, Object.fromEntries(m)])));
    console.log(`   statuses by phase: ${summary}`);
    // While away, the store is unavailable: 503, never an internal error.
    assert.ok(count('away', (s) => s === 503) > 0, `503 while the database was away: ${summary}`);
    assert.equal(
      count('away', (s) => s !== 503 && s !== 200 && s !== 201),
      0,
      summary,
    );
    assert.equal(
      count('terminated', (s) => s !== 503 && s !== 200 && s !== 201),
      0,
      summary,
    );
    const logs = server.logs.join('\n');
    assert.ok(!/"level":50/.test(logs), 'a lost connection is not an internal error');
    assert.match(logs, /database connection lost; will reconnect|the database is unavailable/, 'the loss is in the log');
    assert.equal(await one('GET', '/v1/entries?pageSize=1'), 200, 'serving again');

    // Stopped while its database is dropped under it: the drain and the close end in exit 0.
    const exited = server.stop();
    await admin((c) => c.query(`DROP DATABASE ${dbName} WITH (FORCE)`));
    assert.equal(await exited, 0, server.stderr.join(''));
    assert.ok(!server.stderr.join('').includes('Unhandled'), server.stderr.join(''));
    agent.destroy();
  });
});

describe('under an upstream CA made by openssl', () => {
  it('SVIDs chain through the Writ intermediate to the upstream root, and openssl verifies them against the root alone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-upstream-'));
    const key = join(dir, 'root.key');
    const crt = join(dir, 'root.pem');
    const gen = await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-384',
      '-nodes',
      '-keyout',
      key,
      '-out',
      crt,
      '-days',
      '30',
      '-subj',
      '/O=Corp/CN=Corp Root CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    assert.equal(gen.code, 0, gen.stderr);
    const srv = await startServerProcess({ args: ['--upstream-ca-cert', crt, '--upstream-ca-key', key] });
    try {
      assert.equal(readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8').trim(), readFileSync(crt, 'utf8').trim(), 'the bundle is the upstream root');
      const out = join(dir, 'svid');
      // The upstream root names no trust domain: the CLI must be told which server to expect.
      const mint = await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/legacy', '--out', out, '--trust-domain', 'e2e.test']);
      assert.equal(mint.code, 0, mint.stderr);
      const chain = readFileSync(join(out, 'svid.pem'), 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g)!;
      assert.equal(chain.length, 2, 'leaf then the Writ intermediate');
      writeFileSync(join(dir, 'leaf.pem'), chain[0]!);
      writeFileSync(join(dir, 'inter.pem'), chain[1]!);
      const v = await run('openssl', ['verify', '-CAfile', crt, '-untrusted', join(dir, 'inter.pem'), join(dir, 'leaf.pem')]);
      assert.match(v.stdout, /leaf\.pem: OK/, v.stderr);
    } finally {
      await srv.stop();
      cleanup(srv.dataDir);
      cleanup(dir);
    }
  });
});

describe('upgrading a PostgreSQL database from an older schema', () => {
  const dbName = `writ_upgrade_${process.pid}`;
  after(() => admin((c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)));

  it('a database at schema version 5 with data in it: the current server migrates it, and every row is intact and served', async () => {
    await admin((c) => c.query(`CREATE DATABASE ${dbName}`));
    const u = new URL(PG_URL);
    u.pathname = `/${dbName}`;
    const token = `writ_upgrade_${randomBytes(16).toString('hex')}`;
    const policy = ordersPolicy('spiffe://e2e.test/ns/orders', 'GET');
    const c = new pg.Client({ connectionString: u.toString() });
    await c.connect();
    try {
      // The schema as release 5 left it, written as that release wrote its rows.
      await c.query('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
      for (const m of MIGRATIONS.filter((x) => x.version <= 5)) {
        for (const stmt of m.statements) await c.query(stmt.replaceAll('{INT64_PRIMARY_KEY}', 'BIGINT PRIMARY KEY'));
        await c.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)', [m.version]);
      }
      await c.query("INSERT INTO admin_tokens VALUES ('old-admin', $1, 'admin', 'from v5', 1, NULL)", [createHash('sha256').update(token).digest('hex')]);
      await c.query(
        `INSERT INTO entries VALUES ('e-old', 'spiffe://e2e.test/ns/legacy-app', 'spiffe://e2e.test/writ/agent/a', '["unix:uid:7"]', 'unix:uid:7', 0, 0, '[]', '[]', 0, 'kept', NULL, 1, 1, 1)`,
      );
      await c.query("INSERT INTO entry_selectors VALUES ('e-old', 'unix:uid:7')");
      await c.query("UPDATE counters SET value = 1 WHERE name = 'entry_revision'");
      await c.query("INSERT INTO policy_revisions VALUES (1, 1, 'admin', 'from v5', $1)", [JSON.stringify({ orders: policy })]);
      await c.query("INSERT INTO quarantine VALUES ('spiffe://e2e.test/ns/bad', 'from v5', 'admin', 1, NULL)");
      const at = Date.now() - 60_000;
      for (const [id, t] of [
        ['d-old-1', at],
        ['d-old-2', at + 1],
      ] as const)
        await c.query(
          `INSERT INTO decisions VALUES ($1, $2, '', 'spiffe://e2e.test/ns/orders', 'GET /v1/orders/1', 'deny', 'NO_MATCHING_ALLOW', 1, '', 'spiffe://e2e.test/writ/agent/a')`,
          [id, t],
        );
    } finally {
      await c.end();
    }

    const srv = await startServerProcess({ args: ['--db', u.toString()] });
    try {
      const as = { token };
      const entries = await writ(srv, ['entry', 'list', '-o', 'json'], as);
      assert.equal(entries.code, 0, entries.stderr);
      assert.deepEqual(
        JSON.parse(entries.stdout).map((e: Record<string, unknown>) => [e['id'], e['spiffeId'], e['selectors'], e['hint']]),
        [['e-old', 'spiffe://e2e.test/ns/legacy-app', ['unix:uid:7'], 'kept']],
      );
      const got = await writ(srv, ['policy', 'get', 'orders'], as);
      assert.deepEqual([got.code, got.stdout], [0, policy]);
      const q = await writ(srv, ['quarantine', 'list', '-o', 'json'], as);
      assert.equal(q.code, 0, q.stderr);
      assert.match(q.stdout, /spiffe:\/\/e2e\.test\/ns\/bad/);
      const d = await writ(srv, ['decisions', 'query', '--to', 'spiffe://e2e.test/ns/orders', '-o', 'json'], as);
      assert.equal(d.code, 0, d.stderr);
      assert.deepEqual(
        JSON.parse(d.stdout).map((x: { id: string }) => x.id),
        ['d-old-2', 'd-old-1'],
      );
      // The migrated log numbers the old rows for followers, and the server writes to the new schema.
      const created = await writ(
        srv,
        ['entry', 'create', '--spiffe-id', 'spiffe://e2e.test/ns/new', '--parent-id', 'spiffe://e2e.test/writ/agent/a', '--selector', 'unix:uid:8'],
        as,
      );
      assert.equal(created.code, 0, created.stderr);
      const db = new pg.Client({ connectionString: u.toString() });
      await db.connect();
      const versions = await db
        .query('SELECT version FROM schema_migrations ORDER BY version')
        .then((r) => r.rows.map((x: { version: number }) => x.version))
        .finally(() => db.end());
      assert.deepEqual(
        versions,
        MIGRATIONS.map((m) => m.version),
      );
    } finally {
      await srv.stop();
      cleanup(srv.dataDir);
    }
  });
});
