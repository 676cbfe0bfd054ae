/** An agent facing a server that sends malformed data keeps its cache and keeps serving. */
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { WorkloadClient } from '@writ/sdk';
import { buildName, certificatesToPem, issueCertificate, parseCertificatesPem } from '@writ/spiffe';
import { readPrivateKey } from '../../packages/server/src/ca/keys.ts';
import { cleanup, startAgentProcess, startServerProcess, waitFor, writ, type AgentProcess, type ServerProcess } from './helpers.ts';

/** A certificate for spiffe://e2e.test/writ/server signed by the server's CA key, read from its data dir. */
function serverCertFromCaKey(dataDir: string): { key: string; cert: string } {
  const [caCert] = parseCertificatesPem(readFileSync(join(dataDir, 'bundle.pem'), 'utf8'));
  const keys = join(dataDir, 'keys');
  const signer = readdirSync(keys)
    .filter((f) => f !== 'audit-log.pem') // the audit log's Ed25519 note key signs no certificate
    .map((f) => readPrivateKey(join(keys, f), undefined))
    .find((k) => createPublicKey(k.key).export({ format: 'der', type: 'spki' }).equals(caCert!.spki));
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const leaf = issueCertificate(
    {
      subject: buildName([]),
      spki: publicKey.export({ format: 'der', type: 'spki' }),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      ca: false,
      uris: ['spiffe://e2e.test/writ/server'],
      dnsNames: ['localhost'],
    },
    { cert: caCert, signer: signer! },
  );
  return { key: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, cert: certificatesToPem([leaf]) };
}

let srv: ServerProcess;
let agent: AgentProcess;
let fake: ReturnType<typeof createServer> | undefined;

before(async () => {
  srv = await startServerProcess();
  await writ(srv, [
    'entry',
    'create',
    '--spiffe-id',
    'spiffe://e2e.test/ns/cached',
    '--parent-id',
    'spiffe://e2e.test/writ/agent/m1',
    '--selector',
    'unix:uid:0',
  ]);
  const token = JSON.parse((await writ(srv, ['token', 'create', '--node-name', 'm1', '-o', 'json'])).stdout).token as string;
  agent = await startAgentProcess(srv, { joinToken: token });
});
after(async () => {
  await agent?.stop();
  await srv?.stop();
  fake?.close();
  cleanup(srv.dataDir);
  cleanup(agent.dataDir);
});

it('garbage from the server changes nothing the workloads see, and is logged', async () => {
  const c = new WorkloadClient(`unix://${agent.socket}`);
  await waitFor('the first SVID', async () => ((await c.fetchX509Context()).svids.length ? true : undefined));
  await agent.stop();
  // A server with a valid certificate for the server's own ID that answers nonsense: the API no
  // longer mints spiffe://TD/writ/**, so the test signs it with the CA key from the data dir.
  const fakeTls = serverCertFromCaKey(srv.dataDir);
  const answers = [
    'not json at all',
    JSON.stringify({ revision: 99, full: true, entries: [{}], removed: [], bundlesVersion: 'x', bundle: { keys: [] }, federatedBundles: {} }),
    JSON.stringify({ revision: -1 }),
    JSON.stringify({ revision: 5, full: true, entries: [], removed: [], bundlesVersion: 'y', bundle: { keys: 'nope' }, federatedBundles: {} }),
    JSON.stringify([1, 2, 3]),
  ];
  let n = 0;
  fake = createServer({ ...fakeTls, requestCert: true, rejectUnauthorized: false }, (_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(answers[n++ % answers.length]);
  });
  await new Promise<void>((r) => fake!.listen(0, '127.0.0.1', () => r()));
  agent = await startAgentProcess(srv, {
    dataDir: agent.dataDir,
    socket: agent.socket,
    serverUrl: `https://localhost:${(fake.address() as AddressInfo).port}`,
  });
  await waitFor('a few malformed answers', async () => (n >= 6 ? true : undefined), 30_000);
  const ctx = await c.fetchX509Context();
  assert.deepEqual(
    ctx.svids.map((s) => s.spiffeId),
    ['spiffe://e2e.test/ns/cached'],
    'the cached identity is still served',
  );
  assert.ok(
    agent.logs.some((l) => l.includes('malformed')),
    'the agent said what was wrong',
  );
  assert.equal(agent.child.exitCode, null);
  c.close();
});
