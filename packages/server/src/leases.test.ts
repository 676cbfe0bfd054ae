/** The lease service over two replicas' stores (one database): one runs each job, another takes over when the holder dies or stops. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { Leases } from './leases.ts';
import { STORE_FACTORIES, type TestStore } from './testing/stores.ts';
import type { Store } from './store/types.ts';

for (const factory of STORE_FACTORIES) {
  describe(`job leases: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    let b: Store;
    let now = 1_000_000;
    const clock = (): number => now;
    const log = pino({ level: 'silent' });
    before(async () => {
      t = await factory();
      b = await t.replica();
    });
    after(async () => t.dispose());

    it('a job runs on one replica only; when its holder dies, the other runs it once the lease ran out', async () => {
      const a1 = new Leases({ store: t.store, holder: 'server-a', clock, log });
      const b1 = new Leases({ store: b, holder: 'server-b', clock, log });
      const ran: string[] = [];
      assert.equal(await a1.runOnce('prune', () => void ran.push('a')), true);
      assert.equal(await b1.runOnce('prune', () => void ran.push('b')), false);
      now += 2000;
      await Promise.all([a1.renew(), b1.renew()]);
      await a1.runOnce('prune', () => void ran.push('a'));
      await b1.runOnce('prune', () => void ran.push('b'));
      assert.deepEqual(ran, ['a', 'a']);
      // A dies (no more renewals): B's tries fail until the lease runs out, then B runs the job.
      now += 5999;
      await b1.renew();
      assert.equal(b1.held('prune'), false);
      now += 1;
      await b1.renew();
      assert.deepEqual(b1.holding(), ['prune']);
      await b1.runOnce('prune', () => void ran.push('b'));
      assert.deepEqual(ran, ['a', 'a', 'b']);
      assert.equal(a1.held('prune'), false, "A's own view ran out too: it would not run the job if it came back unrenewed");
      await b1.close();
    });

    it('a replica that stops gives its leases up: the other takes them at its next renewal, not at expiry', async () => {
      const a2 = new Leases({ store: t.store, holder: 'server-a2', clock, log });
      const b2 = new Leases({ store: b, holder: 'server-b2', clock, log });
      assert.equal(await a2.runOnce('federation-refresh', () => undefined), true);
      b2.want('federation-refresh');
      await b2.renew();
      assert.equal(b2.held('federation-refresh'), false);
      await a2.close();
      await b2.renew();
      assert.equal(b2.held('federation-refresh'), true);
      assert.deepEqual(
        (await b.listLeases()).filter((l) => l.name === 'federation-refresh').map((l) => l.holder),
        ['server-b2'],
      );
      await b2.close();
    });
  });
}
