/** What the CLI says when its connection settings are wrong: the cause, not "cannot reach". */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { cleanup, startServerProcess, writ, type ServerProcess } from './helpers.ts';

let a: ServerProcess;
let b: ServerProcess;
before(async () => {
  // a listens on every address, so 127.0.0.2 reaches it, but its certificate names 127.0.0.1 only.
  [a, b] = await Promise.all([startServerProcess({ args: ['--listen', '0.0.0.0:0'] }), startServerProcess()]);
});
after(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  for (const d of [a?.dataDir, b?.dataDir]) if (d) cleanup(d);
});

it("another server's bundle as --ca-file is named as the cause, with the file", async () => {
  const caFile = join(b.dataDir, 'bundle.pem');
  const r = await writ(a, ['entry', 'list'], { env: { WRIT_CA_FILE: caFile } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`is not from the CA in --ca-file ${caFile.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
  assert.doesNotMatch(r.stderr, /cannot reach/);
});

it('a --ca-file that holds no certificate says so', async () => {
  const r = await writ(a, ['entry', 'list'], { env: { WRIT_CA_FILE: join(a.dataDir, 'admin.token') } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /holds no PEM certificate/);
  assert.doesNotMatch(r.stderr, /writ_[A-Za-z0-9_-]{20,}/, 'the token file is named, its content never shown');
});

it('an address the certificate does not name is told apart from an unreachable server', async () => {
  const r = await writ(a, ['entry', 'list'], { env: { WRIT_SERVER: a.url.replace('127.0.0.1', '127.0.0.2') } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /does not name 127\.0\.0\.2/);
});
