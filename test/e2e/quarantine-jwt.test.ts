/** A JWT-SVID minted before its subject was quarantined is refused by the agent's ValidateJWTSVID. */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { WorkloadClient } from '@writ/sdk';
import { serverWithAgent, waitFor, writ, type AgentProcess, type ServerProcess } from './helpers.ts';

let srv: ServerProcess;
let agent: AgentProcess;
let stop: () => Promise<void>;
before(async () => {
  ({ srv, agent, stop } = await serverWithAgent('spiffe://e2e.test/ns/api', 'qj'));
});
after(() => stop?.());

it('ValidateJWTSVID refuses a still-unexpired token whose subject is quarantined, and accepts it again once lifted', async () => {
  const client = new WorkloadClient(`unix://${agent.socket}`);
  try {
    const minted = await writ(srv, ['svid', 'mint-jwt', '--spiffe-id', 'spiffe://e2e.test/ns/stolen', '--audience', 'spiffe://e2e.test/ns/api']);
    assert.equal(minted.code, 0, minted.stderr);
    const jwt = minted.stdout.trim();
    const valid = await waitFor('the agent to validate', () => client.validateJwtSvid(jwt, 'spiffe://e2e.test/ns/api'));
    assert.equal(valid.spiffeId, 'spiffe://e2e.test/ns/stolen');
    assert.equal((await writ(srv, ['quarantine', 'add', 'spiffe://e2e.test/ns/stolen', '--reason', 'token leaked'])).code, 0);
    const refused = await waitFor('the quarantine to reach the agent', () =>
      client.validateJwtSvid(jwt, 'spiffe://e2e.test/ns/api').then(
        () => undefined,
        (err: Error) => err,
      ),
    );
    assert.match(refused.message, /quarantined/);
    assert.equal((await writ(srv, ['quarantine', 'remove', 'spiffe://e2e.test/ns/stolen'])).code, 0);
    await waitFor('the lift to reach the agent', () => client.validateJwtSvid(jwt, 'spiffe://e2e.test/ns/api'));
  } finally {
    client.close();
  }
});
