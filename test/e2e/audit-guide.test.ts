/** docs/audit.md stays true: its ```sh blocks run as written (see guide.ts): changes, verify, a witness checkpoint, a change behind the server's back. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { runGuide } from './guide.ts';

it('the audit guide runs as written: the changes logged by who made them, verified, proved, a witness kept, an edit in the database caught at its index', async () => {
  const g = await runGuide('docs/audit.md', { ports: [7591], minBlocks: 4, timeoutMs: 120_000 });
  try {
    assert.equal(g.code, 0, `the guide failed\nstdout:\n${g.out}\nstderr:\n${g.err}\n${g.logs(['writ-audit/server.log'])}`);
    assert.match(g.out, /^0 {2}\S+Z {2}system {2}authorities\.save {2}x509,jwt$/m, 'the first CA, by the server itself');
    assert.match(g.out, /^2 {2}\S+Z {2}token:initial {2}entry\.create {2}spiffe:\/\/example\.org\/ns\/shop\/sa\/web$/m);
    assert.match(g.out, /^4 {2}\S+Z {2}token:initial {2}quarantine\.add {2}spiffe:\/\/example\.org\/ns\/shop\/sa\/api$/m);
    assert.match(g.out, /^verified 5 entries of example\.org\/writ-audit: root \S+ matches the signed checkpoint$/m);
    assert.match(
      g.out,
      /^entry 2 \(entry\.create spiffe:\/\/example\.org\/ns\/shop\/sa\/web by token:initial at \S+\) is in the tree of 5 entries with root \S+: inclusion proof of \d+ hashes verified$/m,
    );
    assert.match(g.out, /^example\.org\/writ-audit\n5\n[A-Za-z0-9+/]{43}=\n\n\u2014 example\.org\/writ-audit \S+$/m, 'the witness checkpoint, a signed note');
    assert.match(
      g.out,
      /^verified 6 entries of example\.org\/writ-audit: root \S+ matches the signed checkpoint, consistent with the trusted checkpoint of size 5$/m,
    );
    assert.match(g.err, /^writ: audit log: first bad index 4: the entry is not the one that was appended$/m);
    assert.match(g.out, /^exit 3$/m);
  } finally {
    await g.finish();
  }
});
