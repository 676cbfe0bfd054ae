/**
 * `writ server backup` and `writ server restore` (docs/backup.md): run beside the server on the
 * same host (they read and write the data directory, not the API).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { WritError } from '@writ/spiffe';

/** The key-encryption key from --kek-file, else WRIT_KEK; undefined when neither is given. */
function kekOf(file: string | undefined): string | undefined {
  if (!file) return process.env['WRIT_KEK'] || undefined;
  let kek: string;
  try {
    kek = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new WritError('ERR_CONFIG_INVALID', `cannot read --kek-file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { field: 'kekFile' });
  }
  if (!kek) throw new WritError('ERR_CONFIG_INVALID', `--kek-file ${file} is empty`, { field: 'kekFile' });
  return kek;
}

const say = (line: string): void => void process.stdout.write(`${line}\n`);

export function registerServerBackup(server: Command): void {
  server
    .command('backup')
    .description("a consistent snapshot of a running (or stopped) server's data directory and database, keys encrypted")
    .requiredOption('--out <file>', 'the archive to write')
    .option('--data-dir <dir>', "the server's data directory", '.')
    .option('--db <db>', 'the store, as given to server start: sqlite (default), sqlite:/path/file.db, or postgres://… (else env WRIT_DB)')
    .option('--kek-file <file>', 'key-encryption key that encrypts the keys in the archive (or env WRIT_KEK); required')
    .action(async (o: { out: string; dataDir: string; db?: string; kekFile?: string }) => {
      const { createBackup, postgresDumpCommand, redactDbUrl } = await import('@writ/server');
      const db = o.db ?? (process.env['WRIT_DB'] || 'sqlite');
      const m = await createBackup({ dataDir: o.dataDir, db, out: o.out, kek: kekOf(o.kekFile) });
      const bytes = m.files.reduce((n, f) => n + f.size, 0);
      say(`wrote ${resolve(o.out)}: ${m.files.length} files, ${bytes} bytes, schema version ${m.schemaVersion ?? 'none'}, keys encrypted`);
      if (m.store === 'postgres') {
        say('the database is PostgreSQL: it is not in the archive. Dump it now, beside the archive:');
        say(`  ${postgresDumpCommand(redactDbUrl(db), `${o.out}.pgdump`)}`);
      }
    });
  server
    .command('restore')
    .description('restore a backup into a data directory (a new one, or replace one with --force); the server must be stopped')
    .requiredOption('--in <file>', 'the archive written by writ server backup')
    .requiredOption('--data-dir <dir>', 'the data directory to create')
    .option('--force', 'replace a data directory that is not empty')
    .option('--kek-file <file>', 'the key-encryption key the backup was made with (or env WRIT_KEK)')
    .action(async (o: { in: string; dataDir: string; force?: boolean; kekFile?: string }) => {
      const { restoreBackup, postgresRestoreCommand } = await import('@writ/server');
      const m = restoreBackup({ in: o.in, dataDir: o.dataDir, kek: kekOf(o.kekFile), force: o.force === true });
      say(
        `restored ${m.files.length} files into ${resolve(o.dataDir)} (backup of ${m.createdAt}, Writ ${m.writVersion}, schema version ${m.schemaVersion ?? 'none'})`,
      );
      if (m.store === 'postgres') {
        say('the backup was of a PostgreSQL server: restore its database from the dump made beside it:');
        say(`  ${postgresRestoreCommand('postgres://…', `${o.in}.pgdump`)}`);
      }
    });
}
