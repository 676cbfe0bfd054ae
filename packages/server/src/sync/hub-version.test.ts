import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { formatBundleJson } from '@writ/spiffe';
import { CertificateAuthority } from '../ca/ca.ts';
import { openStore } from '../store/open.ts';
import { ChangeHub } from './hub.ts';

it('the bundles version agents send back in their sync URL stays short with hundreds of federated trust domains, and changes with any of them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'writ-hubv-'));
  const store = await openStore({ db: 'sqlite', dataDir: dir });
  t.after(async () => (await store.close(), rmSync(dir, { recursive: true, force: true })));
  const ca = new CertificateAuthority({
    store,
    trustDomain: 'v.test',
    dataDir: dir,
    serverId: 's',
    keyType: 'ec-p256',
    caTtlMs: 86_400_000,
    x509SvidTtlMs: 3_600_000,
    jwtSvidTtlMs: 300_000,
  });
  await ca.rotate();
  const hub = new ChangeHub({ store, ca, clock: Date.now, breakGlass: [] });
  t.after(() => hub.close());
  const bundle = JSON.stringify(formatBundleJson({ ...ca.bundle(), trustDomain: 'x' }));
  for (let i = 0; i < 300; i++)
    await store.setFederatedBundle({ trustDomain: `partner-${i}.with-a-rather-long-name.example.org`, bundle, updatedAt: 1_700_000_000_000 + i });
  const before = (await hub.snapshot()).bundlesVersion;
  assert.ok(before.length < 64, `${before.length} characters`);
  await store.setFederatedBundle({ trustDomain: 'partner-7.with-a-rather-long-name.example.org', bundle, updatedAt: 1_800_000_000_000 });
  await new Promise((r) => setImmediate(r));
  assert.notEqual((await hub.snapshot()).bundlesVersion, before);
});
