/**
 * `writ server backup` / `writ server restore`: one file holding what a server needs to come back
 * with the same identity — the SQLite database (an online snapshot through SQLite's backup API),
 * the CA and JWT private keys, the admin token, server.id and bundle.pem. Secrets are encrypted
 * with a key derived from the key-encryption key (the server's KEK, or any passphrase given for
 * the backup); the database holds no private key and is stored as it is (docs/backup.md).
 *
 * Layout (all integers big-endian):
 *
 *     "WRITBAK1"            8 bytes, magic
 *     N                     uint32, length of the manifest
 *     manifest              N bytes, JSON (BackupManifest)
 *     payload               the files, back to back, in manifest order
 *     SHA-256               32 bytes, of everything before it
 *
 * An encrypted file is stored as IV (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes), its
 * name as additional data; `sha256` and `size` are of the stored bytes.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, scryptSync } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { DatabaseSync, backup as sqliteBackup } from 'node:sqlite';
import { WritError } from '@writ/spiffe';
import { redactDbUrl } from './store/open.ts';
import { PostgresDriver } from './store/postgres.ts';
import { MIGRATIONS } from './store/schema.ts';
import { VERSION } from './version.ts';

const MAGIC = Buffer.from('WRITBAK1', 'ascii');
export const BACKUP_FORMAT = 1;
/** scrypt cost: about 0.1 s and 32 MiB, once per backup or restore. */
const SCRYPT = { N: 2 ** 15, r: 8, p: 1 } as const;
const SCRYPT_MAXMEM = 64 * 1024 * 1024;
/** The only names a backup may hold: a restore never writes outside the target directory. */
const FILE_NAME = /^(writ\.db|server\.id|bundle\.pem|admin\.token|keys\/[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.pem)$/;
const SECRET = (name: string): boolean => name === 'admin.token' || name.startsWith('keys/');

export interface BackupFile {
  readonly name: string;
  readonly size: number;
  readonly sha256: string;
  readonly encrypted: boolean;
}

export interface BackupManifest {
  readonly format: number;
  readonly writVersion: string;
  readonly createdAt: string;
  /** Where the server's state lives: `sqlite` (writ.db is in the archive) or `postgres` (dump it with pg_dump). */
  readonly store: 'sqlite' | 'postgres';
  /** The highest migration applied to the database when it was snapshotted. */
  readonly schemaVersion: number | null;
  readonly encryption: {
    readonly cipher: 'aes-256-gcm';
    readonly kdf: 'scrypt';
    readonly salt: string;
    readonly N: number;
    readonly r: number;
    readonly p: number;
  };
  readonly files: readonly BackupFile[];
}

export interface BackupOptions {
  readonly dataDir: string;
  /** As `writ server start --db`: `sqlite` (default), `sqlite:/path`, or a postgres:// URL. */
  readonly db?: string;
  readonly out: string;
  /** Encrypts the keys in the archive; the same is needed to restore. */
  readonly kek: string | undefined;
  readonly clock?: () => number;
}

export interface RestoreOptions {
  readonly in: string;
  readonly dataDir: string;
  readonly kek: string | undefined;
  /** Replace a data directory that is not empty. */
  readonly force?: boolean;
}

/** The latest schema version this build migrates to. */
export const SCHEMA_VERSION = Math.max(...MIGRATIONS.map((m) => m.version));

function requireKek(kek: string | undefined): string {
  if (!kek) throw new WritError('ERR_BACKUP_KEK_REQUIRED', 'the keys in a backup are encrypted: give the key-encryption key (--kek-file FILE or env WRIT_KEK)');
  return kek;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const deriveKey = (kek: string, salt: Buffer): Buffer => scryptSync(kek, salt, 32, { ...SCRYPT, maxmem: SCRYPT_MAXMEM });

/** A consistent copy of a live SQLite database (the server keeps writing: WAL readers do not block it). */
async function snapshotSqlite(path: string): Promise<{ bytes: Buffer; schemaVersion: number | null }> {
  if (!existsSync(path)) throw new WritError('ERR_STORE_UNAVAILABLE', `no SQLite database at ${path} (is --data-dir the server's?)`);
  const work = mkdtempSync(join(tmpdir(), 'writ-backup-'));
  try {
    const copy = join(work, 'writ.db');
    const source = new DatabaseSync(path, { readOnly: true });
    try {
      source.exec('PRAGMA busy_timeout = 5000');
      // All pages in one step: one read transaction, so the copy is one moment of the database
      // (in steps, every write by the server between two steps would restart the copy).
      await sqliteBackup(source, copy, { rate: 1_000_000_000 });
    } finally {
      source.close();
    }
    const check = new DatabaseSync(copy);
    let schemaVersion: number | null;
    try {
      // quick_check: the pages and b-trees (integrity_check's index cross-checks, 6x slower, run at restore).
      const ok = check.prepare('PRAGMA quick_check').get() as { quick_check?: string } | undefined;
      if (ok?.quick_check !== 'ok') throw new WritError('ERR_STORE_UNAVAILABLE', 'the database snapshot failed its integrity check');
      // A copy that stands alone: no -wal file travels with it.
      check.exec('PRAGMA journal_mode = DELETE');
      schemaVersion = versionOf(check.prepare('SELECT MAX(version) AS v FROM schema_migrations').get());
    } finally {
      check.close();
    }
    return { bytes: readFileSync(copy), schemaVersion };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function versionOf(row: unknown): number | null {
  const v = (row as { v?: unknown } | undefined)?.v;
  return v === null || v === undefined ? null : Number(v);
}

async function postgresSchemaVersion(url: string): Promise<number | null> {
  const driver = new PostgresDriver({ url });
  try {
    return versionOf((await driver.query('SELECT MAX(version) AS v FROM schema_migrations'))[0]);
  } catch (err) {
    // No `cause`: the URL parser's error carries the whole URL (its `input`), password and all.
    throw new WritError('ERR_STORE_UNAVAILABLE', `cannot read the schema version from PostgreSQL ${redactDbUrl(url)}: ${(err as Error).message}`);
  } finally {
    await driver.close().catch(() => undefined);
  }
}

/** Writes the archive atomically (temp file + rename) and returns its manifest. */
export async function createBackup(opts: BackupOptions): Promise<BackupManifest> {
  const kek = requireKek(opts.kek);
  const dataDir = resolve(opts.dataDir);
  const db = opts.db ?? 'sqlite';
  if (!existsSync(join(dataDir, 'server.id')))
    throw new WritError('ERR_CONFIG_INVALID', `${dataDir} is not a server data directory (no server.id)`, { field: 'dataDir' });
  const plain: Array<{ name: string; bytes: Buffer }> = [];
  let store: BackupManifest['store'];
  let schemaVersion: number | null;
  // The database first, the keys after: every authority in the snapshot has its key file by then
  // (a key is written before its authority row).
  if (db === 'sqlite' || db.startsWith('sqlite:')) {
    const snap = await snapshotSqlite(db === 'sqlite' ? join(dataDir, 'writ.db') : db.slice('sqlite:'.length));
    plain.push({ name: 'writ.db', bytes: snap.bytes });
    store = 'sqlite';
    schemaVersion = snap.schemaVersion;
  } else if (db.startsWith('postgres://') || db.startsWith('postgresql://')) {
    store = 'postgres';
    schemaVersion = await postgresSchemaVersion(db);
  } else {
    throw new WritError('ERR_CONFIG_INVALID', '--db must be "sqlite", "sqlite:/path/to/file.db" or a postgres:// URL', { field: 'db' });
  }
  for (const name of ['server.id', 'bundle.pem', 'admin.token']) {
    const p = join(dataDir, name);
    if (existsSync(p)) plain.push({ name, bytes: readFileSync(p) });
  }
  const keysDir = join(dataDir, 'keys');
  if (existsSync(keysDir)) {
    for (const f of readdirSync(keysDir).sort()) {
      if (FILE_NAME.test(`keys/${f}`)) plain.push({ name: `keys/${f}`, bytes: readFileSync(join(keysDir, f)) });
    }
  }

  const salt = randomBytes(16);
  const key = deriveKey(kek, salt);
  const stored = plain.map(({ name, bytes }) => {
    if (!SECRET(name)) return { name, bytes, encrypted: false };
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', key, iv);
    c.setAAD(Buffer.from(name));
    const body = Buffer.concat([c.update(bytes), c.final()]);
    return { name, bytes: Buffer.concat([iv, body, c.getAuthTag()]), encrypted: true };
  });
  const manifest: BackupManifest = {
    format: BACKUP_FORMAT,
    writVersion: VERSION,
    createdAt: new Date((opts.clock ?? Date.now)()).toISOString(),
    store,
    schemaVersion,
    encryption: { cipher: 'aes-256-gcm', kdf: 'scrypt', salt: salt.toString('base64'), ...SCRYPT },
    files: stored.map((f) => ({ name: f.name, size: f.bytes.length, sha256: sha256(f.bytes), encrypted: f.encrypted })),
  };
  const head = Buffer.from(JSON.stringify(manifest));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(head.length);
  const body = Buffer.concat([MAGIC, len, head, ...stored.map((f) => f.bytes)]);
  const out = resolve(opts.out);
  const tmp = `${out}.tmp-${process.pid}`;
  writeFileSync(tmp, Buffer.concat([body, createHash('sha256').update(body).digest()]), { mode: 0o600 });
  renameSync(tmp, out);
  return manifest;
}

const corrupt = (why: string): WritError => new WritError('ERR_BACKUP_CORRUPT', `the backup is corrupt or truncated: ${why}; nothing was restored`);

/** Reads and checks an archive whole (magic, checksum, manifest, every file's checksum). */
export function readBackup(file: string): { manifest: BackupManifest; files: Map<string, Buffer> } {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (err) {
    throw new WritError('ERR_CONFIG_INVALID', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { field: 'in' });
  }
  if (buf.length < MAGIC.length + 4 + 32 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) throw corrupt('not a Writ backup (no WRITBAK1 header)');
  const body = buf.subarray(0, buf.length - 32);
  if (
    !createHash('sha256')
      .update(body)
      .digest()
      .equals(buf.subarray(buf.length - 32))
  )
    throw corrupt('the archive checksum does not match');
  const n = body.readUInt32BE(MAGIC.length);
  const start = MAGIC.length + 4;
  if (start + n > body.length) throw corrupt('the manifest runs past the end');
  let manifest: BackupManifest;
  try {
    manifest = JSON.parse(body.subarray(start, start + n).toString('utf8')) as BackupManifest;
  } catch {
    throw corrupt('the manifest is not JSON');
  }
  if (typeof manifest !== 'object' || manifest === null || typeof manifest.format !== 'number') throw corrupt('the manifest has no format');
  if (manifest.format !== BACKUP_FORMAT)
    throw new WritError('ERR_BACKUP_UNSUPPORTED', `backup format ${manifest.format} is not one this version (${VERSION}) reads (format ${BACKUP_FORMAT})`);
  if (manifest.schemaVersion !== null && !(Number.isInteger(manifest.schemaVersion) && manifest.schemaVersion >= 0)) throw corrupt('schemaVersion');
  if (manifest.schemaVersion !== null && manifest.schemaVersion > SCHEMA_VERSION)
    throw new WritError(
      'ERR_BACKUP_UNSUPPORTED',
      `the backup's database is at schema version ${manifest.schemaVersion}, newer than this version's ${SCHEMA_VERSION} (Writ ${manifest.writVersion} made it): restore it with that version or later`,
    );
  if (manifest.store !== 'sqlite' && manifest.store !== 'postgres') throw corrupt('store');
  const enc = manifest.encryption;
  if (enc?.cipher !== 'aes-256-gcm' || enc.kdf !== 'scrypt' || typeof enc.salt !== 'string') throw corrupt('encryption');
  // Bounded: a crafted archive must not make the restore allocate gigabytes for scrypt (at most 128 MiB here).
  if (![enc.N, enc.r, enc.p].every((x) => Number.isInteger(x) && x > 0) || enc.N > 2 ** 17 || enc.r > 8 || enc.p > 4) throw corrupt('encryption parameters');
  if (!Array.isArray(manifest.files)) throw corrupt('files');
  const files = new Map<string, Buffer>();
  let at = start + n;
  for (const f of manifest.files) {
    if (typeof f?.name !== 'string' || !FILE_NAME.test(f.name) || files.has(f.name)) throw corrupt(`file name ${JSON.stringify(f?.name)}`);
    if (!Number.isSafeInteger(f.size) || f.size < 0 || at + f.size > body.length) throw corrupt(`${f.name} runs past the end`);
    if (f.encrypted !== SECRET(f.name)) throw corrupt(`${f.name} must ${SECRET(f.name) ? '' : 'not '}be encrypted`);
    const bytes = body.subarray(at, at + f.size);
    if (sha256(bytes) !== f.sha256) throw corrupt(`${f.name} does not match its checksum`);
    files.set(f.name, bytes);
    at += f.size;
  }
  if (at !== body.length) throw corrupt('bytes after the last file');
  if (manifest.store === 'sqlite' && !files.has('writ.db')) throw corrupt('a SQLite backup without writ.db');
  if (!files.has('server.id')) throw corrupt('no server.id');
  return { manifest, files };
}

/**
 * Restores into `dataDir`: everything is written and checked in a sibling temporary directory,
 * which is renamed into place at the end, so a failure leaves the target as it was.
 */
export function restoreBackup(opts: RestoreOptions): BackupManifest {
  const kek = requireKek(opts.kek);
  const { manifest, files } = readBackup(opts.in);
  const target = resolve(opts.dataDir);
  const exists = existsSync(target);
  if (exists && !statSync(target).isDirectory()) throw new WritError('ERR_CONFIG_INVALID', `${target} is not a directory`, { field: 'dataDir' });
  const empty = !exists || readdirSync(target).length === 0;
  if (!empty && !opts.force)
    throw new WritError('ERR_RESTORE_TARGET_NOT_EMPTY', `${target} is not empty: restore into a new directory, or give --force to replace it`);

  const enc = manifest.encryption;
  const key = scryptSync(kek, Buffer.from(enc.salt, 'base64'), 32, { N: enc.N, r: enc.r, p: enc.p, maxmem: 256 * enc.N * enc.r + SCRYPT_MAXMEM });
  const plain = new Map<string, Buffer>();
  for (const [name, bytes] of files) {
    if (!SECRET(name)) {
      plain.set(name, bytes);
      continue;
    }
    if (bytes.length < 28) throw corrupt(`${name} is too short`);
    try {
      const d = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, 12));
      d.setAAD(Buffer.from(name));
      d.setAuthTag(bytes.subarray(bytes.length - 16));
      plain.set(name, Buffer.concat([d.update(bytes.subarray(12, bytes.length - 16)), d.final()]));
    } catch {
      throw new WritError('ERR_KEY_INVALID', 'cannot decrypt the keys in the backup (wrong key-encryption key?); nothing was restored');
    }
  }

  mkdirSync(dirname(target), { recursive: true });
  const tmp = mkdtempSync(join(dirname(target), `.${basename(target)}.restore-`));
  try {
    chmodSync(tmp, 0o700);
    for (const [name, bytes] of plain) {
      const p = join(tmp, name);
      if (name.startsWith('keys/')) mkdirSync(join(tmp, 'keys'), { recursive: true, mode: 0o700 });
      writeFileSync(p, bytes, { mode: name === 'bundle.pem' ? 0o644 : 0o600 });
    }
    if (plain.has('writ.db')) {
      const db = new DatabaseSync(join(tmp, 'writ.db'));
      try {
        const ok = db.prepare('PRAGMA integrity_check').get() as { integrity_check?: string } | undefined;
        if (ok?.integrity_check !== 'ok') throw corrupt('the database failed its integrity check');
      } catch (err) {
        throw err instanceof WritError ? err : corrupt(`the database cannot be opened (${(err as Error).message})`);
      } finally {
        db.close();
      }
    }
    if (exists) {
      // Replaced (with --force) or empty: moved aside first, so the rename below cannot fail on it.
      const aside = `${target}.replaced-${process.pid}-${Date.now()}`;
      renameSync(target, aside);
      try {
        renameSync(tmp, target);
      } catch (err) {
        renameSync(aside, target);
        throw err;
      }
      rmSync(aside, { recursive: true, force: true });
    } else {
      renameSync(tmp, target);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return manifest;
}

/** What to run beside `writ server backup` when the store is PostgreSQL (the database is not in the archive). */
export function postgresDumpCommand(url: string, file: string): string {
  return `pg_dump --format=custom --no-owner --file ${file} '${url}'`;
}

export function postgresRestoreCommand(url: string, file: string): string {
  return `pg_restore --clean --if-exists --no-owner --dbname '${url}' ${file}`;
}
