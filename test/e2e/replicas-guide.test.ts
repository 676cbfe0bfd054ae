/** docs/replicas.md stays true: its ```sh blocks run as written (see guide.ts), two replicas on a fresh PostgreSQL database and an agent listing both. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { runGuide } from './guide.ts';
import { PG_URL, pgAdmin as admin } from './helpers.ts';

it('the replicas guide runs as written: two replicas, an agent on both, one drained, its leases taken over', async () => {
  const db = `writ_guide_replicas_${process.pid}`;
  await admin(`CREATE DATABASE ${db}`);
  const u = new URL(PG_URL);
  u.pathname = `/${db}`;
  const g = await runGuide('docs/replicas.md', { ports: [7481, 7482], minBlocks: 6, timeoutMs: 180_000, env: { WRIT_DB: u.toString() } });
  try {
    assert.equal(g.code, 0, `the guide failed\nstdout:\n${g.out}\nstderr:\n${g.err}\n${g.logs(['writ-ha/a.log', 'writ-ha/b.log', 'writ-ha/agent.log'])}`);
    const lines = g.out.trim().split('\n');
    assert.equal(lines[0], '2', "both replicas listen for each other's changes");
    assert.match(g.out, /^\S+\s+spiffe:\/\/example\.org\/web\s+spiffe:\/\/example\.org\/writ\/agent\/node-1\s/m, 'the entry written through A is listed by B');
    // The SVID served before and after A was drained (the agent moved to B).
    assert.deepEqual(
      lines.filter((l) => l === '1'),
      ['1', '1', '1'],
    );
    assert.match(g.out, /^audit-checkpoint\|t\nfederation-refresh\|t\nprune\|t\nquarantine-expiry\|t\nvuln-events\|t$/m);
  } finally {
    await g.finish();
    await admin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  }
});
