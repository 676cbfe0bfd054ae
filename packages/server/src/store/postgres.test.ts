/**
 * The PostgreSQL driver's statements sent with the COMMIT (`atCommit`): their values are inlined
 * as literals, so every string must come back from a real PostgreSQL exactly as it was given, and
 * a statement that fails there must roll its whole transaction back.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { PostgresDriver, inlineParams } from './postgres.ts';

const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

describe('PostgreSQL driver: statements with the COMMIT', () => {
  const schema = `writ_pg_inline_${process.pid}`;
  let admin: pg.Client;
  let db: PostgresDriver;
  before(async () => {
    admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.query(`CREATE TABLE ${schema}.t (id BIGINT PRIMARY KEY, s TEXT, n BIGINT)`);
    db = new PostgresDriver({ url: PG_URL, schema });
  });
  after(async () => {
    await db?.close();
    await admin?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin?.end();
  });

  it('stores any text without NUL exactly as given, inlined (quotes, backslashes, placeholders, statement text, any Unicode)', async () => {
    let id = 0;
    const text = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.string({ unit: fc.constantFrom("'", '\\', '?', '$', ';', '"', 'E', '-', '\n', 'a'), maxLength: 40 }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          text.filter((s) => !s.includes('\0')),
          { minLength: 1, maxLength: 8 },
        ),
        async (values) => {
          const first = id;
          await db.transaction(async (tx) => {
            for (const v of values) tx.atCommit!('INSERT INTO t (id, s, n) VALUES (?, ?, ?)', [id++, v, -id]);
          });
          const rows = await db.query('SELECT s, n FROM t WHERE id >= ? ORDER BY id', [first]);
          // Lone surrogates are not text: PostgreSQL gets U+FFFD for them, as through a parameter.
          assert.deepEqual(
            rows.map((r) => r['s']),
            values.map((v) => Buffer.from(v, 'utf8').toString('utf8')),
          );
        },
      ),
      { numRuns: 60 },
    );
  });

  it('a statement with the COMMIT that fails rolls back the whole transaction, statements before it included', async () => {
    await db.transaction(async (tx) => {
      await tx.execute('INSERT INTO t (id, s, n) VALUES (?, ?, ?)', [-1, 'taken', 0]);
    });
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.execute('INSERT INTO t (id, s, n) VALUES (?, ?, ?)', [-2, 'asked', 0]);
        tx.atCommit!('INSERT INTO t (id, s, n) VALUES (?, ?, ?)', [-3, 'with the commit', 0]);
        tx.atCommit!('INSERT INTO t (id, s, n) VALUES (?, ?, ?)', [-1, 'a duplicate key', 0]);
      }),
      (err) => db.isUniqueViolation(err),
    );
    // Only atCommit statements: BEGIN goes in the same message, and the failure rolls back all of it.
    await assert.rejects(
      db.transaction(async (tx) => {
        tx.atCommit!('INSERT INTO t (id, s, n) VALUES (?, ?, ?)', [-4, 'first', 0]);
        tx.atCommit!('INSERT INTO t (id, s, n) VALUES (?, ?, ?)', [-1, 'a duplicate key', 0]);
      }),
      (err) => db.isUniqueViolation(err),
    );
    const left = await db.query('SELECT id FROM t WHERE id < 0 ORDER BY id');
    assert.deepEqual(
      left.map((r) => r['id']),
      [-1],
    );
    // The connection is usable afterwards, outside any transaction.
    await db.transaction(async (tx) => tx.atCommit!('INSERT INTO t (id, s, n) VALUES (?, ?, ?)', [-5, 'after', 0]));
    assert.equal((await db.query('SELECT s FROM t WHERE id = -5'))[0]?.['s'], 'after');
  });

  it('refuses what it cannot inline: NUL in text, numbers that are not finite, placeholders and values that do not pair', () => {
    assert.throws(
      () => inlineParams('SELECT ?', ['a\0b']),
      (e: { code?: string }) => e.code === 'ERR_FIELD_INVALID',
    );
    assert.throws(() => inlineParams('SELECT ?', [Number.NaN]), TypeError);
    assert.throws(() => inlineParams('SELECT ?, ?', [1]), TypeError);
    assert.throws(() => inlineParams('SELECT ?', [1, 2]), TypeError);
    assert.equal(inlineParams('SELECT ?, ?, ?, ?', [null, -1.5, "it's", 'a\\b']), "SELECT NULL, -1.5, 'it''s',  E'a\\\\b'");
  });
});
