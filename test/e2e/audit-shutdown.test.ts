/**
 * The audit log when the server stops (issue 15, section 1): a real server on SQLite and on
 * PostgreSQL is stopped (SIGTERM) right after changes; once it has exited, the database holds
 * every change's leaf folded into the tree and a signed checkpoint of all of them, and the same
 * log verifies after a restart. `writ_audit_pending_leaves` shows the leaves waiting for a fold
 * (on PostgreSQL the test holds the tree's head row, so no fold can take them until it lets go).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { noteVerifier, openNote, parseCheckpoint } from '@writ/transparency';
import { PG_URL, cleanup, pgAdmin, postgresDb, sqliteDb, startServerProcess, waitFor, writ, type Db, type ServerProcess } from './helpers.ts';

/** SQL straight on the server's database, `?` placeholders on both. */
/** `writ_audit_pending_leaves` as the server's /metrics serves it now. */
function pendingMetric(srv: ServerProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(new URL('/metrics', srv.url), { ca: readFileSync(join(srv.dataDir, 'bundle.pem')) }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        const m = /^writ_audit_pending_leaves (\S+)$/m.exec(text);
        if (!m) return reject(new Error(`no writ_audit_pending_leaves in /metrics (status ${res.statusCode})`));
        resolve(Number(m[1]));
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const count = async (db: Db, table: string): Promise<number> => Number((await db.query(`SELECT COUNT(*) AS n FROM ${table}`))[0]!['n']);

const quarantine = async (srv: ServerProcess, name: string): Promise<void> => {
  const r = await writ(srv, ['quarantine', 'add', `spiffe://e2e.test/${name}`, '--reason', 'just before the stop']);
  assert.equal(r.code, 0, r.stderr);
};

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`the audit log at shutdown on ${backend}`, () => {
    const dbName = `writ_audit_stop_${process.pid}`;
    let srv: ServerProcess | undefined;
    after(async () => {
      await srv?.stop();
      if (srv) cleanup(srv.dataDir);
      if (backend === 'postgres') await pgAdmin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    });

    it('a server stopped right after changes has folded and signed every leaf before it exits; the metric counts the leaves waiting', async () => {
      let dbUrl: string | undefined;
      if (backend === 'postgres') {
        await pgAdmin(`CREATE DATABASE ${dbName}`);
        const u = new URL(PG_URL);
        u.pathname = `/${dbName}`;
        dbUrl = u.toString();
      }
      srv = await startServerProcess(dbUrl ? { args: ['--db', dbUrl] } : {});
      const db = dbUrl ? await postgresDb(dbUrl) : sqliteDb(join(srv.dataDir, 'writ.db'));
      const holder = dbUrl ? await postgresDb(dbUrl) : undefined;
      try {
        // The server's own first leaves (its CA, the first token) are folded within a second.
        await waitFor('the first leaves folded', async () => ((await pendingMetric(srv!)) === 0 ? true : undefined));
        if (holder) {
          // No fold can take the head row while the test holds it: the changes' leaves wait, counted.
          await holder.query('BEGIN');
          await holder.query('SELECT size FROM audit_head WHERE id = 1 FOR UPDATE');
        }
        for (const name of ['web', 'api', 'db']) await quarantine(srv, name);
        if (holder) assert.equal(await pendingMetric(srv), 3, 'three changes committed, their leaves not yet in the tree');
        const exited = new Promise<number | null>((r) => srv!.child.once('exit', (code) => r(code)));
        srv.child.kill('SIGTERM');
        if (holder) {
          // Let go only once the draining server has given up its signing lease: it signs its last checkpoint all the same.
          await waitFor('the lease given up', async () =>
            (await db.query("SELECT holder FROM leases WHERE name = 'audit-checkpoint'")).length === 0 ? true : undefined,
          );
          await holder.query('COMMIT');
        }
        assert.equal(await exited, 0);

        assert.equal(await count(db, 'audit_pending'), 0, 'no leaf left queued');
        const leaves = await count(db, 'audit_leaves');
        const head = Number((await db.query('SELECT size FROM audit_head WHERE id = 1'))[0]!['size']);
        assert.equal(head, leaves, 'every leaf is in the tree');
        const kinds = (await db.query('SELECT kind, subject FROM audit_leaves ORDER BY leaf_index')).map((r) => `${r['kind']} ${r['subject']}`);
        for (const name of ['web', 'api', 'db']) assert.equal(kinds.filter((k) => k === `quarantine.add spiffe://e2e.test/${name}`).length, 1, name);
        const latest = (await db.query('SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1'))[0];
        assert.ok(latest, 'a checkpoint was signed');
        const note = latest['note'] as string;
        const vkey = readFileSync(join(srv.dataDir, 'audit-log.vkey'), 'utf8').trim();
        assert.equal(
          parseCheckpoint(openNote(note, [noteVerifier(vkey)]).text).size,
          leaves,
          'the last checkpoint, signed with the log key, covers every leaf',
        );
        await db.close();
        if (holder) await holder.close();

        srv = await startServerProcess({ dataDir: srv.dataDir, ...(dbUrl ? { args: ['--db', dbUrl] } : {}) });
        const v = await writ(srv, ['audit', 'verify', '--key', join(srv.dataDir, 'audit-log.vkey')]);
        assert.equal(v.code, 0, v.stdout + v.stderr);
        assert.match(v.stdout, /^verified \d+ entries/m);
        assert.ok(Number(/^verified (\d+)/m.exec(v.stdout)![1]) >= leaves);
      } finally {
        await db.close().catch(() => undefined);
        await holder?.close().catch(() => undefined);
      }
    });
  });
}
