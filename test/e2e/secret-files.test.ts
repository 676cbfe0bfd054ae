/** Private keys the CLI writes are never readable by others, also where a looser file was there before. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { cleanup, serverWithAgent, waitFor, writ, type AgentProcess, type ServerProcess } from './helpers.ts';

let srv: ServerProcess;
let agent: AgentProcess;
let stop: () => Promise<void>;
before(async () => {
  ({ srv, agent, stop } = await serverWithAgent('spiffe://e2e.test/ns/keys', 'keys'));
});
after(() => stop?.());

it('svid fetch --write and svid mint-x509 leave svid.key at 0600 even over an existing 0644 file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'writ-keys-'));
  try {
    const fetched = join(dir, 'fetched');
    const minted = join(dir, 'minted');
    for (const d of [fetched, minted]) {
      mkdirSync(d);
      writeFileSync(join(d, 'svid.key'), 'old', { mode: 0o644 });
    }
    await waitFor('an SVID to fetch', async () =>
      (await writ(undefined, ['svid', 'fetch', '--socket', agent.socket, '--write', fetched])).code === 0 ? true : undefined,
    );
    const m = await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/ns/minted', '--out', minted]);
    assert.equal(m.code, 0, m.stderr);
    for (const d of [fetched, minted]) assert.equal((statSync(join(d, 'svid.key')).mode & 0o777).toString(8), '600', d);
  } finally {
    cleanup(dir);
  }
});
