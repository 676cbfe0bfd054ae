/** reportLimit in the server configuration: the default, units, the flag over the file, and what is refused at start. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { loadServerConfig } from './config.ts';

const dir = mkdtempSync(join(tmpdir(), 'writ-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const yaml = (text: string): string => {
  const f = join(dir, `c-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(f, `trustDomain: c.test\ndataDir: ${dir}\n${text}`);
  return f;
};

it('is 64 MiB by default; takes B, KiB, MiB, GiB or bytes; the flag wins; out of range or not a size is refused naming it', () => {
  assert.equal(loadServerConfig({ config: yaml('') }).reportLimitBytes, 64 * 1024 * 1024);
  assert.equal(loadServerConfig({ config: yaml('reportLimit: 8MiB\n') }).reportLimitBytes, 8 * 1024 * 1024);
  assert.equal(loadServerConfig({ config: yaml('reportLimit: 2097152\n') }).reportLimitBytes, 2 * 1024 * 1024, 'a YAML number is bytes');
  assert.equal(loadServerConfig({ config: yaml('reportLimit: 8MiB\n'), reportLimit: '512KiB' }).reportLimitBytes, 512 * 1024, 'the flag wins');
  assert.equal(loadServerConfig({ config: yaml(''), reportLimit: '256MiB' }).reportLimitBytes, 256 * 1024 * 1024);
  for (const bad of ['257MiB', '1GiB', '100', '64MB', 'lots', '-1MiB', '1.5MiB'])
    assert.throws(
      () => loadServerConfig({ config: yaml(''), reportLimit: bad }),
      (e) => isWritError(e, 'ERR_CONFIG_INVALID') && e.field === 'reportLimit',
      bad,
    );
});
