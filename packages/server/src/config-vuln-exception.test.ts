/** vulnExceptionMaxAge in the server configuration: 90 days by default, the flag over the YAML setting, nonsense refused at start. */
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

it('is 90 days by default, set by the YAML file or the flag (which wins), and a duration that is none is refused', () => {
  assert.equal(loadServerConfig({ config: yaml('') }).vulnExceptionMaxMs, 90 * 86_400_000);
  assert.equal(loadServerConfig({ config: yaml('vulnExceptionMaxAge: 30d\n') }).vulnExceptionMaxMs, 30 * 86_400_000);
  assert.equal(loadServerConfig({ config: yaml('vulnExceptionMaxAge: 30d\n'), vulnExceptionMaxAge: '7d' }).vulnExceptionMaxMs, 7 * 86_400_000);
  for (const bad of ['soon', '10s'])
    assert.throws(
      () => loadServerConfig({ config: yaml(`vulnExceptionMaxAge: ${bad}\n`) }),
      (e) => isWritError(e) && /vulnExceptionMaxAge/.test(`${e.field} ${e.message}`),
      bad,
    );
});
