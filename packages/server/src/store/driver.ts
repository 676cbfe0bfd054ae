/**
 * The narrow surface the SQL store needs from a database, kysely-style: one implementation per
 * database under this folder, typed structurally so the store itself imports no driver.
 * SQL is written once with `?` placeholders; the Postgres driver numbers them.
 */
export type SqlValue = string | number | null;
export type Row = Record<string, unknown>;

export interface SqlExecutor {
  query(sql: string, params?: readonly SqlValue[]): Promise<Row[]>;
  /** Runs a statement that returns no rows; resolves to how many rows it changed. */
  execute(sql: string, params?: readonly SqlValue[]): Promise<number>;
  /**
   * Inside a transaction, where the database gains by it (PostgreSQL): runs a statement whose
   * answer nobody needs at COMMIT, sent in the same message as the COMMIT (one round trip for
   * both, and no round trip between them holding the transaction's row locks). It fails the
   * commit when it fails: the transaction is rolled back. Elsewhere callers `execute` instead.
   */
  atCommit?(sql: string, params?: readonly SqlValue[]): void;
}

export interface SqlDriver extends SqlExecutor {
  readonly dialect: 'sqlite' | 'postgres';
  /** Runs `fn` in one transaction: committed if it resolves, rolled back if it throws. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /** Serialises migrations between replicas (inside a transaction). */
  lockForMigration(tx: SqlExecutor): Promise<void>;
  /** Maps a driver error to a WritError where it means something to callers (unique violation, lost connection). */
  isUniqueViolation(err: unknown): boolean;
  /**
   * Other processes' committed writes, as the `topic`s their notification triggers name (PostgreSQL
   * LISTEN on one dedicated connection, reconnected with backoff); undefined on SQLite, which one
   * process owns. `onState(true)` each time the connection is (re)established, false when lost.
   */
  listen?(handlers: ChangeListenHandlers): () => Promise<void>;
  /** Tells other processes of a change that no write made (a quarantine that expired); PostgreSQL only. */
  announce?(topic: string): Promise<void>;
  close(): Promise<void>;
}

export interface ChangeListenHandlers {
  onTopic(topic: string, arg: string): void;
  onState(live: boolean, err?: Error): void;
}
