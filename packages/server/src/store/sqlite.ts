import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { WritError } from '@writ/spiffe';
import type { Row, SqlDriver, SqlExecutor, SqlValue } from './driver.ts';

/**
 * node:sqlite is synchronous and has one connection, so every operation (and every transaction,
 * which may await between statements) runs under one queue: no statement of another caller can
 * land inside an open transaction.
 */
export class SqliteDriver implements SqlDriver {
  readonly dialect = 'sqlite' as const;
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(path: string) {
    try {
      this.#db = new DatabaseSync(path);
      this.#db.exec(
        'PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;',
      );
    } catch (err) {
      throw new WritError('ERR_STORE_UNAVAILABLE', `cannot open SQLite database ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  #prepare(sql: string): StatementSync {
    let stmt = this.#statements.get(sql);
    if (!stmt) {
      stmt = this.#db.prepare(sql);
      // Bulk inserts make many distinct statements; keep the cache for the repeated ones.
      if (this.#statements.size < 500) this.#statements.set(sql, stmt);
    }
    return stmt;
  }

  #execute(sql: string, params: readonly SqlValue[]): number {
    return Number(this.#prepare(sql).run(...params).changes);
  }

  #run(sql: string, params: readonly SqlValue[]): Row[] {
    const stmt = this.#prepare(sql);
    const returnsRows = /^\s*(SELECT|WITH)\b/i.test(sql) || /\bRETURNING\b/i.test(sql);
    if (returnsRows) return stmt.all(...params) as Row[];
    stmt.run(...params);
    return [];
  }

  #exclusive<T>(fn: () => Promise<T> | T): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  query(sql: string, params: readonly SqlValue[] = []): Promise<Row[]> {
    return this.#exclusive(() => this.#run(sql, params));
  }

  execute(sql: string, params: readonly SqlValue[] = []): Promise<number> {
    return this.#exclusive(() => this.#execute(sql, params));
  }

  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    return this.#exclusive(async () => {
      this.#db.exec('BEGIN IMMEDIATE');
      try {
        const out = await fn({ query: async (sql, params = []) => this.#run(sql, params), execute: async (sql, params = []) => this.#execute(sql, params) });
        this.#db.exec('COMMIT');
        return out;
      } catch (err) {
        this.#db.exec('ROLLBACK');
        throw err;
      }
    });
  }

  async lockForMigration(): Promise<void> {
    // BEGIN IMMEDIATE already holds the write lock.
  }

  isUniqueViolation(err: unknown): boolean {
    const e = err as { code?: string; errcode?: number; message?: string };
    return e?.errcode === 2067 || e?.errcode === 1555 || /UNIQUE constraint failed/.test(e?.message ?? '');
  }

  async close(): Promise<void> {
    await this.#exclusive(() => this.#db.close());
  }
}
