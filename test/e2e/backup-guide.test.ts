/** docs/backup.md stays true: its ```sh blocks run as written (see guide.ts): back up a running server, restore, refuse a damaged archive. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { runGuide } from './guide.ts';

it('the backup guide runs as written: an online backup, a restore with the same trust, a damaged archive refused', async () => {
  const g = await runGuide('docs/backup.md', { ports: [7491, 7492], minBlocks: 4, timeoutMs: 120_000 });
  try {
    const logs = g.logs(['server.log', 'restored.log'].map((f) => `writ-backup/${f}`));
    assert.equal(g.code, 0, `the guide failed\nstdout:\n${g.out}\nstderr:\n${g.err}\n${logs}`);
    assert.match(g.out, /^wrote \S+writ\.backup: \d+ files, \d+ bytes, schema version \d+, keys encrypted$/m);
    assert.match(g.out, /^restored \d+ files into \S+\/restored \(backup of \S+Z, Writ \S+, schema version \d+\)$/m);
    assert.match(g.out, /spiffe:\/\/example\.org\/billing/, 'the entry made before the backup is listed by the restored server');
    assert.match(g.out, /^same trust bundle$/m);
    assert.match(g.err, /\[ERR_BACKUP_CORRUPT\]/);
    assert.match(g.out, /^exit 1$/m);
  } finally {
    await g.finish();
  }
});
