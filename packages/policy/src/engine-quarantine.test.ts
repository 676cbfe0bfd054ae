import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PolicyEngine } from './engine.ts';
import { parsePolicies } from './model.ts';

const TD = 'spiffe://q.test';
const action = { kind: 'http', method: 'GET', path: '/x' } as const;

describe('quarantine comes first', () => {
  it('is QUARANTINED with no policy loaded yet, from either side (enforcement points close connections on that reason alone)', () => {
    const e = new PolicyEngine(undefined);
    e.setQuarantine([`${TD}/bad`]);
    assert.equal(e.decide({ from: `${TD}/bad`, to: `${TD}/srv`, action }).reason, 'QUARANTINED');
    assert.equal(e.decide({ from: `${TD}/web`, to: `${TD}/bad`, action }).reason, 'QUARANTINED');
    assert.equal(e.decide({ from: `${TD}/web`, to: `${TD}/srv`, action }).reason, 'NO_POLICY_LOADED');
  });

  it('a caller with no identity calling a quarantined service is QUARANTINED; to anyone else UNAUTHENTICATED', () => {
    const { policies } = parsePolicies(`apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: p }
spec:
  to: ${TD}/srv
  rules:
    - { effect: allow, from: ["${TD}/**"] }
`);
    const e = new PolicyEngine(policies);
    e.setQuarantine([`${TD}/srv`]);
    assert.equal(e.decide({ from: undefined, to: `${TD}/srv`, action }).reason, 'QUARANTINED');
    assert.equal(e.decide({ from: undefined, to: `${TD}/other`, action }).reason, 'UNAUTHENTICATED');
  });

  it('break-glass callers pass the quarantine also with no policy loaded (and then meet NO_POLICY_LOADED)', () => {
    const e = new PolicyEngine(undefined, { breakGlass: [`${TD}/ops`] });
    e.setQuarantine([`${TD}/srv`]);
    assert.equal(e.decide({ from: `${TD}/ops`, to: `${TD}/srv`, action }).reason, 'NO_POLICY_LOADED');
  });
});
