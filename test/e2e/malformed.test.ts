/** An agent facing a server that sends malformed data keeps its cache and keeps serving. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { WorkloadClient } from '@writ/sdk';
import { cleanup, startAgentProcess, startServerProcess, waitFor, writ, type AgentProcess, type ServerProcess } from './helpers.ts';

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
  // A server with a valid certificate from the same CA that answers nonsense.
  const out = join(srv.dataDir, 'fake');
  assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/writ/server', '--dns-name', 'localhost', '--out', out])).code, 0);
  const answers = [
    'not json at all',
    JSON.stringify({ revision: 99, full: true, entries: [{}], removed: [], bundlesVersion: 'x', bundle: { keys: [] }, federatedBundles: {} }),
    JSON.stringify({ revision: -1 }),
    JSON.stringify({ revision: 5, full: true, entries: [], removed: [], bundlesVersion: 'y', bundle: { keys: 'nope' }, federatedBundles: {} }),
    JSON.stringify([1, 2, 3]),
  ];
  let n = 0;
  fake = createServer(
    { key: readFileSync(join(out, 'svid.key')), cert: readFileSync(join(out, 'svid.pem')), requestCert: true, rejectUnauthorized: false },
    (_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(answers[n++ % answers.length]);
    },
  );
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
