/**
 * k8s_psat node attestation: a token signed by a test key, its JWKS served by a local HTTPS server,
 * the Writ server and agent as real processes; and an agent that re-attests by itself after being
 * offline longer than its SVID lives.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OID, buildName, issueCertificate, toPem } from '@writ/spiffe';
import { WorkloadClient } from '@writ/sdk';
import { cleanup, run, startAgentProcess, startServerProcess, waitFor, writ, type AgentProcess, type ServerProcess } from './helpers.ts';

const saKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
const KID = 'test-sa-key';
const ISS = 'https://kubernetes.default.svc.cluster.local';
const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');

function psat(over: Record<string, unknown> = {}, key = saKey.privateKey): string {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    aud: ['writ-server'],
    exp: now + 3600,
    iat: now,
    nbf: now,
    iss: ISS,
    sub: 'system:serviceaccount:writ:writ-agent',
    'kubernetes.io': {
      namespace: 'writ',
      serviceaccount: { name: 'writ-agent', uid: randomUUID() },
      pod: { name: 'writ-agent-x7k2p', uid: randomUUID() },
      node: { name: 'node-7', uid: randomUUID() },
    },
    ...over,
  };
  const input = `${b64({ alg: 'RS256', kid: KID, typ: 'JWT' })}.${b64(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

let dir: string;
let srv: ServerProcess;
let agent: AgentProcess | undefined;
const tls = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const now = Date.now();
const tlsCert = issueCertificate(
  {
    subject: buildName([[OID.commonName, 'kube-apiserver']]),
    spki: tls.publicKey.export({ format: 'der', type: 'spki' }),
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
    ca: true,
    uris: [],
    ipAddresses: [Buffer.from([127, 0, 0, 1])],
  },
  { cert: undefined, signer: { key: tls.privateKey, keyType: 'ec-p256' } },
);
const jwks = createServer({ key: tls.privateKey.export({ format: 'pem', type: 'pkcs8' }), cert: toPem('CERTIFICATE', tlsCert.der) }, (_req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ keys: [{ ...saKey.publicKey.export({ format: 'jwk' }), kid: KID, use: 'sig', alg: 'RS256' }] }));
  return undefined;
});

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-psat-'));
  await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', () => r()));
  writeFileSync(join(dir, 'apiserver-ca.pem'), toPem('CERTIFICATE', tlsCert.der));
  writeFileSync(
    join(dir, 'writ.yaml'),
    [
      'trustDomain: e2e.test',
      'x509SvidTtl: 4s',
      'k8sPsat:',
      '  c1:',
      `    jwksUrl: https://127.0.0.1:${(jwks.address() as AddressInfo).port}/openid/v1/jwks`,
      `    jwksCaFile: ${join(dir, 'apiserver-ca.pem')}`,
      `    issuer: ${ISS}`,
      '    serviceAccounts: ["writ:writ-agent"]',
      '',
    ].join('\n'),
  );
  srv = await startServerProcess({ args: ['--config', join(dir, 'writ.yaml')], restartable: true });
});

after(async () => {
  await agent?.stop();
  await srv?.stop();
  jwks.close();
  if (srv) cleanup(srv.dataDir);
  if (agent) cleanup(agent.dataDir);
  cleanup(dir);
});

async function attest(body: Record<string, unknown>): Promise<{ status: string; body: Record<string, unknown> }> {
  const req = await run('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', '/dev/null', '-subj', '/CN=x']);
  assert.equal(req.code, 0, req.stderr);
  const csr = req.stdout;
  const r = await run('curl', [
    '-sS',
    '--cacert',
    join(srv.dataDir, 'bundle.pem'),
    '-H',
    'content-type: application/json',
    '-d',
    JSON.stringify({ cluster: 'c1', csr, ...body }),
    '-w',
    '\n%{http_code}',
    `${srv.url}/v1/agent/attest/k8s-psat`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  const status = lines.pop()!;
  return { status, body: JSON.parse(lines.join('\n')) };
}

describe('k8s_psat node attestation', () => {
  it('accepts a projected token signed by the cluster key and derives the agent ID and selectors from its claims', async () => {
    const ok = await attest({ token: psat() });
    assert.equal(ok.status, '201', JSON.stringify(ok.body));
    assert.equal(ok.body['spiffeId'], 'spiffe://e2e.test/writ/agent/k8s_psat/c1/node-7');
    assert.deepEqual(ok.body['selectors'], [
      'k8s_psat:cluster:c1',
      'k8s_psat:agent_ns:writ',
      'k8s_psat:agent_sa:writ-agent',
      'k8s_psat:agent_node_name:node-7',
      'k8s_psat:agent_pod_name:writ-agent-x7k2p',
    ]);
  });

  const refusals: Array<[string, Record<string, unknown>, string, string]> = [
    ['another audience', { token: psat({ aud: ['kubernetes'] }) }, '401', 'audience'],
    ['an expired token', { token: psat({ exp: Math.floor(Date.now() / 1000) - 10 }) }, '401', 'expired'],
    ['a token signed by another key', { token: psat({}, otherKey.privateKey) }, '401', 'signature'],
    ['another issuer', { token: psat({ iss: 'https://evil.example' }) }, '401', 'issuer'],
    [
      'a service account not allowed to attest',
      { token: psat({ 'kubernetes.io': { namespace: 'default', serviceaccount: { name: 'default' }, node: { name: 'node-7' } } }) },
      '403',
      'may not attest',
    ],
    ['a token not bound to a node', { token: psat({ 'kubernetes.io': { namespace: 'writ', serviceaccount: { name: 'writ-agent' } } }) }, '401', 'node'],
    ['an unknown cluster', { token: psat(), cluster: 'c9' }, '401', 'not configured'],
    ['garbage', { token: 'not.a.jwt' }, '401', 'k8s_psat'],
  ];
  for (const [what, body, status, words] of refusals) {
    it(`refuses ${what}`, async () => {
      const r = await attest(body);
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.match(String(r.body['message']), new RegExp(words));
    });
  }

  it('an agent attests with its token file, and re-attests by itself after an outage longer than its SVID life', async () => {
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, psat());
    const adir = mkdtempSync(join(tmpdir(), 'writ-psat-agent-'));
    agent = await startAgentProcessWithPsat(srv, adir, tokenFile);
    assert.ok(agent.logs.some((l) => l.includes('k8s_psat/c1/node-7')));
    const show = await writ(srv, ['agent', 'show', 'spiffe://e2e.test/writ/agent/k8s_psat/c1/node-7', '-o', 'json']);
    assert.equal(show.code, 0, show.stderr);
    const shown = JSON.parse(show.stdout);
    assert.equal(shown.attestationType, 'k8s_psat');
    // Offline until the agent's SVID (4 s of life) has expired: a wait on its expiry, not a fixed sleep.
    const expiresAt = Date.parse(shown.expiresAt);
    assert.ok(Number.isFinite(expiresAt), show.stdout);
    await srv.stop();
    await waitFor('the agent SVID to expire', async () => (Date.now() > expiresAt + 1000 ? true : undefined), 30_000);
    srv = await srv.startAgain();
    const created = await writ(srv, [
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://e2e.test/ns/on-psat-node',
      '--parent-id',
      'spiffe://e2e.test/writ/agent/k8s_psat/c1/node-7',
      '--selector',
      'unix:uid:0',
    ]);
    assert.equal(created.code, 0, created.stderr);
    const c = new WorkloadClient(`unix://${agent.socket}`);
    await waitFor(
      'an SVID through the re-attested agent',
      async () => ((await c.fetchX509Context()).svids.some((s) => s.spiffeId === 'spiffe://e2e.test/ns/on-psat-node') ? true : undefined),
      30_000,
    );
    c.close();
    assert.ok(agent.logs.filter((l) => l.includes('"attested to the server"')).length >= 2, 'attested twice');
  });
});

async function startAgentProcessWithPsat(server: ServerProcess, dataDir: string, tokenFile: string): Promise<AgentProcess> {
  return startAgentProcess(server, { dataDir, extraArgs: ['--psat-cluster', 'c1', '--psat-token-file', tokenFile] });
}
