/**
 * docs/getting-started.md stays true: its ```sh blocks run as written (see guide.ts).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { runGuide } from './guide.ts';

it('the getting-started guide runs as written: an allowed and a denied call, a policy, a quarantine, and nothing left running', async () => {
  // The ports the guide says it uses.
  const g = await runGuide('docs/getting-started.md', { ports: [8443, 8080, 9443, 9000], minBlocks: 8, timeoutMs: 240_000 });
  const { code, out, err } = g;
  try {
    const logs = g.logs(['server.log', 'agent.log', 'orders-proxy.log', 'web-proxy.log'].map((f) => `writ-tour/${f}`));
    assert.equal(code, 0, `the guide failed\nstdout:\n${out}\nstderr:\n${err}\n${logs}`);
    // What the guide says the reader sees.
    assert.match(out, /my-svid\/svid\.pem: OK/);
    assert.match(out, /^\{"code":"NO_POLICY_LOADED","decisionId":"[^"]+"\}$/m, 'the call before any policy is a 403 with its decision id');
    assert.match(out, /^\{"code":"NO_MATCHING_ALLOW","decisionId":"[^"]+"\}$/m, 'the DELETE the policy does not allow');
    assert.match(out, /orders: GET \/v1\/orders\/7 from spiffe:\/\/example\.org\/ns\/web\/sa\/frontend/);
    assert.match(out, /2 passed, 0 failed/);
    assert.match(out, /^revision 1; changed: orders-api; tests 2 passed, 0 failed$/m, 'policy apply ran the PolicyTest cases in orders.yaml');
    assert.match(err, /### block 7[^#]*acknowledged by all 1 live agent\(s\) in [\d.]+s\n/, 'policy apply --wait returned once the agent enforced revision 1');
    assert.match(out, /^exit \d+: refused$/m, 'the quarantined caller is cut off once quarantine add --wait returns');
    assert.match(err, /lifted the quarantine of spiffe:\/\/example\.org\/ns\/web\/sa\/frontend\n(?:waiting for .*\n)?acknowledged by all 1 live agent/);
    assert.match(out, /^DENY \(NO_MATCHING_ALLOW\) at policy revision 1$/m);
    assert.match(out, /exit 3: denied/);
    assert.match(out, /spiffe:\/\/example\.org\/ns\/web\/sa\/frontend.*stolen token/, 'quarantine list');
  } finally {
    // The guide's own clean-up step stops everything it started.
    await g.finish();
  }
});
