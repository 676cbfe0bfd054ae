import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PolicyEngine, parseAction } from './engine.ts';
import { parsePolicies } from './model.ts';

const TO = 'spiffe://td/ns/orders/sa/api';
const ENFORCE = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${TO}
  rules:
    - { name: web, effect: allow, from: [spiffe://td/ns/web/sa/front], actions: [{ methods: [GET] }] }
`;
const windowUntil = (t: number) => `apiVersion: writ.dev/v1
kind: LearningWindow
metadata: { name: learn-orders }
spec: { to: "spiffe://td/ns/orders/**", since: ${new Date(t - 1000).toISOString()}, until: ${new Date(t).toISOString()} }
`;

test('a learning window lets calls pass with reason LEARNING until its end, then the policy decides again', () => {
  let now = 1_000_000;
  const until = now + 60_000;
  const { policies } = parsePolicies(`${ENFORCE}---\n${windowUntil(until)}`, { now });
  assert.equal(policies[1]!.name, 'LearningWindow/learn-orders');
  assert.equal(policies[1]!.until, until);
  const e = new PolicyEngine(policies, { clock: () => now });
  const call = (from: string | undefined, action: string) => e.decide({ from, to: TO, action: parseAction(action) });
  assert.deepEqual(
    [call('spiffe://td/ns/other/sa/x', 'DELETE /v1/orders/1')].map((d) => [d.decision, d.allowed, d.reason]),
    [['audit-would-deny', true, 'LEARNING']],
  );
  const ok = call('spiffe://td/ns/web/sa/front', 'GET /v1/orders/1');
  assert.deepEqual([ok.decision, ok.reason, ok.rule?.name], ['allow', 'LEARNING', 'web']);
  assert.equal(call(undefined, 'GET /').reason, 'UNAUTHENTICATED', 'learning needs a caller identity');
  e.setQuarantine(['spiffe://td/ns/other/sa/x']);
  assert.equal(call('spiffe://td/ns/other/sa/x', 'GET /').reason, 'QUARANTINED', 'quarantine still wins');
  e.setQuarantine([]);
  now = until; // the window ends: the remembered LEARNING answers are forgotten
  const after = call('spiffe://td/ns/other/sa/x', 'DELETE /v1/orders/1');
  assert.deepEqual([after.decision, after.reason], ['deny', 'NO_MATCHING_ALLOW']);
  assert.equal(call('spiffe://td/ns/web/sa/front', 'GET /v1/orders/1').reason, 'ALLOW_RULE');
});

test('an ended window on an ungoverned destination leaves it default-deny, not audit', () => {
  const now = 5_000_000;
  const { policies } = parsePolicies(windowUntil(now - 1), { now, allowExpired: true });
  const d = new PolicyEngine(policies, { clock: () => now }).decide({ from: 'spiffe://td/a', to: TO, action: parseAction('GET /') });
  assert.deepEqual([d.decision, d.reason], ['deny', 'NO_MATCHING_ALLOW']);
});

test('spec.mode: learn on an AccessPolicy learns without an end; rule mode learn and a past window are refused', () => {
  const { policies } = parsePolicies(ENFORCE.replace('  rules:', '  mode: learn\n  rules:'));
  const d = new PolicyEngine(policies).decide({ from: 'spiffe://td/x', to: TO, action: parseAction('POST /') });
  assert.deepEqual([d.decision, d.allowed, d.reason], ['audit-would-deny', true, 'LEARNING']);
  assert.throws(() => parsePolicies(ENFORCE.replace('actions: [{ methods: [GET] }]', 'mode: learn')), /learn is for a whole policy/);
  assert.throws(() => parsePolicies(windowUntil(1000), { now: 2000 }), /spec.until is in the past/);
  assert.throws(() => parsePolicies(windowUntil(10_000).replace('until:', 'untl:'), { now: 0 }), /untl/);
});
