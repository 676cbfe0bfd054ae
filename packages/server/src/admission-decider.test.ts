/**
 * The decider never fails open: a store slow past the budget (at start, or right after an apply)
 * denies in an enforce namespace, or judges by the set it read before.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { createAdmissionDecider } from './admission.ts';
import { sqliteTestStore } from './testing/stores.ts';
import type { AdmissionInput } from './api/admission-routes.ts';

const POLICY = `apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: prod }
spec:
  namespaces: [prod]
  mode: enforce
  podSecurity: { level: baseline }
`;
const privileged: AdmissionInput = {
  uid: 'u1',
  group: '',
  version: 'v1',
  kind: 'Pod',
  resource: 'pods',
  namespace: 'prod',
  name: 'p',
  operation: 'CREATE',
  object: {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'p', namespace: 'prod' },
    spec: { containers: [{ name: 'c', image: 'nginx', securityContext: { privileged: true } }] },
  },
  oldObject: null,
  subResource: '',
  dryRun: false,
};

describe('the admission decider with a slow store', async () => {
  const ts = await sqliteTestStore();
  after(() => ts.dispose());
  const store = ts.store;
  let hang = false;
  const real = store.getPolicyRevision.bind(store);
  // A store that stops answering (a stalled connection): reads never settle while `hang` is set.
  (store as { getPolicyRevision: typeof store.getPolicyRevision }).getPolicyRevision = (n?: number) => (hang ? new Promise(() => undefined) : real(n));
  const decider = createAdmissionDecider({ store, clock: Date.now, log: pino({ level: 'silent' }) });
  const within = (ms: number): AbortSignal => AbortSignal.timeout(ms);

  it('with no set ever read, the budget ending is a deny, from decide() and from the backstop', async () => {
    hang = true;
    const v = await decider.decide(privileged, within(100), 'validate');
    assert.equal(v.allowed, false);
    assert.match(v.message, /within the decision budget/);
    const b = decider.overBudget(privileged, 100);
    assert.equal(b.allowed, false, 'the backstop does not take "no policies read" for "no policies"');
    hang = false;
  });

  it('a read that never settled is given up: once the store answers again, the policies are read', async () => {
    await store.appendPolicyRevision({ createdAt: Date.now(), createdBy: 't', comment: '', policies: { 'AdmissionPolicy/prod': POLICY } }, 0);
    // The hung read holds until the decider gives up on it (its own timeout); then the next review reads again.
    let v = await decider.decide(privileged, within(2000), 'validate');
    for (const end = Date.now() + 20_000; v.policies.length === 0 && Date.now() < end; ) {
      await new Promise((r) => setTimeout(r, 100));
      v = await decider.decide(privileged, within(2000), 'validate');
    }
    assert.equal(v.allowed, false);
    assert.deepEqual(v.policies, ['prod'], v.message);
  });

  it('right after an apply, a store that hangs leaves the previous set in force: still denied', async () => {
    assert.equal((await decider.decide(privileged, within(2000), 'validate')).allowed, false, 'the policy is read and enforced');
    const rev = (await real())!;
    hang = true;
    await store.appendPolicyRevision(
      {
        createdAt: Date.now(),
        createdBy: 't',
        comment: 'another',
        policies: { ...rev.policies, 'AdmissionPolicy/x': POLICY.replace('name: prod', 'name: x') },
      },
      rev.revision,
    );
    const v = await decider.decide(privileged, within(150), 'validate');
    assert.equal(v.allowed, false, v.message);
    assert.deepEqual(v.policies, ['prod']);
    assert.equal(decider.overBudget(privileged, 150).allowed, false);
    hang = false;
  });
});
