/** What the agent enforces: the last policy revision that compiled, and the quarantine with its break-glass identities. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { EnforcementState } from './enforcement-state.ts';

const TD = 'spiffe://fake.test';
const policy = (name: string, to: string, from: string): string => `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: ${name} }
spec:
  to: ${TD}/${to}
  rules: [{ effect: allow, from: ["${TD}/${from}"] }]
`;
const ORDERS = policy('orders', 'orders', 'web');
const BILLING = policy('billing', 'billing', 'orders');
const tcp = { kind: 'tcp', port: 443 } as const;

function state(): { e: EnforcementState; lines: string[] } {
  const lines: string[] = [];
  return { e: new EnforcementState({ clock: Date.now, log: pino({ level: 'info' }, { write: (s: string) => void lines.push(s) }) }), lines };
}

describe('EnforcementState', () => {
  it('a learning window in the set is enforced here and handed to the SDK services of its destination', () => {
    const { e } = state();
    const key = 'LearningWindow/learn-orders';
    const window = `apiVersion: writ.dev/v1\nkind: LearningWindow\nmetadata: { name: learn-orders }\nspec: { to: "${TD}/orders", until: ${new Date(Date.now() + 3_600_000).toISOString()} }\n`;
    assert.equal(e.loadPolicy(5, { orders: ORDERS, [key]: window }), true);
    const d = e.engine.decide({ from: `${TD}/stranger`, to: `${TD}/orders`, action: tcp });
    assert.deepEqual([d.allowed, d.reason], [true, 'LEARNING']);
    assert.deepEqual(e.policyFor([`${TD}/orders`]).documents.sort(), [ORDERS, window].sort(), 'an SDK service decides with the window too');
    assert.deepEqual(e.policyFor([`${TD}/billing`]).documents, []);
  });

  it('denies everything until a policy compiles; a revision that does not compile is refused and the last good one stays', () => {
    const { e, lines } = state();
    assert.equal(e.engine.decide({ from: `${TD}/web`, to: `${TD}/orders`, action: tcp }).reason, 'NO_POLICY_LOADED');
    assert.equal(e.loadPolicy(3, { orders: ORDERS }), true);
    assert.equal(e.engine.decide({ from: `${TD}/web`, to: `${TD}/orders`, action: tcp }).decision, 'allow');
    assert.equal(e.loadPolicy(4, { orders: 'kind: [' }), false);
    assert.equal(e.engine.revision, 3, 'still the last good revision');
    assert.equal(e.engine.decide({ from: `${TD}/web`, to: `${TD}/orders`, action: tcp }).decision, 'allow');
    assert.ok(lines.some((l) => l.includes('does not compile')));
  });

  it('a quarantine denies its identities except to break-glass callers, and survives a new policy revision', () => {
    const { e } = state();
    e.loadPolicy(1, { orders: ORDERS });
    e.setQuarantine({ version: 'q1', ids: [`${TD}/orders`], breakGlass: [`${TD}/web`] });
    assert.deepEqual([...e.quarantined], [`${TD}/orders`]);
    assert.equal(e.engine.decide({ from: `${TD}/web`, to: `${TD}/orders`, action: tcp }).decision, 'allow', 'break-glass');
    assert.equal(e.engine.decide({ from: `${TD}/api`, to: `${TD}/orders`, action: tcp }).reason, 'QUARANTINED');
    e.loadPolicy(2, { orders: ORDERS, billing: BILLING });
    assert.equal(e.engine.decide({ from: `${TD}/api`, to: `${TD}/orders`, action: tcp }).reason, 'QUARANTINED', 'still quarantined at revision 2');
    assert.equal(e.engine.decide({ from: `${TD}/web`, to: `${TD}/orders`, action: tcp }).decision, 'allow', 'break-glass kept');
    e.setQuarantine({ version: 'q2', ids: [], breakGlass: [] });
    assert.equal(e.engine.decide({ from: `${TD}/api`, to: `${TD}/orders`, action: tcp }).reason, 'NO_MATCHING_ALLOW', 'lifted');
  });

  it('policyFor: the documents governing the given destinations, with the quarantine', () => {
    const { e } = state();
    e.loadPolicy(5, { orders: ORDERS, billing: BILLING });
    e.setQuarantine({ version: 'q', ids: [`${TD}/api`], breakGlass: [`${TD}/ops`] });
    assert.deepEqual(e.policyFor([`${TD}/billing`]), { revision: 5, documents: [BILLING], quarantine: [`${TD}/api`], breakGlass: [`${TD}/ops`] });
    assert.deepEqual(e.policyFor([`${TD}/web`]).documents, []);
  });
});
