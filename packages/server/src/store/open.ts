import { join } from 'node:path';
import { WritError } from '@writ/spiffe';
import { PostgresDriver } from './postgres.ts';
import { SqliteDriver } from './sqlite.ts';
import { SqlStore } from './sql-store.ts';
import type { Store } from './types.ts';

export interface OpenStoreOptions {
  /** `sqlite` (default: `<dataDir>/writ.db`), `sqlite:/path/file.db`, or a `postgres://` URL. */
  readonly db: string;
  readonly dataDir: string;
  readonly schema?: string;
  readonly onError?: (err: Error) => void;
}

/** Opens and migrates the store named by `db`. */
export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  const db = opts.db;
  let store: Store;
  if (db === 'sqlite' || db.startsWith('sqlite:')) {
    const path = db === 'sqlite' ? join(opts.dataDir, 'writ.db') : db.slice('sqlite:'.length);
    store = new SqlStore(new SqliteDriver(path));
  } else if (db.startsWith('postgres://') || db.startsWith('postgresql://')) {
    store = new SqlStore(new PostgresDriver({ url: db, ...(opts.schema ? { schema: opts.schema } : {}), ...(opts.onError ? { onError: opts.onError } : {}) }));
  } else {
    throw new WritError('ERR_CONFIG_INVALID', `--db must be "sqlite", "sqlite:/path/to/file.db" or a postgres:// URL`, { field: 'db' });
  }
  try {
    await store.migrate();
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
  return store;
}

/** Redacts the password of a database URL for logs and errors. */
export function redactDbUrl(db: string): string {
  return db.replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@');
}
