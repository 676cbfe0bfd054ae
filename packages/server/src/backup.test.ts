/** The archive's checks: what a restore refuses before it writes anything (a real SQLite store, real files). */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { SCHEMA_VERSION, createBackup, readBackup, restoreBackup } from './backup.ts';
import { openStore } from './store/open.ts';

const KEK = 'unit-kek';
let dir: string;
let good: Buffer;

/** The archive again with its manifest changed by `edit`, checksums made right: only the named check can refuse it. */
function remade(edit: (m: Record<string, unknown>) => void): string {
  const n = good.readUInt32BE(8);
  const manifest = JSON.parse(good.subarray(12, 12 + n).toString()) as Record<string, unknown>;
  edit(manifest);
  const head = Buffer.from(JSON.stringify(manifest));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(head.length);
  const body = Buffer.concat([good.subarray(0, 8), len, head, good.subarray(12 + n, good.length - 32)]);
  const f = join(dir, `edited-${Math.random().toString(36).slice(2)}.backup`);
  writeFileSync(f, Buffer.concat([body, createHash('sha256').update(body).digest()]));
  return f;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-backup-unit-'));
  const data = join(dir, 'data');
  mkdirSync(data, { recursive: true });
  const store = await openStore({ db: 'sqlite', dataDir: data });
  await store.close();
  writeFileSync(join(data, 'server.id'), 'unit\n');
  writeFileSync(join(data, 'admin.token'), 'writ_secret\n');
  const m = await createBackup({ dataDir: data, out: join(dir, 'good.backup'), kek: KEK });
  assert.equal(m.schemaVersion, SCHEMA_VERSION);
  good = readFileSync(join(dir, 'good.backup'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const refused = (file: string, code: string, message?: RegExp): void => {
  const target = join(dir, `t-${Math.random().toString(36).slice(2)}`);
  assert.throws(
    () => restoreBackup({ in: file, dataDir: target, kek: KEK }),
    (e) => isWritError(e, code) && (message === undefined || message.test(e.message)),
  );
  assert.equal(existsSync(target), false, 'nothing written');
};

describe('backup archive checks', () => {
  it('reads back what it wrote: the manifest and the files, secrets only in their encrypted form', () => {
    const { manifest, files } = readBackup(join(dir, 'good.backup'));
    assert.deepEqual(
      manifest.files.map((f) => [f.name, f.encrypted]),
      [
        ['writ.db', false],
        ['server.id', false],
        ['admin.token', true],
      ],
    );
    assert.ok(!files.get('admin.token')!.includes(Buffer.from('writ_secret')));
  });

  it('refuses an archive from a newer version: its format or its schema', () => {
    refused(
      remade((m) => (m['format'] = 2)),
      'ERR_BACKUP_UNSUPPORTED',
      /format 2/,
    );
    refused(
      remade((m) => (m['schemaVersion'] = SCHEMA_VERSION + 1)),
      'ERR_BACKUP_UNSUPPORTED',
      new RegExp(`schema version ${SCHEMA_VERSION + 1}`),
    );
  });

  it('refuses names outside the data directory, a secret stored in the clear, sizes that do not add up', () => {
    const rename = (to: string) =>
      remade((m) => {
        (m['files'] as Array<{ name: string }>)[1]!.name = to;
      });
    for (const name of ['../server.id', '/etc/passwd', 'keys/../../x.pem', 'other.txt']) refused(rename(name), 'ERR_BACKUP_CORRUPT', /file name/);
    refused(
      remade((m) => {
        (m['files'] as Array<{ encrypted: boolean }>)[2]!.encrypted = false;
      }),
      'ERR_BACKUP_CORRUPT',
      /must be encrypted/,
    );
    refused(
      remade((m) => {
        (m['files'] as Array<{ size: number }>)[0]!.size += 1;
      }),
      'ERR_BACKUP_CORRUPT',
    );
    refused(
      remade((m) => {
        (m['encryption'] as { N: number }).N = 2 ** 30;
      }),
      'ERR_BACKUP_CORRUPT',
      /encryption parameters/,
    );
  });

  it('a restore without a KEK is refused before the archive is read', () => {
    assert.throws(
      () => restoreBackup({ in: join(dir, 'good.backup'), dataDir: join(dir, 'x'), kek: undefined }),
      (e) => isWritError(e, 'ERR_BACKUP_KEK_REQUIRED'),
    );
  });
});
