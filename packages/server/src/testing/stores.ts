/** Store factories for tests and benchmarks: a fresh SQLite file, a fresh Postgres schema. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { openStore } from '../store/open.ts';
import type { Store } from '../store/types.ts';

export const TEST_PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface TestStore {
  readonly name: 'sqlite' | 'postgres';
  readonly store: Store;
  /** Another store over the same database, as a second replica opens it (closed by `dispose`). */
  replica(): Promise<Store>;
  /** Runs SQL on the store's database over a connection of its own: what a database administrator could do behind the server's back. */
  sql(statement: string): Promise<void>;
  dispose(): Promise<void>;
}

export async function sqliteTestStore(): Promise<TestStore> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-store-'));
  const store = await openStore({ db: 'sqlite', dataDir: dir });
  const sql = async (statement: string): Promise<void> => {
    const db = new DatabaseSync(join(dir, 'writ.db'));
    try {
      db.exec('PRAGMA busy_timeout = 5000');
      db.exec(statement);
    } finally {
      db.close();
    }
  };
  const replicas: Store[] = [];
  return {
    name: 'sqlite',
    store,
    sql,
    replica: async () => {
      const r = await openStore({ db: 'sqlite', dataDir: dir });
      replicas.push(r);
      return r;
    },
    dispose: async () => {
      for (const r of replicas) await r.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function postgresTestStore(): Promise<TestStore> {
  const schema = `writ_t_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.end();
  const store = await openStore({ db: TEST_PG_URL, dataDir: tmpdir(), schema });
  const replicas: Store[] = [];
  return {
    name: 'postgres',
    store,
    replica: async () => {
      const r = await openStore({ db: TEST_PG_URL, dataDir: tmpdir(), schema });
      replicas.push(r);
      return r;
    },
    sql: async (statement) => {
      const c = new pg.Client({ connectionString: TEST_PG_URL, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        await c.query(statement);
      } finally {
        await c.end();
      }
    },
    dispose: async () => {
      for (const r of replicas) await r.close();
      await store.close();
      const c = new pg.Client({ connectionString: TEST_PG_URL });
      await c.connect();
      await c.query(`DROP SCHEMA ${schema} CASCADE`);
      await c.end();
    },
  };
}

export const STORE_FACTORIES = [sqliteTestStore, postgresTestStore] as const;
