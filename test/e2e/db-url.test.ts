/**
 * The server's database URL from the environment (WRIT_DB, as a Kubernetes Secret gives it): the
 * flag wins over it, it wins over the config file, and its password is in no log line and no error,
 * whatever is wrong with the URL.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PG_URL, cleanup, pgAdmin, startServerProcess, writ, type ServerProcess } from './helpers.ts';

const SECRET = 'Hunter2-db-Secret';

describe('the database URL from WRIT_DB', { timeout: 180_000 }, () => {
  const dbName = `writ_db_env_${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'writ-db-env-'));
  let withPassword: string;
  const servers: ServerProcess[] = [];
  before(async () => {
    await pgAdmin(`CREATE DATABASE ${dbName}`);
    // The test database trusts loopback: the password is sent nowhere, but it is in the URL like a real one.
    const u = new URL(PG_URL);
    u.username = 'postgres';
    u.password = SECRET;
    u.pathname = `/${dbName}`;
    withPassword = u.toString();
    writeFileSync(join(dir, 'sqlite.yaml'), 'db: sqlite\n');
  });
  after(async () => {
    for (const s of servers) await s.stop();
    for (const s of servers) cleanup(s.dataDir);
    cleanup(dir);
    await pgAdmin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  });

  it('wins over the config file, loses to --db, and its password is in no log line', async () => {
    const onEnv = await startServerProcess({ args: ['--config', join(dir, 'sqlite.yaml')], env: { WRIT_DB: withPassword } });
    servers.push(onEnv);
    const listening = JSON.parse(onEnv.logs.find((l) => l.includes('"writ server listening"'))!) as { store: string; db: string };
    assert.equal(listening.store, 'postgres', 'WRIT_DB over the file');
    assert.equal(listening.db, withPassword.replace(SECRET, '***'));
    // It works: a write through it is in that database.
    const made = await writ(onEnv, ['token', 'create', '--node-name', 'n1', '-o', 'json']);
    assert.equal(made.code, 0, made.stderr);
    const c = new pg.Client({ connectionString: withPassword });
    await c.connect();
    const n = Number((await c.query('SELECT count(*) AS n FROM join_tokens')).rows[0]?.['n']);
    await c.end();
    assert.equal(n, 1);

    const onFlag = await startServerProcess({ args: ['--db', 'sqlite'], env: { WRIT_DB: withPassword } });
    servers.push(onFlag);
    assert.ok(
      onFlag.logs.some((l) => l.includes('"writ server listening"') && l.includes('"store":"sqlite"')),
      '--db over WRIT_DB',
    );
    for (const s of servers) assert.ok(!s.logs.join('\n').includes(SECRET) && !s.stderr.join('').includes(SECRET), 'no password in the logs');
  });

  const bad: Array<[string, string]> = [
    ['a port nothing listens on', `postgres://writ:${SECRET}@127.0.0.1:1/writ`],
    ['a port out of range (the URL parser refuses it)', `postgres://writ:${SECRET}@127.0.0.1:99999/writ`],
    ['a raw @ and / in the password', `postgres://writ:p@ss/${SECRET}@127.0.0.1:1/writ`],
    ['the password as a query parameter, and no such database', `postgres://postgres@127.0.0.1:5432/writ_no_such_db?password=${SECRET}`],
    ['a host that does not resolve', `postgresql://writ:${SECRET}@db.invalid/writ`],
  ];
  for (const [what, url] of bad)
    it(`a bad URL (${what}): the server exits 1 with ERR_STORE_UNAVAILABLE and the URL without its password`, async () => {
      const r = await writ(
        undefined,
        ['server', 'start', '--data-dir', mkdtempSync(join(dir, 'd-')), '--trust-domain', 'e2e.test', '--listen', '127.0.0.1:0'],
        {
          env: { WRIT_DB: url },
        },
      );
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /ERR_STORE_UNAVAILABLE/);
      assert.match(r.stderr, /cannot open the database postgres(ql)?:\/\/[^ ]*\*\*\*/);
      assert.ok(!`${r.stdout}${r.stderr}`.includes(SECRET), `no password in: ${r.stderr}`);
    });
});
