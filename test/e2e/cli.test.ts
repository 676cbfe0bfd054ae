/**
 * The writ CLI as a user runs it: against a real server (SQLite), against a TLS impostor, and,
 * for server answers this build's server does not give yet, against a small HTTPS fake of exactly
 * the documented shape.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import { WRIT, applyPolicy, cleanup, ordersPolicy, startAgentProcess, startServerProcess, waitFor, writ, type ServerProcess } from './helpers.ts';

let srv: ServerProcess;
let work: string;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'writ-cli-'));
  srv = await startServerProcess();
});
after(async () => {
  await srv?.stop();
  if (srv) cleanup(srv.dataDir);
  if (work) cleanup(work);
});

/** A TLS server with the given certificate that answers nothing and keeps every plaintext byte it receives. */
async function impostor(certFile: string, keyFile: string): Promise<{ url: string; received: () => string; close: () => Promise<void> }> {
  const chunks: Buffer[] = [];
  const sockets = new Set<TLSSocket>();
  const server = createTlsServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (s) => {
    sockets.add(s);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `https://localhost:${port}`,
    received: () => Buffer.concat(chunks).toString('latin1'),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => (server.listening ? server.close(() => r()) : r()));
    },
  };
}

describe("the server's identity is pinned", () => {
  it('a workload SVID from the same CA, valid for the address, gets no token: one error naming both IDs, exit 1', async () => {
    const out = join(work, 'web-svid');
    const m = await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/ns/web', '--dns-name', 'localhost', '--out', out]);
    assert.equal(m.code, 0, m.stderr);
    const fake = await impostor(join(out, 'svid.pem'), join(out, 'svid.key'));
    try {
      const r = await writ(srv, ['entry', 'list'], { env: { WRIT_SERVER: fake.url } });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /presented spiffe:\/\/e2e\.test\/ns\/web, not spiffe:\/\/e2e\.test\/writ\/server/);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.ok(!fake.received().includes(srv.adminToken), 'the admin token reached the impostor');
      assert.equal(fake.received(), '');

      // The recorder works: told to expect that ID, the CLI does send the request (and the token).
      const told = writ(srv, ['entry', 'list', '--server-spiffe-id', 'spiffe://e2e.test/ns/web'], { env: { WRIT_SERVER: fake.url } });
      await waitFor('the overridden request', async () => (fake.received().includes(srv.adminToken) ? true : undefined));
      await fake.close();
      assert.equal((await told).code, 1);
    } finally {
      await fake.close();
    }
  });

  it('the real server passes with the trust domain taken from the CA file; a wrong --trust-domain fails before the token is sent', async () => {
    assert.equal((await writ(srv, ['entry', 'list'])).code, 0);
    const r = await writ(srv, ['entry', 'list', '--trust-domain', 'other.test']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /presented spiffe:\/\/e2e\.test\/writ\/server, not spiffe:\/\/other\.test\/writ\/server/);
    const env = await writ(srv, ['entry', 'list'], { env: { WRIT_SERVER_SPIFFE_ID: 'spiffe://e2e.test/writ/other' } });
    assert.equal(env.code, 1);
    assert.match(env.stderr, /not spiffe:\/\/e2e\.test\/writ\/other/);
  });

  it('without a CA file nothing is sent unless a trust domain or server ID is named', async () => {
    const r = await writ(srv, ['entry', 'list'], { env: { WRIT_CA_FILE: '' } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot pin the server's identity: pass --ca-file/);
  });
});

/** A long-running CLI command whose output a test watches while it runs. */
function spawnWrit(args: string[], env: NodeJS.ProcessEnv): { out: () => string; err: () => string; child: ChildProcess; exited: Promise<number | null> } {
  const childEnv = { ...process.env, ...env };
  delete childEnv['NODE_TEST_CONTEXT'];
  const child = spawn(process.execPath, [WRIT, ...args], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { out: () => out, err: () => err, child, exited };
}

describe('svid watch', () => {
  it('with no identity yet it keeps watching, says why on stderr, and prints the SVID once an entry gives one', async () => {
    const token = (await writ(srv, ['token', 'create', '--node-name', 'watch-node'])).stdout.trim();
    const agent = await startAgentProcess(srv, { joinToken: token });
    const w = spawnWrit(['svid', 'watch', '--socket', agent.socket], {});
    try {
      await waitFor('the waiting line', async () => (/waiting for an X\.509-SVID from .*no identity issued/.test(w.err()) ? true : undefined), 20_000);
      assert.equal(w.child.exitCode, null, 'svid watch exited while waiting');
      const uid = process.getuid!();
      const e = await writ(srv, [
        'entry',
        'create',
        '--spiffe-id',
        'spiffe://e2e.test/ns/watched',
        '--parent-id',
        'spiffe://e2e.test/writ/agent/watch-node',
        '--selector',
        `unix:uid:${uid}`,
      ]);
      assert.equal(e.code, 0, e.stderr);
      await waitFor('the SVID line', async () => (/spiffe:\/\/e2e\.test\/ns\/watched serial=\w+ expires=/.test(w.out()) ? true : undefined), 30_000);
      assert.doesNotMatch(w.err(), /unsettled top-level await/);
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await agent.stop();
      cleanup(agent.dataDir);
    }
  });
});

describe('authz check', () => {
  it('exits 3 on deny, 0 on allow and on audit-would-deny', async () => {
    await applyPolicy(srv, work, ordersPolicy('spiffe://e2e.test/ns/orders', 'GET'));
    const audit = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: reports }
spec:
  to: spiffe://e2e.test/ns/reports
  mode: audit
  rules:
    - { effect: allow, from: ["spiffe://e2e.test/ns/web/**"] }
`;
    await applyPolicy(srv, work, audit);
    const check = (from: string, to: string) => writ(srv, ['authz', 'check', '--from', from, '--to', to, '--action', 'GET /v1/orders/7']);
    const allow = await check('spiffe://e2e.test/ns/web/a', 'spiffe://e2e.test/ns/orders');
    assert.equal(allow.code, 0, allow.stderr);
    assert.match(allow.stdout, /^ALLOW/);
    const deny = await check('spiffe://e2e.test/ns/legacy/a', 'spiffe://e2e.test/ns/orders');
    assert.equal(deny.code, 3, deny.stderr);
    assert.match(deny.stdout, /^DENY/);
    const denyJson = await writ(srv, [
      'authz',
      'check',
      '--from',
      'spiffe://e2e.test/ns/legacy/a',
      '--to',
      'spiffe://e2e.test/ns/orders',
      '--action',
      'GET /',
      '-o',
      'json',
    ]);
    assert.equal(denyJson.code, 3);
    assert.equal(JSON.parse(denyJson.stdout).decision, 'deny');
    const audited = await check('spiffe://e2e.test/ns/other/a', 'spiffe://e2e.test/ns/reports');
    assert.equal(audited.code, 0, audited.stderr);
    assert.match(audited.stdout, /^AUDIT-WOULD-DENY/);
    assert.match((await writ(undefined, ['authz', 'check', '--help'])).stdout, /3 on deny/);
  });
});
