/**
 * k8s_psat node attestation: a token signed by a test key, its JWKS served by a local HTTPS server,
 * the Writ server and agent as real processes; and an agent that re-attests by itself after being
 * offline longer than its SVID lives. A second HTTPS server answers like the API server's
 * /openid/v1/jwks without anonymous discovery: 401 with a Status body without a bearer token it
 * knows, 403 for a token whose service account may not read it, the key set only for the right one.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
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

function psat(over: Record<string, unknown> = {}, key = saKey.privateKey, kid = KID): string {
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
  const input = `${b64({ alg: 'RS256', kid, typ: 'JWT' })}.${b64(claims)}`;
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

// The API server's /openid/v1/jwks when anonymous discovery is off. Tokens it knows: the reader's
// (bound to system:service-account-issuer-discovery), one of a service account without that binding.
const TOKENS = { reader: 'reader-token-1', other: 'other-sa-token' };
const rotatedKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
const authHeaders: Array<string | undefined> = [];
const apiKeys = [{ ...saKey.publicKey.export({ format: 'jwk' }), kid: KID, use: 'sig', alg: 'RS256' }];
const status = (code: number, reason: string, message: string): string =>
  JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(code === 403 ? { details: {} } : {}), code });
const apiserver = createServer({ key: tls.privateKey.export({ format: 'pem', type: 'pkcs8' }), cert: toPem('CERTIFICATE', tlsCert.der) }, (req, res) => {
  authHeaders.push(req.headers.authorization);
  const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
  res.setHeader('content-type', 'application/json');
  if (bearer !== TOKENS.reader && bearer !== TOKENS.other) return void res.writeHead(401).end(status(401, 'Unauthorized', 'Unauthorized'));
  if (bearer === TOKENS.other)
    return void res.writeHead(403).end(status(403, 'Forbidden', 'forbidden: User "system:serviceaccount:writ-system:other" cannot get path "/openid/v1/jwks"'));
  if (req.method !== 'GET' || req.url !== '/openid/v1/jwks')
    return void res.writeHead(404).end(status(404, 'NotFound', 'the server could not find the requested resource'));
  res.setHeader('content-type', 'application/jwk-set+json');
  res.end(JSON.stringify({ keys: apiKeys }));
});

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-psat-'));
  await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', () => r()));
  await new Promise<void>((r) => apiserver.listen(0, '127.0.0.1', () => r()));
  const apiUrl = `https://127.0.0.1:${(apiserver.address() as AddressInfo).port}/openid/v1/jwks`;
  writeFileSync(join(dir, 'reader.token'), `${TOKENS.reader}\n`);
  writeFileSync(join(dir, 'other.token'), TOKENS.other);
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
      ...[
        ['authed', 'reader.token'],
        ['anonymous', undefined],
        ['forbidden', 'other.token'],
      ].flatMap(([name, tokenFile]) => [
        `  ${name}:`,
        `    jwksUrl: ${apiUrl}`,
        `    jwksCaFile: ${join(dir, 'apiserver-ca.pem')}`,
        ...(tokenFile ? [`    jwksTokenFile: ${join(dir, tokenFile)}`] : []),
        `    issuer: ${ISS}`,
      ]),
      '',
    ].join('\n'),
  );
  srv = await startServerProcess({ args: ['--config', join(dir, 'writ.yaml')], restartable: true });
});

after(async () => {
  await agent?.stop();
  await srv?.stop();
  jwks.close();
  apiserver.close();
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

  it('fetches the JWKS from an API server that wants a bearer token with the token in jwksTokenFile, and reads the file again at the next fetch (rotation)', async () => {
    authHeaders.length = 0;
    const ok = await attest({ cluster: 'authed', token: psat() });
    assert.equal(ok.status, '201', JSON.stringify(ok.body));
    assert.equal(ok.body['spiffeId'], 'spiffe://e2e.test/writ/agent/k8s_psat/authed/node-7');
    assert.deepEqual(authHeaders, [`Bearer ${TOKENS.reader}`], 'one fetch, the token from the file without its newline');
    // The kubelet rotates the token and the cluster rotates its signing key: a token with the new
    // kid makes the server fetch again, with the token the file holds now.
    TOKENS.reader = 'reader-token-2';
    writeFileSync(join(dir, 'reader.token'), TOKENS.reader);
    apiKeys.push({ ...rotatedKey.publicKey.export({ format: 'jwk' }), kid: 'rotated', use: 'sig', alg: 'RS256' });
    const again = await attest({ cluster: 'authed', token: psat({}, rotatedKey.privateKey, 'rotated') });
    assert.equal(again.status, '201', JSON.stringify(again.body));
    assert.equal(authHeaders.at(-1), 'Bearer reader-token-2');
  });

  it('without a token against that API server: 503 ERR_CA_UNAVAILABLE saying HTTP 401 and what to set, and the server logs it', async () => {
    const r = await attest({ cluster: 'anonymous', token: psat() });
    assert.equal(r.status, '503', JSON.stringify(r.body));
    assert.equal(r.body['code'], 'ERR_CA_UNAVAILABLE');
    assert.match(String(r.body['message']), /HTTP 401: Unauthorized .*jwksTokenFile/);
    await waitFor('the warning in the server log', async () =>
      srv.logs.some((l) => l.includes('cannot get the cluster JWKS') && l.includes('"cluster":"anonymous"')) ? true : undefined,
    );
  });

  it('with the token of a service account the API server forbids: 503 naming the ClusterRole to bind; no token in any answer or log line', async () => {
    const r = await attest({ cluster: 'forbidden', token: psat() });
    assert.equal(r.status, '503', JSON.stringify(r.body));
    assert.match(String(r.body['message']), /HTTP 403: forbidden: User "system:serviceaccount:writ-system:other" cannot get path/);
    assert.match(String(r.body['message']), /system:service-account-issuer-discovery/);
    const everything = `${JSON.stringify(r.body)}${srv.logs.join('\n')}`;
    for (const t of [TOKENS.other, 'reader-token-1', 'reader-token-2']) assert.ok(!everything.includes(t), t);
  });

  it('refuses at start a jwksTokenFile that is missing, one beside a jwksFile, and a jwksUrl that is not https, naming the setting', async () => {
    const cases: Array<[string[], RegExp]> = [
      [
        [`    jwksUrl: https://127.0.0.1:1/openid/v1/jwks`, `    jwksTokenFile: ${join(dir, 'no-such.token')}`],
        /k8sPsat\.x\.jwksTokenFile: cannot read .*no-such\.token: ENOENT/,
      ],
      [[`    jwksFile: ${join(dir, 'apiserver-ca.pem')}`, `    jwksTokenFile: ${join(dir, 'reader.token')}`], /k8sPsat\.x\.jwksTokenFile: is for jwksUrl/],
      [[`    jwksUrl: http://127.0.0.1:1/openid/v1/jwks`], /k8sPsat\.x\.jwksUrl: must be an https:\/\/ URL/],
      [
        [`    jwksUrl: https://127.0.0.1:1/openid/v1/jwks`, `    jwksCaFile: ${join(dir, 'reader.token')}`],
        /k8sPsat\.x\.jwksCaFile: .* holds no PEM certificate/,
      ],
    ];
    for (const [lines, message] of cases) {
      const f = join(dir, 'bad.yaml');
      writeFileSync(f, ['trustDomain: e2e.test', 'k8sPsat:', '  x:', ...lines, ''].join('\n'));
      const r = await writ(undefined, ['server', 'start', '--config', f, '--data-dir', mkdtempSync(join(dir, 'd-')), '--listen', '127.0.0.1:0']);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /ERR_CONFIG_INVALID/);
      assert.ok(!r.stderr.includes(readFileSync(join(dir, 'reader.token'), 'utf8').trim()), 'no token in the error');
    }
  });

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
