/** Where the server's database URL comes from (--db, then env WRIT_DB, then the file's db) and what of it a log or error may show. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { loadServerConfig } from './config.ts';
import { redactDbUrl } from './store/open.ts';

const dir = mkdtempSync(join(tmpdir(), 'writ-config-db-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, 'c.yaml');
writeFileSync(file, `trustDomain: c.test\ndataDir: ${dir}\ndb: postgres://from-file@db/writ\n`);
const bare = join(dir, 'bare.yaml');
writeFileSync(bare, `trustDomain: c.test\ndataDir: ${dir}\n`);

it('takes the flag over WRIT_DB over the config file, and sqlite when none is given', () => {
  const env = { WRIT_DB: 'postgres://from-env@db/writ' };
  assert.equal(loadServerConfig({ config: file, db: 'postgres://from-flag@db/writ' }, env).db, 'postgres://from-flag@db/writ');
  assert.equal(loadServerConfig({ config: file }, env).db, 'postgres://from-env@db/writ');
  assert.equal(loadServerConfig({ config: file }, {}).db, 'postgres://from-file@db/writ');
  assert.equal(loadServerConfig({ config: file }, { WRIT_DB: '' }).db, 'postgres://from-file@db/writ', 'an empty WRIT_DB is not set');
  assert.equal(loadServerConfig({ config: bare }, {}).db, 'sqlite');
});

it('redacts the password wherever a URL can carry one, and leaves the rest to read', () => {
  const cases: Array<[string, string]> = [
    ['postgres://writ:s3cret@db.example.com:5432/writ?sslmode=verify-full', 'postgres://writ:***@db.example.com:5432/writ?sslmode=verify-full'],
    ['postgresql://writ:s3%40cret@db/writ', 'postgresql://writ:***@db/writ'],
    // A raw @ or / in the password (a user who did not percent-encode it): hidden whole.
    ['postgres://writ:p@ss/s3cret@db/writ', 'postgres://writ:***@db/writ'],
    ['postgres://writ@db/writ?password=s3cret&sslmode=require', 'postgres://writ@db/writ?password=***&sslmode=require'],
    ['postgres://writ@db/writ?sslmode=require&sslpassword=s3cret', 'postgres://writ@db/writ?sslmode=require&sslpassword=***'],
    ['postgres://writ:s3cret@db:99999/writ', 'postgres://writ:***@db:99999/writ'],
    ['postgres://db/writ', 'postgres://db/writ'],
    ['sqlite', 'sqlite'],
    ['sqlite:/var/lib/writ/w.db', 'sqlite:/var/lib/writ/w.db'],
  ];
  for (const [url, shown] of cases) {
    assert.equal(redactDbUrl(url), shown, url);
    assert.ok(!redactDbUrl(url).includes('s3'), url);
  }
});
