/** The policy set agents receive also holds admission documents (AdmissionPolicy/NAME, ...): the agent enforces the access policies beside them and ignores them. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import pino from 'pino';
import { formatBundleJson } from '@writ/spiffe';
import { Agent } from './agent.ts';
import { FakeServer } from './testing/fake-server.ts';

const ACCESS = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: spiffe://fake.test/ns/orders
  rules: [{ effect: allow, from: ["spiffe://fake.test/ns/web"] }]
`;
const ADMISSION = `apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: orders }
spec:
  namespaces: [prod]
  podSecurity: { level: restricted }
`;
const EXCEPTION = `apiVersion: writ.dev/v1
kind: AdmissionException
metadata: { name: legacy }
spec: { namespaces: [prod], controls: [privileged], reason: x, expires: 2030-01-01T00:00:00Z }
`;

const dir = mkdtempSync(join(tmpdir(), 'writ-agent-admission-'));
after(() => rmSync(dir, { recursive: true, force: true }));

it('takes a revision with admission documents, enforces its access policies, hands SDKs only those', async () => {
  const server = new FakeServer();
  const lines: string[] = [];
  let served = 0;
  server.answer.set('GET /v1/agent/sync', async () => {
    // Answer the first poll at once, then hold the long poll like the real server.
    if (served++ > 0) await new Promise((r) => setTimeout(r, 500));
    return {
      revision: server.revision,
      full: true,
      entries: [],
      removed: [],
      bundlesVersion: 'v1',
      bundle: formatBundleJson(server.ca.bundle),
      federatedBundles: {},
      policy: { revision: 7, policies: { orders: ACCESS, 'AdmissionPolicy/orders': ADMISSION, 'AdmissionException/legacy': EXCEPTION } },
    };
  });
  const agent = new Agent({
    serverUrl: 'https://fake.invalid',
    caPem: server.ca.pem,
    dataDir: dir,
    log: pino({ level: 'debug' }, { write: (s: string) => void lines.push(s) }),
    client: server,
    syncWaitSeconds: 5,
    joinToken: server.joinToken('node-a'),
  });
  try {
    await agent.start();
    const end = Date.now() + 10_000;
    while (agent.engine.revision !== 7 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    assert.equal(agent.engine.revision, 7, lines.join(''));
    assert.deepEqual(
      agent.engine.policies.map((p) => p.name),
      ['orders'],
    );
    assert.equal(
      agent.engine.decide({ from: 'spiffe://fake.test/ns/web', to: 'spiffe://fake.test/ns/orders', action: { kind: 'tcp', port: 1 } }).decision,
      'allow',
    );
    assert.deepEqual(agent.policyFor(['spiffe://fake.test/ns/orders']).documents, [ACCESS]);
    assert.ok(!lines.some((l) => l.includes('does not compile')), 'the revision was refused');
  } finally {
    agent.stop();
  }
});
