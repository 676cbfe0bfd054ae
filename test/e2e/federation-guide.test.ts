/** docs/federation.md stays true: its ```sh blocks run as written (see guide.ts), two servers federating both ways. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { runGuide } from './guide.ts';

it('the federation guide runs as written: two trust domains federate both ways over https_spiffe, status and delete', async () => {
  const g = await runGuide('docs/federation.md', { ports: [7471, 7472, 7473, 7474], minBlocks: 3, timeoutMs: 120_000 });
  try {
    assert.equal(g.code, 0, `the guide failed\nstdout:\n${g.out}\nstderr:\n${g.err}\n${g.logs(['writ-fed/home.log', 'writ-fed/partner.log'])}`);
    assert.match(
      g.out,
      /^TRUST DOMAIN\s+STATE\s+SEQUENCE\s+LAST SUCCESS\s+STALENESS\s+NEXT REFRESH\s+LAST ERROR\npartner\.test\s+ok\s+\d+\s+\S+Z\s+\d+s\s+\S+Z\s+-$/m,
    );
    assert.match(g.out, /^profile:\s+https_spiffe$/m);
    assert.match(g.out, /^endpoint SPIFFE ID:\s+spiffe:\/\/partner\.test\/writ\/server$/m);
    assert.match(g.out, /^bundle:\s+1 X\.509 and 1 JWT authorities/m);
    assert.match(g.err, /^federating with partner\.test: first fetch started/m);
    assert.match(g.err, /^deleted the federation relationship with partner\.test$/m);
    // Ending the relationship drops the peer's bundle.
    assert.match(g.out, /^TRUST DOMAIN\s+KEYS\s+SEQUENCE\s+UPDATED$/m);
    assert.doesNotMatch(g.out, /^partner\.test\s+2\s/m);
  } finally {
    await g.finish();
  }
});
