/**
 * The join-token race for real on SQLite. One store instance queues every operation, so racing
 * it proves nothing; here each racer is a worker thread with its own connection to the same
 * database file, and all meet at a barrier before each token, so every token is contended.
 * Exactly one must win each (a check-then-set redeem fails this test).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { openStore } from './open.ts';

const RACERS = 5;
const TOKENS = 200;

it('SQLite: racers with their own connections to one file, released together: exactly one wins each join token', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-race-'));
  try {
    const store = await openStore({ db: 'sqlite', dataDir });
    const hashes = Array.from({ length: TOKENS }, (_, i) => `race-${i}`);
    for (const hash of hashes) await store.createJoinToken({ hash, nodeName: hash, expiresAt: Date.now() + 3_600_000, createdAt: Date.now() });
    await store.close();

    const barrier = new SharedArrayBuffer(8);
    const workers = Array.from(
      { length: RACERS },
      () => new Worker(new URL('../testing/redeem-worker.ts', import.meta.url), { workerData: { dataDir, hashes, barrier, racers: RACERS } }),
    );
    const results = workers.map(
      (w) =>
        new Promise<string[]>((resolve, reject) => {
          w.once('message', resolve);
          w.once('error', reject);
        }),
    );
    const byRacer = await Promise.all(results);

    for (let i = 0; i < TOKENS; i++) {
      const outcomes = byRacer.map((list) => list[i]);
      assert.equal(outcomes.filter((o) => o === 'won').length, 1, `token ${i}: ${outcomes.join(', ')}`);
      assert.deepEqual(
        outcomes.filter((o) => o !== 'won'),
        Array(RACERS - 1).fill('ERR_JOIN_TOKEN_USED'),
        `token ${i}: the others are told it was used`,
      );
    }
    t.diagnostic(`tokens won per racer: ${byRacer.map((l) => l.filter((o) => o === 'won').length).join(', ')}`);
    // The racers really overlapped: more than one racer won some token.
    assert.ok(byRacer.filter((list) => list.includes('won')).length > 1, `winners per racer: ${byRacer.map((l) => l.filter((o) => o === 'won').length)}`);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
