/** requireAdmittedImage in the server configuration: the flag, the YAML setting, and a wrong value refused at start. */
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

it('is off by default, on from the flag or the YAML file, and anything but a boolean is refused naming the setting', () => {
  assert.equal(loadServerConfig({ config: yaml('') }).requireAdmittedImage, false);
  assert.equal(loadServerConfig({ config: yaml(''), requireAdmittedImage: true }).requireAdmittedImage, true);
  assert.equal(loadServerConfig({ config: yaml('requireAdmittedImage: true\n') }).requireAdmittedImage, true);
  assert.equal(loadServerConfig({ config: yaml('requireAdmittedImage: false\n'), requireAdmittedImage: true }).requireAdmittedImage, true, 'the flag wins');
  assert.throws(
    () => loadServerConfig({ config: yaml('requireAdmittedImage: "yes"\n') }),
    (e) => isWritError(e, 'ERR_CONFIG_INVALID') && e.field === 'requireAdmittedImage',
  );
});
