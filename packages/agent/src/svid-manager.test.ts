/** SVID rotation rounds against a fake CA: what a call made while a round runs gets. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { csrFor, generateKey, keyPem } from './keys.ts';
import type { ServerApi } from './server-client.ts';
import type { AgentState } from './state.ts';
import { SvidManager } from './svid-manager.ts';
import { FakeCa, fakeEntry } from './testing/fake-server.ts';

describe('SVID rounds', () => {
  it('an entry that arrives while a round waits on the server is signed by a round right after it, not left to the next tick', async () => {
    const ca = new FakeCa('fake.test');
    const agentKey = generateKey();
    const state: AgentState = {
      spiffeId: 'spiffe://fake.test/writ/agent/a',
      svidPem: ca.sign('spiffe://fake.test/writ/agent/a', csrFor(agentKey)),
      keyPem: keyPem(agentKey.key),
      revision: 1,
      bundlesVersion: 'v1',
      bundle: undefined,
      federated: {},
      entries: { e1: fakeEntry('e1', 'spiffe://fake.test/one', ['x']) },
      svids: {},
    };
    // The server answers the first batch only when the test says so.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const batches: string[][] = [];
    const client = {
      call: async (_method: string, _path: string, body?: unknown) => {
        const reqs = (body as { requests: Array<{ entryId: string; csr: string }> }).requests;
        batches.push(reqs.map((r) => r.entryId));
        if (batches.length === 1) await held;
        return {
          svids: reqs.map((r) => {
            const e = state.entries[r.entryId]!;
            return { entryId: e.id, spiffeId: e.spiffeId, svid: ca.sign(e.spiffeId, r.csr), expiresAt: new Date(Date.now() + 3600_000).toISOString() };
          }),
        };
      },
    } as unknown as ServerApi;
    const m = new SvidManager({
      client,
      clock: Date.now,
      log: pino({ level: 'silent' }),
      trust: () => ({ trustDomain: 'fake.test', x509Authorities: [ca.cert], jwtAuthorities: new Map() }),
      renewed: () => undefined,
      stored: () => undefined,
    });
    const first = m.rotate(state);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(batches, [['e1']], 'the first round is at the server');
    state.entries['e2'] = fakeEntry('e2', 'spiffe://fake.test/two', ['x']); // a sync brought a new entry
    const second = m.rotate(state);
    const third = m.rotate(state);
    release();
    await Promise.all([first, second, third]);
    assert.deepEqual(batches, [['e1'], ['e2']], 'one more round, shared by the calls made meanwhile, signed the new entry');
    assert.ok(state.svids['e2'], 'the new entry has its SVID when the call resolves');
  });
});
