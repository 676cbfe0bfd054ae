/** docs/learning.md stays true: its ```sh blocks run as written (see guide.ts), observe -> propose -> shadow -> enforce. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { runGuide } from './guide.ts';

it('the learning guide runs as written: learn, propose, shadow with hits, promote, an unobserved caller refused', async () => {
  const g = await runGuide('docs/learning.md', { ports: [7481, 7482, 7483, 7484, 7485, 7486], minBlocks: 6, timeoutMs: 180_000 });
  try {
    const logs = g.logs(['server.log', 'agent.log', 'orders.log', 'cart.log', 'debug.log'].map((f) => `writ-learn/${f}`));
    assert.equal(g.code, 0, `the guide failed\nstdout:\n${g.out}\nstderr:\n${g.err}\n${logs}`);
    assert.match(g.out, /^\{"code":"NO_MATCHING_ALLOW","decisionId":"[^"]+"\}$/m, 'the cart refused before learning');
    assert.match(g.out, /^orders: POST \/v1\/orders\/42\/pay$/m, 'allowed while learning');
    assert.match(g.out, /^spiffe:\/\/example\.org\/ns\/orders\/sa\/api\s+\S+Z\s+learning\s+2\s+5\s+5$/m, 'learn list');
    assert.match(g.out, /^ {4}- name: example\.org\/ns\/shop\/sa\/\*$/m, 'the siblings grouped');
    assert.match(g.out, /^ {12}- \/v1\/orders\/\*\/pay$/m, 'the order id generalised');
    assert.match(g.err, /^allows 100% of the 5 requests seen \(5 of 5 edges\)$/m);
    assert.match(g.out, /^\+.*spiffe:\/\/example\.org\/ns\/shop\/sa\/\*/m, 'the diff');
    assert.match(g.out, /^orders: GET \/v1\/orders\/43$/m);
    assert.match(g.out, /^example\.org\/ns\/shop\/sa\/\*\s+allow\s+1\s+0\s+0$/m, 'the shadow rule hit');
    assert.match(g.out, /^\(no rule matched\)\s+-\s+0\s+1\s+0$/m, 'the unobserved caller would be denied');
    assert.match(g.out, /^orders: GET \/v1\/orders\/44$/m, 'an observed caller passes once enforced');
    assert.equal([...g.out.matchAll(/^\{"code":"NO_MATCHING_ALLOW","decisionId":"[^"]+"\}$/gm)].length, 2, 'and the unobserved one is refused');
    assert.match(g.err, /ERR_NO_SHADOW_POLICY/);
    assert.match(g.out, /^exit 1: nothing to promote$/m);
  } finally {
    await g.finish();
  }
});
