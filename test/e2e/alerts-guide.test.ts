/** docs/alerts.md stays true: its ```sh blocks run as written (see guide.ts): a new edge alerted and delivered signed, a response quarantine undone. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { runGuide } from './guide.ts';

it('the alerts guide runs as written: a new-edge alert listed and delivered signed, a response quarantine refused then undone', async () => {
  const g = await runGuide('docs/alerts.md', { ports: [7491, 7492, 7493, 7494, 7495, 7496], minBlocks: 6, timeoutMs: 180_000 });
  try {
    const logs = g.logs(['server.log', 'agent.log', 'db.log', 'web.log', 'batch.log', 'hooks.log'].map((f) => `writ-alerts/${f}`));
    assert.equal(g.code, 0, `the guide failed\nstdout:\n${g.out}\nstderr:\n${g.err}\n${logs}`);
    assert.match(g.out, /^db: GET \/orders$/m, 'web reaches the database');
    assert.match(
      g.out,
      /^\S+\s+new-db-callers\s+new-edge\s+spiffe:\/\/example\.org\/ns\/shop\/sa\/web -> spiffe:\/\/example\.org\/ns\/shop\/sa\/db\s+1\s+open\s+\S+Z\s+-$/m,
      'writ alerts list',
    );
    assert.match(g.out, /^signed alert new-db-callers$/m, 'the webhook body verified');
    assert.doesNotMatch(g.out, /BAD SIGNATURE/);
    assert.match(g.out, /^db: GET \/nightly$/m, 'the first batch call passes');
    assert.match(g.out, /"createdBy": "alert-rule:contain-batch"/, 'quarantined by the rule');
    assert.match(g.out, /^batch refused while quarantined$/m);
    assert.match(g.err, /lifted the quarantine of spiffe:\/\/example\.org\/ns\/shop\/sa\/batch/);
    assert.equal([...g.out.matchAll(/^db: GET \/nightly$/gm)].length, 2, 'let through again after the undo');
    assert.match(g.out, /contain-batch\s+new-edge\s+\S+ -> \S+\s+1\s+acked\s+\S+Z\s+quarantined spiffe:\/\/example\.org\/ns\/shop\/sa\/batch \(undone\)$/m);
  } finally {
    await g.finish();
  }
});
