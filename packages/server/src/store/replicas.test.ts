/**
 * What several replicas share through the store, on SQLite and PostgreSQL: job leases (one holder,
 * taken over once expired or given up), and on PostgreSQL other replicas' writes heard through
 * NOTIFY — each once, none of one's own twice — and heard again after the listening connection
 * was killed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { STORE_FACTORIES, TEST_PG_URL, type TestStore } from '../testing/stores.ts';
import type { Store, StoreChange } from './types.ts';

const waitUntil = async (what: string, ok: () => boolean, ms = 10_000): Promise<void> => {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, replicas: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    let b: Store;
    before(async () => {
      t = await factory();
      b = await t.replica();
    });
    after(async () => t.dispose());

    it('a lease has one holder; another takes it once it expired, or at once when given up', async () => {
      const a = t.store;
      assert.equal(await a.acquireLease('prune', 'server-a', 1000, 6000), true);
      assert.equal(await b.acquireLease('prune', 'server-b', 1001, 6000), false, 'held by A');
      assert.equal(await a.acquireLease('prune', 'server-a', 3000, 6000), true, 'A renews');
      assert.equal(await b.acquireLease('prune', 'server-b', 8999, 6000), false, "A's renewal runs to 9000");
      assert.deepEqual(await b.listLeases(), [{ name: 'prune', holder: 'server-a', expiresAt: 9000 }]);
      assert.equal(await b.acquireLease('prune', 'server-b', 9000, 6000), true, 'expired: B takes it');
      assert.equal(await a.acquireLease('prune', 'server-a', 9001, 6000), false, 'A, back, finds it taken');
      assert.equal(await a.acquireLease('federation-refresh', 'server-a', 9001, 6000), true, 'another job is another lease');
      await b.releaseLease('prune', 'server-a'); // not A's to give up: nothing changes
      assert.equal(await a.acquireLease('prune', 'server-a', 9002, 6000), false);
      await b.releaseLease('prune', 'server-b');
      assert.equal(await a.acquireLease('prune', 'server-a', 9003, 6000), true, 'given up: A takes it at once');
    });

    it('racing replicas: exactly one wins an expired lease', async () => {
      const wins = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? b : t.store).acquireLease('race', `server-${i}`, 50_000, 6000)));
      assert.equal(wins.filter(Boolean).length, 1);
    });

    it('announce tells this store’s listeners of a change no write made', async () => {
      const heard: StoreChange[] = [];
      const off = t.store.onChange((c) => heard.push(c));
      await t.store.announce('quarantine');
      off();
      assert.deepEqual(heard, [{ kind: 'quarantine' }]);
    });

    if (factory.name.startsWith('sqlite')) {
      it('SQLite: nothing to listen to (one process owns the file); the state is never reported live', async () => {
        const states: boolean[] = [];
        const stop = t.store.listen((live) => states.push(live));
        await new Promise((r) => setTimeout(r, 100));
        await stop();
        assert.deepEqual(states, []);
      });
      return;
    }

    it("PostgreSQL: another replica's committed writes arrive, each once, with the agent a ban revokes; one's own are not heard twice", async () => {
      const heard: StoreChange[] = [];
      const off = t.store.onChange((c) => heard.push(c));
      let live = false;
      const stop = t.store.listen((l) => (live = l));
      try {
        await waitUntil('the listener', () => live);
        const now = Date.now();
        const created = await b.createEntries(
          Array.from({ length: 50 }, (_, i) => ({
            spiffeId: `spiffe://r.test/w${i}`,
            parentId: 'spiffe://r.test/writ/agent/n',
            selectors: [`unix:uid:${i}`],
            x509SvidTtl: 3600,
            jwtSvidTtl: 300,
            dnsNames: [],
            federatesWith: [],
            admin: false,
            hint: '',
            expiresAt: null,
          })),
          now,
        );
        await b.appendPolicyRevision({ createdAt: now, createdBy: 't', comment: '', policies: {} }, 0);
        await b.putQuarantine({ spiffeId: 'spiffe://r.test/bad', reason: 'r', createdBy: 't', createdAt: now, expiresAt: null });
        const agent = {
          spiffeId: 'spiffe://r.test/writ/agent/n',
          nodeName: 'n',
          attestationType: 'join_token',
          selectors: [],
          serial: '01',
          expiresAt: now + 3_600_000,
          banned: false,
          createdAt: now,
          updatedAt: now,
        };
        await b.upsertAgent(agent); // an attestation: news to nobody
        await b.ackPolicies([{ spiffeId: agent.spiffeId, policyRevision: 1, quarantineVersion: 2, ackedAt: now }]);
        await b.upsertAgent({ ...agent, banned: true });
        await waitUntil('the ban', () => heard.some((c) => c.kind === 'agents'));
        assert.deepEqual(heard, [
          { kind: 'entries', parents: ['spiffe://r.test/writ/agent/n'] }, // 50 entries, one statement: one notification, with their agent
          { kind: 'policies' },
          { kind: 'quarantine' },
          { kind: 'agents', revoked: [agent.spiffeId] },
        ]);
        heard.length = 0;
        // An entry moved to another agent concerns both; a deletion its last one.
        const moved = { ...created[0]!, parentId: 'spiffe://r.test/writ/agent/m' };
        await b.updateEntry(moved.id, moved, now + 1);
        await b.deleteEntry(moved.id);
        await waitUntil('the move and the deletion', () => heard.length >= 2);
        assert.deepEqual(heard, [
          { kind: 'entries', parents: ['spiffe://r.test/writ/agent/m', 'spiffe://r.test/writ/agent/n'] },
          { kind: 'entries', parents: ['spiffe://r.test/writ/agent/m'] },
        ]);
        heard.length = 0;
        await t.store.removeQuarantine('spiffe://r.test/bad');
        await b.announce('quarantine');
        await waitUntil('the announcement', () => heard.length >= 2);
        await new Promise((r) => setTimeout(r, 100));
        assert.deepEqual(heard, [{ kind: 'quarantine' }, { kind: 'quarantine' }], "this store's own write once (from the store), then B's announcement");
      } finally {
        off();
        await stop();
      }
    });

    it("PostgreSQL: another replica's image writes arrive when the vulnerability events read them (new, names, index digest), not for a last-seen time", async () => {
      const heard: StoreChange[] = [];
      const off = t.store.onChange((c) => heard.push(c));
      let live = false;
      const stop = t.store.listen((l) => (live = l));
      try {
        await waitUntil('the listener', () => live);
        const now = Date.now();
        const image = {
          digest: `sha256:${'e7'.repeat(32)}`,
          configDigest: null,
          indexDigest: null,
          platform: null,
          names: ['registry.example/shop/web'],
          tags: [],
          layers: [],
          annotations: {},
          labels: {},
          created: null,
          firstSeen: now,
          lastSeen: now,
        };
        await b.recordImages([image], now);
        await waitUntil('the new image', () => heard.length >= 1);
        await b.recordImages([image], now + 1000); // admitted again: only its last-seen time moves
        await b.recordImages([{ ...image, indexDigest: `sha256:${'e8'.repeat(32)}` }], now + 2000);
        await waitUntil('the index digest', () => heard.length >= 2);
        await new Promise((r) => setTimeout(r, 100));
        assert.deepEqual(heard, [{ kind: 'images' }, { kind: 'images' }]);
      } finally {
        off();
        await stop();
      }
    });

    it('PostgreSQL: the listening connection killed, the state goes down and comes back, and later writes are heard', async () => {
      const states: boolean[] = [];
      const heard: StoreChange[] = [];
      const off = t.store.onChange((c) => heard.push(c));
      const stop = t.store.listen((l) => states.push(l));
      const c = new pg.Client({ connectionString: TEST_PG_URL });
      await c.connect();
      try {
        await waitUntil('the listener', () => states.at(-1) === true);
        const killed = await c.query('SELECT pg_terminate_backend(pid) AS k FROM pg_stat_activity WHERE application_name LIKE $1 AND pid <> pg_backend_pid()', [
          `writ-listen % writ_t_${process.pid}_%`,
        ]);
        assert.ok(killed.rows.length >= 1);
        await waitUntil('the loss', () => states.includes(false));
        await waitUntil('the reconnection', () => states.at(-1) === true && states.indexOf(false) < states.lastIndexOf(true));
        await b.putQuarantine({ spiffeId: 'spiffe://r.test/again', reason: 'r', createdBy: 't', createdAt: Date.now(), expiresAt: null });
        await waitUntil('the write after the reconnection', () => heard.some((h) => h.kind === 'quarantine'));
      } finally {
        await c.end();
        off();
        await stop();
      }
    });
  });
}

describe('PostgreSQL: a connection terminated in the middle of a transaction', () => {
  it('fails that transaction, not the process, and the next one runs', async () => {
    const { PostgresDriver } = await import('./postgres.ts');
    const driver = new PostgresDriver({ url: TEST_PG_URL });
    const killer = new pg.Client({ connectionString: TEST_PG_URL });
    await killer.connect();
    try {
      const failed = await driver
        .transaction(async (tx) => {
          const pid = (await tx.query('SELECT pg_backend_pid() AS pid'))[0]!['pid'];
          await killer.query('SELECT pg_terminate_backend($1)', [pid]);
          // The 'error' event arrives while no statement runs: the process must outlive it.
          await new Promise((r) => setTimeout(r, 300));
          await tx.query('SELECT 1');
        })
        .then(
          () => false,
          () => true,
        );
      assert.equal(failed, true, 'the transaction failed');
      assert.equal((await driver.transaction((tx) => tx.query('SELECT 1 AS one')))[0]!['one'], 1);
    } finally {
      await killer.end();
      await driver.close();
    }
  });
});

describe('PostgreSQL: connections terminated just as their clients go to waiting transactions', () => {
  it('fails the transaction that got a dead client, not the process; the next one runs', async () => {
    const { PostgresDriver } = await import('./postgres.ts');
    const { Worker } = await import('node:worker_threads');
    const marker = `handoff_${process.pid}`;
    const driver = new PostgresDriver({ url: TEST_PG_URL });
    // The killer runs on a thread of its own: this one is blocked while it strikes.
    const killer = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const pg = require(workerData.pg);
       const c = new pg.Client({ connectionString: workerData.url });
       c.connect().then(() => parentPort.postMessage('ready'));
       parentPort.on('message', (ms) => setTimeout(async () => {
         const r = await c.query("SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()", ['%' + workerData.marker + '%']);
         await c.end();
         parentPort.postMessage(r.rows[0].n);
       }, ms));`,
      { eval: true, workerData: { url: TEST_PG_URL, marker, pg: import.meta.resolve('pg').replace('file://', '') } },
    );
    try {
      await new Promise((r) => killer.once('message', r));
      // Every pool connection open and busy for 300 ms, and a transaction waiting for one of them.
      await Promise.all(Array.from({ length: 10 }, () => driver.query('SELECT pg_sleep(0.05)')));
      const sleeps = Array.from({ length: 10 }, () => driver.query(`SELECT pg_sleep(0.3) /* ${marker} */`).catch(() => undefined));
      const waiting = driver
        .transaction((tx) => tx.query('SELECT 1 AS one'))
        .then(
          () => 'committed',
          (err: { code?: string }) => err.code,
        );
      await new Promise((r) => setTimeout(r, 50));
      const killed = new Promise<number>((r) => killer.once('message', r));
      killer.postMessage(350);
      // Blocked past the sleeps' end and the kill: each socket then holds the last answer and the
      // FATAL together, and the pool hands the client on between the two.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 800);
      await Promise.all(sleeps);
      assert.equal(await killed, 10, 'the pool’s ten backends terminated');
      assert.equal(await waiting, 'ERR_STORE_UNAVAILABLE', 'the waiting transaction got a dead client: the database is unavailable');
      assert.equal((await driver.transaction((tx) => tx.query('SELECT 1 AS one')))[0]!['one'], 1, 'the pool reconnects');
    } finally {
      await killer.terminate();
      await driver.close();
    }
  });
});
