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

/**
 * A database URL without its secrets, for logs and errors: the password of the user part (up to the
 * last `@`, so a password with a raw `@` or `/` in it is hidden whole) and the `password` and
 * `sslpassword` query parameters libpq and pg take. `postgres://writ:s3cret@db/writ` gives
 * `postgres://writ:***@db/writ`.
 */
export function redactDbUrl(db: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)(.*)$/is.exec(db);
  if (!m) return db;
  let rest = m[2]!;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const colon = rest.slice(0, at).indexOf(':');
    if (colon >= 0) rest = `${rest.slice(0, colon)}:***${rest.slice(at)}`;
  }
  return m[1] + rest.replace(/([?&](?:ssl)?password=)[^&#]*/gi, '$1***');
}
