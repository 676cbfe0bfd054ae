/**
 * The fixture itself, checked by an outside client: skopeo (containers/image) reads what the push
 * helpers wrote through every front configuration, so the bearer front speaks the real token protocol.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { promisify } from 'node:util';
import { type RegistryAuth, startRegistry } from './registry.ts';

const run = promisify(execFile);

for (const [auth, referrers] of [
  ['none', false],
  ['basic', false],
  ['bearer', true],
] as [RegistryAuth, boolean][]) {
  it(`skopeo inspects an image and a multi-arch index pushed by the fixture (auth ${auth}${referrers ? ', referrers front' : ''})`, async () => {
    const reg = await startRegistry({ auth, referrers });
    const certDir = mkdtempSync(join(tmpdir(), 'writ-skopeo-'));
    try {
      copyFileSync(reg.caFile, join(certDir, 'ca.crt'));
      const img = await reg.pushImage('team/app', 'v1', { layers: 2 });
      const idx = await reg.pushIndex('team/multi', 'v1');
      const creds = auth === 'none' ? [] : ['--creds', `${reg.username}:${reg.password}`];
      const inspect = async (ref: string, raw: boolean): Promise<string> =>
        (await run('skopeo', ['inspect', ...(raw ? ['--raw'] : []), '--cert-dir', certDir, ...creds, `docker://${ref}`], { encoding: 'utf8' })).stdout;
      const info = JSON.parse(await inspect(reg.ref('team/app', 'v1'), false)) as { Digest: string; Layers: string[] };
      assert.equal(info.Digest, img.digest);
      assert.equal(info.Layers.length, 2);
      assert.equal(await inspect(reg.ref('team/multi', 'v1'), true), idx.bytes.toString('utf8'));
      if (auth !== 'none')
        await assert.rejects(run('skopeo', ['inspect', '--cert-dir', certDir, '--creds', `${reg.username}:wrong`, `docker://${reg.ref('team/app', 'v1')}`]));
      if (auth === 'bearer') assert.ok(reg.stats.tokenRequests >= 1);
    } finally {
      rmSync(certDir, { recursive: true, force: true });
      await reg.stop();
    }
  });
}
