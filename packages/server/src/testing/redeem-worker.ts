/**
 * A worker thread with its own SQLite connection to a shared store file, for the join-token race:
 * before each token it waits at a barrier with the other racers, so every token is contended.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { isWritError } from '@writ/spiffe';
import { openStore } from '../store/open.ts';

const { dataDir, hashes, barrier, racers } = workerData as { dataDir: string; hashes: string[]; barrier: SharedArrayBuffer; racers: number };
const store = await openStore({ db: 'sqlite', dataDir });
const flags = new Int32Array(barrier); // [arrived, generation]

/** Returns once all racers have arrived (a reusable barrier: the last to arrive opens the next generation). */
function allTogether(): void {
  const generation = Atomics.load(flags, 1);
  if (Atomics.add(flags, 0, 1) === racers - 1) {
    Atomics.store(flags, 0, 0);
    Atomics.add(flags, 1, 1);
    Atomics.notify(flags, 1);
  } else Atomics.wait(flags, 1, generation);
}

const results: string[] = [];
for (const h of hashes) {
  allTogether();
  try {
    await store.redeemJoinToken(h, Date.now());
    results.push('won');
  } catch (err) {
    results.push(isWritError(err) ? err.code : String(err));
  }
}
await store.close();
parentPort!.postMessage(results);
