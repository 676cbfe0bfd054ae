/**
 * The writ CLI as a user runs it: against a real server (SQLite) and real agents, against a TLS
 * impostor, and, for states a real server cannot be put in (an overdue CA, an older server), against
 * a small HTTPS fake of exactly the documented shape.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { OID, buildName, issueCertificate, toPem } from '@writ/spiffe';
import { tmpdir } from 'node:os';
import { parseAllDocuments } from 'yaml';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Command } from 'commander';
import {
  DEBIAN_PYTHON,
  ROOT,
  WRIT,
  applyPolicy,
  cleanup,
  ordersPolicy,
  run,
  startAgentProcess,
  startServerProcess,
  waitFor,
  writ,
  type AgentProcess,
  type RunResult,
  type ServerProcess,
  pythonStubs,
} from './helpers.ts';

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
  it('with no identity yet it keeps watching, says why on stderr, prints the SVID once an entry gives one, and a line for each later change', async () => {
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
      // Each later change is a line of its own: a second identity for this process, then the first one withdrawn.
      const lines = () => w.out().trim().split('\n');
      const second = await writ(srv, [
        'entry',
        'create',
        '--spiffe-id',
        'spiffe://e2e.test/ns/watched-2',
        '--parent-id',
        'spiffe://e2e.test/writ/agent/watch-node',
        '--selector',
        `unix:uid:${uid}`,
      ]);
      assert.equal(second.code, 0, second.stderr);
      const both = await waitFor('a line with both SVIDs', async () => {
        const i = lines().findIndex((l) => l.includes('spiffe://e2e.test/ns/watched ') && l.includes('spiffe://e2e.test/ns/watched-2 '));
        return i >= 0 ? i : undefined;
      });
      const listed = JSON.parse((await writ(srv, ['entry', 'list', '--spiffe-id', 'spiffe://e2e.test/ns/watched', '-o', 'json'])).stdout) as Array<{
        id: string;
      }>;
      assert.equal(listed.length, 1, JSON.stringify(listed));
      assert.equal((await writ(srv, ['entry', 'delete', listed[0]!.id])).code, 0);
      await waitFor('a line with the second SVID alone', async () =>
        lines()
          .slice(both + 1)
          .some((l) => l.includes('spiffe://e2e.test/ns/watched-2 ') && !l.includes('spiffe://e2e.test/ns/watched '))
          ? true
          : undefined,
      );
      assert.equal(w.child.exitCode, null, 'svid watch keeps running after the changes');
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

// ------------------------------------------------------------------ a fake of the documented server answers

interface FakeRequest {
  method: string;
  path: string;
  auth: string | undefined;
  body: unknown;
}
type FakeRoute = (req: FakeRequest) => { status?: number; body: unknown } | Promise<{ status?: number; body: unknown }>;

/** An HTTPS server with a real Writ-shaped identity (spiffe://fake.test/writ/server from its own CA) and a route table. */
async function fakeServer(routes: Record<string, FakeRoute>): Promise<{ url: string; caFile: string; requests: FakeRequest[]; close: () => Promise<void> }> {
  const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const leafKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = (k: typeof ca) => k.publicKey.export({ format: 'der', type: 'spki' });
  const now = Date.now();
  const caSigner = { key: ca.privateKey, keyType: 'ec-p256' as const };
  const caCert = issueCertificate(
    {
      subject: buildName([[OID.commonName, 'fake CA']]),
      spki: spki(ca),
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3_600_000),
      ca: true,
      uris: ['spiffe://fake.test'],
    },
    { cert: undefined, signer: caSigner },
  );
  const leaf = issueCertificate(
    {
      subject: buildName([[OID.commonName, 'fake server']]),
      spki: spki(leafKey),
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3_600_000),
      ca: false,
      uris: ['spiffe://fake.test/writ/server'],
      ipAddresses: [Buffer.from([127, 0, 0, 1])],
    },
    { cert: caCert, signer: caSigner },
  );
  const caFile = join(work, `fake-ca-${Math.random().toString(36).slice(2)}.pem`);
  writeFileSync(caFile, toPem('CERTIFICATE', caCert.der));
  const requests: FakeRequest[] = [];
  const server = createHttpsServer({ cert: toPem('CERTIFICATE', leaf.der), key: leafKey.privateKey.export({ format: 'pem', type: 'pkcs8' }) }, (req, res) => {
    let text = '';
    req.on('data', (d: Buffer) => (text += d.toString()));
    req.on('end', async () => {
      const path = req.url ?? '/';
      const r: FakeRequest = { method: req.method ?? 'GET', path, auth: req.headers.authorization, body: text ? JSON.parse(text) : undefined };
      requests.push(r);
      const route = routes[`${r.method} ${path.split('?')[0]}`];
      const out = route ? await route(r) : { status: 404, body: { code: 'ERR_NOT_FOUND', message: `no route ${r.method} ${path}` } };
      res.writeHead(out.status ?? 200, { 'content-type': 'application/json' }).end(JSON.stringify(out.body));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `https://127.0.0.1:${(server.address() as { port: number }).port}`,
    caFile,
    requests,
    close: () => new Promise((r) => (server.closeAllConnections(), server.close(() => r()))),
  };
}

/** The CLI against a fake server. */
const writFake = (fake: { url: string; caFile: string }, args: string[], env: NodeJS.ProcessEnv = {}) =>
  writ(undefined, args, { env: { WRIT_SERVER: fake.url, WRIT_CA_FILE: fake.caFile, WRIT_TOKEN: 'fake-admin-token', ...env } });

// ------------------------------------------------------------------ version and doctor

const hour = 3_600_000;
const iso = (ms: number) => new Date(ms).toISOString();
/** A healthy server's answers, as documented; tests override single routes. */
function healthyRoutes(over: Record<string, FakeRoute> = {}): Record<string, FakeRoute> {
  const now = Date.now();
  return {
    'GET /v1/version': () => ({ body: { version: '0.1.0', trustDomain: 'fake.test' } }),
    'GET /v1/whoami': (r) =>
      r.auth === 'Bearer fake-admin-token'
        ? { body: { role: 'admin', tokenId: 't1', name: 'bootstrap', expiresAt: null } }
        : { status: 401, body: { code: 'ERR_UNAUTHENTICATED', message: 'unknown token' } },
    'GET /v1/ca/authorities': () => ({
      body: {
        authorities: [
          { id: 'x1', kind: 'x509', status: 'active', serverId: 's1', notBefore: iso(now - hour), notAfter: iso(now + 23 * hour) },
          { id: 'j1', kind: 'jwt', status: 'active', serverId: 's1', notBefore: iso(now - hour), notAfter: iso(now + 23 * hour) },
          { id: 'x0', kind: 'x509', status: 'old', serverId: 's1', notBefore: iso(now - 25 * hour), notAfter: iso(now - hour) },
        ],
      },
    }),
    'GET /v1/policy/status': () => ({
      body: {
        revision: 3,
        quarantineVersion: 1,
        agents: [
          {
            spiffeId: 'spiffe://fake.test/writ/agent/n1',
            revision: 3,
            behind: 0,
            quarantineVersion: 1,
            ackedAt: iso(now - 2000),
            secondsSinceAck: 2,
            live: true,
          },
        ],
      },
    }),
    ...over,
  };
}

describe('doctor (a fake of the documented server answers where the real one cannot show the case, and a real agent)', () => {
  it('doctor: WARN for a stale agent and an overdue CA, FAIL for a missing JWT key (states a fresh real server cannot be in)', async () => {
    const now = Date.now();
    const sick = await fakeServer(
      healthyRoutes({
        'GET /v1/ca/authorities': () => ({
          body: {
            authorities: [
              { id: 'x1', kind: 'x509', status: 'active', serverId: 's1', notBefore: iso(now - 23 * hour), notAfter: iso(now + 10 * 60_000) },
              { id: 'j1', kind: 'jwt', status: 'prepared', serverId: 's1', notBefore: iso(now), notAfter: iso(now + 24 * hour) },
            ],
          },
        }),
        'GET /v1/policy/status': () => ({
          body: {
            revision: 3,
            quarantineVersion: 1,
            agents: [
              {
                spiffeId: 'spiffe://fake.test/writ/agent/gone',
                revision: 2,
                behind: 1,
                quarantineVersion: 1,
                ackedAt: iso(now - 600_000),
                secondsSinceAck: 600,
                live: false,
              },
            ],
          },
        }),
      }),
    );
    try {
      const r = await writFake(sick, ['doctor']);
      assert.equal(r.code, 1);
      assert.match(r.stdout, /^WARN\s+x509-authority\s+X\.509 CA x1 expires in 10m/m);
      assert.match(r.stdout, /rotation is overdue/);
      assert.match(r.stdout, /^FAIL\s+jwt-authority\s+no active JWT key/m);
      assert.match(r.stdout, /^WARN\s+agents\s+1 of 1 not seen in 90s: spiffe:\/\/fake\.test\/writ\/agent\/gone \(10m ago, 1 behind\)/m);
    } finally {
      await sick.close();
    }
  });

  it('doctor against a server older than this CLI: WARN for each missing route, no FAIL', async () => {
    const routes = healthyRoutes();
    for (const r of ['GET /v1/version', 'GET /v1/whoami', 'GET /v1/ca/authorities']) delete routes[r];
    routes['GET /v1/policy/status'] = () => ({
      body: { revision: 1, agents: [{ spiffeId: 'spiffe://fake.test/writ/agent/n1', revision: 1, behind: 0, ackedAt: iso(Date.now()), secondsSinceAck: 3 }] },
    });
    const fake = await fakeServer(routes);
    try {
      const r = await writFake(fake, ['doctor']);
      assert.equal(r.code, 0, r.stdout);
      assert.match(r.stdout, /^WARN\s+server\s+https:\/\/127\.0\.0\.1:\d+ answers as spiffe:\/\/fake\.test\/writ\/server, but has no GET \/v1\/version/m);
      assert.match(r.stdout, /^WARN\s+token\s+the server has no GET \/v1\/whoami/m);
      assert.match(r.stdout, /^WARN\s+authorities\s/m);
      assert.match(r.stdout, /^OK\s+agents\s+1 live/m);
    } finally {
      await fake.close();
    }
  });

  it('doctor against an impostor fails the server check, names both IDs and sends no token', async () => {
    const out = join(work, 'imp-svid');
    assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/ns/imp', '--dns-name', 'localhost', '--out', out])).code, 0);
    const fake = await impostor(join(out, 'svid.pem'), join(out, 'svid.key'));
    try {
      const r = await writ(srv, ['doctor'], { env: { WRIT_SERVER: fake.url } });
      assert.equal(r.code, 1);
      assert.match(r.stdout, /^FAIL\s+server\s+.*presented spiffe:\/\/e2e\.test\/ns\/imp, not spiffe:\/\/e2e\.test\/writ\/server/m);
      assert.equal(fake.received(), '');
    } finally {
      await fake.close();
    }
  });
});

// ------------------------------------------------------------------ the real server and two real agents

describe('decisions, policy apply, --wait, version and doctor against the real server and two real agents', () => {
  // A server of its own: agents stopped by other tests stay "live" (acknowledged within 90 s) there.
  let s: ServerProcess;
  let a: AgentProcess;
  let b: AgentProcess;
  let dir: string;
  let stubs: string;
  const uid = process.getuid!();
  const ME = 'spiffe://e2e.test/ns/cli-orders';
  const ok = async (args: string[]): Promise<RunResult> => {
    const r = await writ(s, args);
    assert.equal(r.code, 0, `writ ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const status = async () =>
    JSON.parse((await ok(['policy', 'status', '-o', 'json'])).stdout) as { revision: number; agents: Array<{ spiffeId: string; revision: number }> };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-cli-real-'));
    s = await startServerProcess();
    // This process gets ME from agent a; agent b's only entry also wants a binary this process is not.
    await ok(['entry', 'create', '--spiffe-id', ME, '--parent-id', 'spiffe://e2e.test/writ/agent/cli-a', '--selector', `unix:uid:${uid}`]);
    await ok([
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://e2e.test/ns/db',
      '--parent-id',
      'spiffe://e2e.test/writ/agent/cli-b',
      '--selector',
      `unix:uid:${uid}`,
      '--selector',
      'unix:path:/usr/bin/postgres',
    ]);
    a = await startAgentProcess(s, { joinToken: (await ok(['token', 'create', '--node-name', 'cli-a'])).stdout.trim() });
    b = await startAgentProcess(s, { joinToken: (await ok(['token', 'create', '--node-name', 'cli-b'])).stdout.trim() });
    stubs = await pythonStubs('writ_authz.proto');
  });
  after(async () => {
    if (b?.child.exitCode === null) b.child.kill('SIGCONT');
    await a?.stop();
    await b?.stop();
    await s?.stop();
    for (const d of [s?.dataDir, a?.dataDir, b?.dataDir, dir, stubs]) if (d) cleanup(d);
  });

  it('policy apply runs the PolicyTest cases in the file: a failing one applies nothing (exit 3, listed), --skip-tests applies, passing ones are counted', async () => {
    const policy = ordersPolicy(ME, 'GET');
    const failing = join(dir, 'failing.yaml');
    writeFileSync(
      failing,
      `${policy}---
kind: PolicyTest
cases:
  - { name: legacy reads, from: spiffe://e2e.test/ns/legacy/a, to: ${ME}, action: GET /v1/orders/1, expect: allow }
  - { name: web reads, from: spiffe://e2e.test/ns/web/a, to: ${ME}, action: GET /v1/orders/1, expect: allow }
`,
    );
    const before = (await status()).revision;
    const r = await writ(s, ['policy', 'apply', '-f', failing]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stdout, /^FAIL {2}legacy reads: expected allow, got deny \(DENY_RULE, rule orders#1\)$/m);
    assert.doesNotMatch(r.stdout, /web reads/);
    assert.match(r.stderr, /1 policy test case\(s\) failed; nothing applied/);
    assert.equal((await status()).revision, before, 'a failing test applied the policy');
    const j = await writ(s, ['policy', 'apply', '-f', failing, '-o', 'json']);
    assert.equal(j.code, 3);
    assert.deepEqual(
      JSON.parse(j.stdout).failures.map((f: { name: string; got: string }) => [f.name, f.got]),
      [['legacy reads', 'deny']],
    );

    // A kind that is neither is refused with its line before anything is sent.
    const foo = join(dir, 'foo.yaml');
    writeFileSync(foo, `${readFileSync(failing, 'utf8')}---\nkind: Foo\n`);
    const bad = await writ(s, ['policy', 'apply', '-f', foo]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /foo\.yaml: line \d+: unknown kind "Foo"/);

    const skip = await writ(s, ['policy', 'apply', '-f', failing, '--skip-tests']);
    assert.equal(skip.code, 0, skip.stderr);
    assert.match(skip.stdout, /^revision \d+; changed: orders$/m);
    assert.equal((await status()).revision, before + 1);

    const passing = join(dir, 'passing.yaml');
    writeFileSync(
      passing,
      `${ordersPolicy(ME, 'GET, DELETE')}---
kind: PolicyTest
cases:
  - { name: legacy is refused, from: spiffe://e2e.test/ns/legacy/a, to: ${ME}, action: GET /v1/orders/1, expect: deny }
  - { name: web deletes, from: spiffe://e2e.test/ns/web/a, to: ${ME}, action: DELETE /v1/orders/1, expect: allow }
`,
    );
    const pass = await writ(s, ['policy', 'apply', '-f', passing]);
    assert.equal(pass.code, 0, pass.stderr);
    assert.match(pass.stdout, /^revision \d+; changed: orders; tests 2 passed, 0 failed$/m);
  });

  it('decisions show ID prints the decision the agent made (the id its answer carries), an unknown id is exit 1; decisions tail -o json|yaml prints the last minute, oldest first', async () => {
    const check = async (from = 'spiffe://e2e.test/ns/legacy/a') => {
      const r = await run(DEBIAN_PYTHON, [join(ROOT, 'test/e2e/fixtures/authz_client.py'), stubs, a.socket, from, ME, 'GET /v1/orders/7']);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as { decision?: string; id?: string };
    };
    const d = await waitFor('a deny from agent a', async () => {
      const x = await check();
      return x.decision === 'deny' && x.id ? x : undefined;
    });
    const shown = await waitFor('the decision in the log', async () => {
      const r = await writ(s, ['decisions', 'show', d.id!]);
      return r.code === 0 ? r : undefined;
    });
    assert.match(shown.stdout, /deny/);
    assert.match(shown.stdout, /DENY_RULE/);
    assert.match(shown.stdout, /spiffe:\/\/e2e\.test\/ns\/legacy\/a/);
    const j = JSON.parse((await ok(['decisions', 'show', d.id!, '-o', 'json'])).stdout);
    assert.deepEqual(
      [j.id, j.from, j.to, j.action, j.decision, j.reporter],
      [d.id, 'spiffe://e2e.test/ns/legacy/a', ME, 'GET /v1/orders/7', 'deny', 'spiffe://e2e.test/writ/agent/cli-a'],
    );
    assert.match((await ok(['decisions', 'show', d.id!, '-o', 'yaml'])).stdout, new RegExp(`^id: ${d.id}$`, 'm'));
    const missing = await writ(s, ['decisions', 'show', 'no-such-decision']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /\[ERR_NOT_FOUND\]/);

    // tail: the last minute first, oldest first; -o json one object per line, -o yaml documents split by ---.
    const allowed = await check('spiffe://e2e.test/ns/web/a');
    assert.equal(allowed.decision, 'allow');
    for (const format of ['json', 'yaml'] as const) {
      const w = spawnWrit(['decisions', 'tail', '--to', ME, '-o', format], {
        WRIT_SERVER: s.url,
        WRIT_CA_FILE: join(s.dataDir, 'bundle.pem'),
        WRIT_TOKEN: s.adminToken,
      });
      try {
        await waitFor('both decisions', async () => (w.out().includes(allowed.id!) ? true : undefined), 20_000);
        const ids =
          format === 'json'
            ? w
                .out()
                .trim()
                .split('\n')
                .map((l) => JSON.parse(l).id as string)
            : parseAllDocuments(w.out()).map((doc) => (doc.toJS() as { id: string }).id);
        assert.deepEqual(ids.slice(-2), [d.id, allowed.id]);
        if (format === 'yaml') assert.match(w.out(), /^---$/m);
      } finally {
        w.child.kill('SIGTERM');
        await w.exited;
      }
    }
  });

  it('version prints the client and the real server; doctor finds every check OK; a bad token is FAIL', async () => {
    const v = await ok(['version']);
    assert.match(v.stdout, /^client: \d+\.\d+\.\d+\nserver: \d+\.\d+\.\d+ \(https:\/\/127\.0\.0\.1:\d+, trust domain e2e\.test\)$/m);
    const vj = JSON.parse((await ok(['version', '-o', 'json'])).stdout);
    assert.equal(vj.server.trustDomain, 'e2e.test');
    assert.equal(vj.server.version, vj.client.version);

    const d = await ok(['doctor']);
    for (const name of ['server', 'token', 'x509-authority', 'jwt-authority', 'agents']) assert.match(d.stdout, new RegExp(`^OK\\s+${name}\\s`, 'm'));
    assert.match(d.stdout, /server\s+https:\/\/127\.0\.0\.1:\d+ answers as spiffe:\/\/e2e\.test\/writ\/server/);
    assert.match(d.stdout, /role admin/);
    assert.match(d.stdout, /2 live: .*spiffe:\/\/e2e\.test\/writ\/agent\/cli-a/);
    assert.equal(JSON.parse((await ok(['doctor', '-o', 'json'])).stdout).ok, true);
    const bad = await writ(s, ['doctor'], { token: 'not-a-token' });
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /^FAIL\s+token\s/m);
    assert.match(bad.stdout, /hint: pass --token or set WRIT_TOKEN/);
    assert.doesNotMatch(bad.stdout + bad.stderr, /not-a-token/);
  });

  it('doctor --socket: OK with the identity agent a gives; from agent b, FAIL naming the entry and the selector this process lacks', async () => {
    const good = await waitFor('agent a to give this process its identity', async () => {
      const r = await writ(s, ['doctor', '--socket', a.socket]);
      return r.code === 0 ? r : undefined;
    });
    assert.match(good.stdout, /^OK\s+identity\s+this process gets spiffe:\/\/e2e\.test\/ns\/cli-orders from spiffe:\/\/e2e\.test\/writ\/agent\/cli-a/m);
    const r = await writ(s, ['doctor', '--socket', b.socket]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(
      r.stdout,
      new RegExp(`^FAIL\\s+identity\\s+no identity for this process from spiffe://e2e\\.test/writ/agent/cli-b; its selectors: .*unix:uid:${uid}`, 'm'),
    );
    assert.match(r.stdout, /entry \S+\s+spiffe:\/\/e2e\.test\/ns\/db needs unix:path:\/usr\/bin\/postgres$/m);
    const gone = await writ(s, ['doctor', '--socket', join(dir, 'no-such.sock')]);
    assert.equal(gone.code, 1);
    assert.match(gone.stdout, /^FAIL\s+identity\s+.*no-such\.sock/m);
    assert.match(gone.stdout, /hint: is the agent running/);
  });

  it('--wait returns once both agents acknowledge; an agent that is live but stopped is listed as a straggler, exit 1', async () => {
    const f = join(dir, 'wait.yaml');
    writeFileSync(f, ordersPolicy(ME, 'GET, PUT'));
    const r = await writ(s, ['policy', 'apply', '-f', f, '--wait=60s']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /acknowledged by all 2 live agent\(s\)/);
    const target = Number(/^revision (\d+)/.exec(r.stdout)![1]);
    assert.ok(
      (await status()).agents.every((x) => x.revision >= target),
      'returned before both agents enforced the revision',
    );

    const q = await writ(s, ['quarantine', 'add', 'spiffe://e2e.test/ns/evil', '--reason', 'test', '--wait=60s']);
    assert.equal(q.code, 0, q.stderr);
    assert.match(q.stderr, /acknowledged by all 2 live agent\(s\)/);

    b.child.kill('SIGSTOP');
    try {
      writeFileSync(f, ordersPolicy(ME, 'GET'));
      const late = await writ(s, ['policy', 'apply', '-f', f, '--wait=2s']);
      assert.equal(late.code, 1, late.stderr);
      assert.match(late.stderr, /waiting for 1 of 2 live agents to enforce policy revision \d+/);
      assert.match(late.stderr, /1 live agent\(s\) did not acknowledge within 2s: spiffe:\/\/e2e\.test\/writ\/agent\/cli-b \(the change is applied/);
      assert.doesNotMatch(late.stderr, /agent\/cli-a/);
      const lift = await writ(s, ['quarantine', 'remove', 'spiffe://e2e.test/ns/evil', '--wait=2s']);
      assert.equal(lift.code, 1);
      assert.match(lift.stderr, /within 2s: spiffe:\/\/e2e\.test\/writ\/agent\/cli-b /);
    } finally {
      b.child.kill('SIGCONT');
    }
    // Resumed, it catches up: the next wait sees both.
    // `--wait` before the ID is the default wait, not a timeout named "spiffe://...".
    const caught = await writ(s, ['quarantine', 'add', '--wait', 'spiffe://e2e.test/ns/evil2', '--reason', 'test']);
    assert.equal(caught.code, 0, caught.stderr);
    assert.match(caught.stderr, /acknowledged by all 2 live agent\(s\)/);
  });
});

// ------------------------------------------------------------------ completion

/**
 * Sources `writ completion SHELL` in a real bash (or zsh, through bashcompinit), sets
 * COMP_WORDS/COMP_CWORD as the shell would, calls _writ and prints COMPREPLY one per line.
 */
async function complete(words: string[], env: NodeJS.ProcessEnv, shell: 'bash' | 'zsh' = 'bash'): Promise<{ replies: string[]; stderr: string }> {
  const script = join(work, `writ-completion.${shell}`);
  if (!existsSync(script)) writeFileSync(script, (await writ(undefined, ['completion', shell])).stdout);
  const quoted = words.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
  // zsh -f loads no compinit; bashcompinit's complete only needs compdef to register with it.
  const pre = shell === 'zsh' ? 'compdef() { :; }; ' : '';
  const body = `${pre}source ${script}; COMP_WORDS=(${quoted}); COMP_CWORD=${words.length - 1}; _writ; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const r = await run(shell, shell === 'zsh' ? ['-fc', body] : ['--norc', '-c', body], { env: { ...env, PATH: process.env['PATH'] } });
  assert.equal(r.code, 0, r.stderr);
  return { replies: r.stdout.split('\n').filter(Boolean), stderr: r.stderr };
}
const HAVE_ZSH = existsSync('/usr/bin/zsh') || existsSync('/bin/zsh');

describe('shell completion (bash, and zsh where installed)', () => {
  it('completes commands, -o values, and entry ids, policy names and agent SPIFFE IDs from the server, for writ and npx writ', async () => {
    const env = { WRIT_SERVER: srv.url, WRIT_TOKEN: srv.adminToken, WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem') };
    const token = (await writ(srv, ['token', 'create', '--node-name', 'comp-node'])).stdout.trim();
    const agent = await startAgentProcess(srv, { joinToken: token });
    await agent.stop();
    cleanup(agent.dataDir);
    const e = await writ(srv, [
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://e2e.test/ns/comp',
      '--parent-id',
      'spiffe://e2e.test/writ/agent/comp-node',
      '--selector',
      'unix:uid:4242',
      '-o',
      'json',
    ]);
    assert.equal(e.code, 0, e.stderr);
    const entryId = JSON.parse(e.stdout).id as string;
    await applyPolicy(srv, work, ordersPolicy('spiffe://e2e.test/ns/comp-orders', 'GET').replace('name: orders', 'name: comp-orders'));

    for (const cmd of [['writ'], ['npx', 'writ']]) {
      assert.deepEqual((await complete([...cmd, 'ent'], env)).replies, ['entry']);
      assert.deepEqual((await complete([...cmd, 'entry', 'l'], env)).replies, ['list']);
      assert.deepEqual((await complete([...cmd, 'entry', 'list', '-o', ''], env)).replies, ['table', 'json', 'yaml']);
      // bash splits --output=j at '=': its current word is "j".
      assert.deepEqual((await complete([...cmd, 'agent', 'list', '--output', '=', 'j'], env)).replies, ['json']);
      assert.ok((await complete([...cmd, 'entry', 'show', ''], env)).replies.includes(entryId));
      assert.ok((await complete([...cmd, 'policy', 'get', 'comp-'], env)).replies.includes('comp-orders'));
      // bash splits spiffe://... at ':': its current word is "//e2e.test/...".
      assert.deepEqual((await complete([...cmd, 'agent', 'show', 'spiffe', ':', '//e2e.test/writ/agent/comp'], env)).replies, [
        '//e2e.test/writ/agent/comp-node',
      ]);
      assert.ok(
        (await complete([...cmd, 'entry', 'create', '--parent-id', ''], env)).replies.includes('spiffe://e2e.test/writ/agent/comp-node'),
        '--parent-id completes agent IDs',
      );
    }
    // zsh keeps spiffe://... and --output=j as one word; its answers are whole words.
    if (HAVE_ZSH)
      for (const cmd of [['writ'], ['npx', 'writ']]) {
        assert.deepEqual((await complete([...cmd, 'entry', 'l'], env, 'zsh')).replies, ['list']);
        assert.deepEqual((await complete([...cmd, 'entry', 'list', '-o', ''], env, 'zsh')).replies, ['table', 'json', 'yaml']);
        assert.deepEqual((await complete([...cmd, 'agent', 'list', '--output=j'], env, 'zsh')).replies, ['--output=json']);
        assert.ok((await complete([...cmd, 'entry', 'show', ''], env, 'zsh')).replies.includes(entryId));
        assert.deepEqual((await complete([...cmd, 'agent', 'show', 'spiffe://e2e.test/writ/agent/comp'], env, 'zsh')).replies, [
          'spiffe://e2e.test/writ/agent/comp-node',
        ]);
      }
    // The connection flags on the command line are the ones __complete uses.
    const flagged = await complete(['writ', 'entry', 'delete', '--server', 'https', ':', `//127.0.0.1:${srv.port}`, ''], {
      ...env,
      WRIT_SERVER: 'https://127.0.0.1:1',
    });
    assert.ok(flagged.replies.includes(entryId), flagged.replies.join(' '));
  });

  it('sourcing the script registers it for writ and for npx; the function registered for npx completes npx writ <TAB>', async (t) => {
    const env = { WRIT_SERVER: 'https://127.0.0.1:1', WRIT_TOKEN: 'x' };
    const words = (ws: string[]) => `COMP_WORDS=(${ws.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${ws.length - 1}`;
    const bash = join(work, 'writ-completion.bash');
    if (!existsSync(bash)) writeFileSync(bash, (await writ(undefined, ['completion', 'bash'])).stdout);
    // bash: what `complete -p` says, then the function it names for npx, called as bash calls it.
    const b = await run(
      'bash',
      [
        '--norc',
        '-c',
        `source ${bash}; complete -p writ; complete -p npx; f=$(complete -p npx | sed -E 's/.*-F ([^ ]+).*/\\1/'); ${words(['npx', 'writ', ''])}; "$f"; printf 'reply %s\\n' "\${COMPREPLY[@]}"; ${words(['npx', 'writ', 'entry', 'l'])}; "$f"; printf 'reply %s\\n' "\${COMPREPLY[@]}"`,
      ],
      { env: { ...env, PATH: process.env['PATH'] } },
    );
    assert.equal(b.code, 0, b.stderr);
    const lines = b.stdout.split('\n');
    assert.equal(lines[0], 'complete -F _writ writ');
    assert.equal(lines[1], 'complete -o default -F _writ npx');
    const replies = lines.filter((l) => l.startsWith('reply ')).map((l) => l.slice(6));
    for (const c of ['entry', 'policy', 'agent', 'decisions', 'proxy']) assert.ok(replies.includes(c), `npx writ <TAB> offers ${c}: ${replies.join(' ')}`);
    assert.ok(replies.includes('list'), `npx writ entry l<TAB> offers list: ${replies.join(' ')}`);
    assert.ok(!replies.includes('npx') && !replies.includes('writ'), replies.join(' '));

    // zsh: a real compinit, then the script; both commands land in $_comps with the one function.
    if (!HAVE_ZSH) {
      assert.ok(!process.env['CI'], 'zsh is missing; .ci/run installs it');
      return t.diagnostic('zsh is not installed: its half was not run');
    }
    const zsh = join(work, 'writ-completion.zsh');
    if (!existsSync(zsh)) writeFileSync(zsh, (await writ(undefined, ['completion', 'zsh'])).stdout);
    const z = await run(
      'zsh',
      [
        '-fc',
        `autoload -U compinit && compinit -u -D; source ${zsh}; print -r -- "writ=\${_comps[writ]}"; print -r -- "npx=\${_comps[npx]}"; f=\${\${_comps[npx]}##*-F }; ${words(['npx', 'writ', 'entry', 'l'])}; $f; print -r -- "reply \${COMPREPLY[@]}"`,
      ],
      { env: { ...env, PATH: process.env['PATH'] } },
    );
    assert.equal(z.code, 0, z.stderr);
    const zl = z.stdout.split('\n');
    assert.equal(zl[0], 'writ=_bash_complete -F _writ');
    assert.equal(zl[1], 'npx=_bash_complete -o default -F _writ');
    assert.equal(zl[2], 'reply list');
  });

  it('is quiet when the server cannot answer: no candidates, nothing on stderr', async () => {
    const hole = createTlsServer(() => undefined); // no certificate: every handshake fails
    await new Promise<void>((r) => hole.listen(0, '127.0.0.1', () => r()));
    try {
      for (const server of ['https://127.0.0.1:1', `https://127.0.0.1:${(hole.address() as { port: number }).port}`]) {
        const r = await complete(['writ', 'entry', 'show', ''], { WRIT_SERVER: server, WRIT_TOKEN: 'x', WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem') });
        assert.deepEqual(r.replies, []);
        assert.equal(r.stderr, '');
      }
    } finally {
      await new Promise((r) => hole.close(r));
    }
  });
});

/** Every leaf command of the program, by its path (`policy get`), hidden ones too. */
function leafCommands(c: Command, path: string[] = []): string[] {
  return c.commands.flatMap((s) => (s.commands.length ? leafCommands(s, [...path, s.name()]) : [[...path, s.name()].join(' ')]));
}

/**
 * The rule: every command is a read, whose answer -o json and -o yaml must print, unless it is
 * listed here with the reason it is not (it changes state, runs a process, or prints a script).
 */
const NOT_READS: Record<string, string> = {
  'server start': 'runs the server',
  'server backup': 'a write (an archive file)',
  'server restore': 'a write (a data directory)',
  'agent start': 'runs an agent',
  proxy: 'runs a proxy',
  'oci-hook prepare': "prints or edits an OCI runtime config (JSON is the runtime's format)",
  'oci-hook create-container': 'an OCI runtime hook: mounts, prints nothing',
  csi: 'runs the CSI node plugin',
  demo: 'runs the demo',
  completion: 'prints a shell script',
  __complete: "prints the shell's candidates, one per line (hidden)",
  'entry create': 'a write',
  'entry update': 'a write',
  'entry delete': 'a write',
  'token create': 'a write (issues a join token)',
  'admin-token create': 'a write (issues an API token)',
  'admin-token delete': 'a write',
  'bundle set': 'a write',
  'bundle delete': 'a write',
  'svid mint-x509': 'a write (issues an SVID, written to files)',
  'svid mint-jwt': 'a write (issues a JWT-SVID)',
  'agent evict': 'a write',
  'agent ban': 'a write',
  'policy apply': 'a write',
  'policy delete': 'a write',
  'policy rollback': 'a write',
  'quarantine add': 'a write',
  'quarantine remove': 'a write',
  'vuln ingest': 'a write (stores a report)',
  'vuln vex delete': 'a write',
  'vuln quarantine': 'a write',
  'vuln release': 'a write',
  'image add': 'a write (adds to the inventory)',
  'federation create': 'a write',
  'federation refresh': 'a write (fetches the peer bundle now)',
  'federation delete': 'a write',
  'learn start': 'a write (a new policy revision)',
  'alerts ack': 'a write (the alert is acknowledged)',
  'alerts undo': 'a write (lifts a quarantine)',
  'learn stop': 'a write (a new policy revision)',
  'policy promote': 'a write (a new policy revision)',
  'audit export-checkpoint': 'prints the signed note itself (a file for a witness), whatever -o says',
};
/** Reads whose document has one format of its own, whatever -o says (their help says so). */
const ONE_FORMAT: Record<string, RegExp> = { 'vuln vex export': /The document is JSON whatever -o says \(OpenVEX is JSON\)/ };
/** Reads that need what this file cannot start; the named file runs them with -o json. */
const ELSEWHERE: Record<string, string> = {
  'image verify': 'test/e2e/image-verify.test.ts',
  // A proposal needs a destination that learned from real calls (and --apply-shadow is a write).
  'policy propose': 'test/e2e/learning.test.ts',
};

describe('-o on every read', () => {
  let agent: AgentProcess | undefined;
  let stubs: string | undefined;
  after(async () => {
    await agent?.stop();
    if (agent) cleanup(agent.dataDir);
    if (stubs) cleanup(stubs);
  });

  it('every read command of the program (walked from buildProgram) prints the same data with -o json and -o yaml; any other is listed with why it is not a read', async (t) => {
    const ME = 'spiffe://e2e.test/ns/o-orders';
    await applyPolicy(srv, work, ordersPolicy(ME, 'GET').replace('name: orders', 'name: o-orders'));
    const ok = async (args: string[]): Promise<string> => {
      const r = await writ(srv, args);
      assert.equal(r.code, 0, `writ ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    // This process's identity from an agent of its own (svid fetch|jwt|watch), and a decision it made (decisions show|tail).
    const e = JSON.parse(
      await ok([
        'entry',
        'create',
        '--spiffe-id',
        ME,
        '--parent-id',
        'spiffe://e2e.test/writ/agent/o-node',
        '--selector',
        `unix:uid:${process.getuid!()}`,
        '-o',
        'json',
      ]),
    ) as { id: string };
    agent = await startAgentProcess(srv, { joinToken: (await ok(['token', 'create', '--node-name', 'o-node'])).trim() });
    stubs = await pythonStubs('writ_authz.proto');
    const decision = await waitFor('a decision from the agent', async () => {
      const r = await run(DEBIAN_PYTHON, [
        join(ROOT, 'test/e2e/fixtures/authz_client.py'),
        stubs!,
        agent!.socket,
        'spiffe://e2e.test/ns/web/o',
        ME,
        'GET /v1/orders/7',
      ]);
      const d = JSON.parse(r.stdout) as { decision?: string; id?: string };
      return d.decision === 'allow' && d.id ? d.id : undefined;
    });
    await waitFor('the decision in the log', async () => ((await writ(srv, ['decisions', 'show', decision])).code === 0 ? true : undefined));
    // An image in the inventory (from a report), a federation relationship, files for the offline checks.
    await ok(['vuln', 'ingest', '-f', join(ROOT, 'packages/vuln/src/testdata/trivy-image.json')]);
    await ok(['federation', 'create', '--trust-domain', 'o-partner.test', '--bundle-endpoint-url', 'https://127.0.0.1:1/', '--profile', 'https_web']);
    const pod = join(work, 'o-pod.yaml');
    writeFileSync(
      pod,
      `apiVersion: v1\nkind: Pod\nmetadata: { name: o }\nspec: { containers: [{ name: c, image: registry.example/o@sha256:${'1'.repeat(64)} }] }\n`,
    );
    const tests = join(work, 'o-tests.yaml');
    writeFileSync(
      tests,
      `${ordersPolicy(ME, 'GET')}---\nkind: PolicyTest\ncases:\n  - { name: web reads, from: spiffe://e2e.test/ns/web/a, to: ${ME}, action: GET /v1/orders/1, expect: allow }\n`,
    );
    const sock = ['--socket', agent.socket];

    /** How each read is run; `stream`: its first item is read, then it is stopped. */
    const READS: Record<string, { args: string[]; codes?: number[]; stream?: true; shapeOnly?: true }> = {
      'entry list': { args: ['entry', 'list'] },
      'entry show': { args: ['entry', 'show', e.id] },
      'admin-token list': { args: ['admin-token', 'list'] },
      'bundle show': { args: ['bundle', 'show'] },
      'bundle list': { args: ['bundle', 'list'] },
      'svid fetch': { args: ['svid', 'fetch', ...sock] },
      'svid jwt': { args: ['svid', 'jwt', ...sock, '--audience', 'spiffe://e2e.test/ns/db'] },
      'svid watch': { args: ['svid', 'watch', ...sock], stream: true },
      'agent list': { args: ['agent', 'list'] },
      'agent show': { args: ['agent', 'show', 'spiffe://e2e.test/writ/agent/o-node'] },
      'admission check': { args: ['admission', 'check', '-f', pod, '--pss', 'baseline'] },
      'admission events': { args: ['admission', 'events'] },
      'admission manifests': { args: ['admission', 'manifests'] },
      'admission images': { args: ['admission', 'images'] },
      'policy list': { args: ['policy', 'list'] },
      'policy get': { args: ['policy', 'get', 'o-orders'] },
      'policy history': { args: ['policy', 'history'] },
      'policy diff': { args: ['policy', 'diff', '1'] },
      'policy test': { args: ['policy', 'test', tests] },
      'policy status': { args: ['policy', 'status'] },
      'policy hits': { args: ['policy', 'hits', '--to', ME] },
      'learn list': { args: ['learn', 'list'] },
      'alerts list': { args: ['alerts', 'list'] },
      'learn edges': { args: ['learn', 'edges', '--to', ME] },
      'decisions query': { args: ['decisions', 'query'] },
      'decisions show': { args: ['decisions', 'show', decision] },
      'decisions tail': { args: ['decisions', 'tail', '--to', ME], stream: true },
      'quarantine list': { args: ['quarantine', 'list'] },
      'authz check': { args: ['authz', 'check', '--from', 'spiffe://e2e.test/ns/web/o', '--to', ME, '--action', 'GET /v1/orders/7'] },
      version: { args: ['version'] },
      // Agents stopped by other tests of this file may be WARN or FAIL; -o is what is checked here.
      doctor: { args: ['doctor'], codes: [0, 1], shapeOnly: true },
      'vuln affected': { args: ['vuln', 'affected', 'CVE-2024-0001'] },
      'vuln rollout': { args: ['vuln', 'rollout', 'CVE-2024-0001'] },
      'vuln list': { args: ['vuln', 'list'] },
      'vuln vex list': { args: ['vuln', 'vex', 'list'] },
      'vuln events': { args: ['vuln', 'events'] },
      'image show': { args: ['image', 'show', `sha256:${'9e'.repeat(32)}`] },
      'workload list': { args: ['workload', 'list'] },
      'federation list': { args: ['federation', 'list'] },
      'federation show': { args: ['federation', 'show', 'o-partner.test'] },
      // exit 1 once the relationship created above has failed to reach its (closed) endpoint, 0 while its first fetch is pending.
      'federation status': { args: ['federation', 'status'], codes: [0, 1] },
      // The log grows while this runs (the agent's reports, renewals): the two runs agree on fields and types.
      'audit verify': { args: ['audit', 'verify'], shapeOnly: true },
      'audit prove': { args: ['audit', 'prove', '0'], shapeOnly: true },
      'audit tail': { args: ['audit', 'tail', '-n', '999999', '-f'], stream: true },
    };

    // The walk: a command added to the CLI is a read until it is listed above as something else.
    const { buildProgram } = await import('../../packages/cli/src/main.ts');
    const walked = leafCommands(buildProgram());
    const unclassified = walked.filter((c) => !(c in READS) && !(c in NOT_READS) && !(c in ONE_FORMAT) && !(c in ELSEWHERE));
    assert.deepEqual(unclassified, [], 'commands that are neither exercised here with -o json and -o yaml nor listed as not reads');
    const gone = [...Object.keys(READS), ...Object.keys(NOT_READS), ...Object.keys(ONE_FORMAT), ...Object.keys(ELSEWHERE)].filter((c) => !walked.includes(c));
    assert.deepEqual(gone, [], 'listed commands the CLI no longer has');

    const parseYaml = (text: string): unknown => {
      const docs = parseAllDocuments(text).map((d) => d.toJS() as unknown);
      return docs.length === 1 ? docs[0] : docs;
    };
    /** JSON over several lines: what a command printed that ignored -o yaml (one-line [] or {} is both). */
    const isJson = (text: string): boolean => {
      if (text.trim().split('\n').length <= 1) return false;
      try {
        JSON.parse(text);
        return true;
      } catch {
        return false;
      }
    };
    const firstItem = async (args: string[], format: 'json' | 'yaml'): Promise<unknown> => {
      const w = spawnWrit([...args, '-o', format], { WRIT_SERVER: srv.url, WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem'), WRIT_TOKEN: srv.adminToken });
      try {
        // One whole item: a JSON line, or a YAML document with the next one's --- begun.
        const text = await waitFor(`the first item of ${args.join(' ')} -o ${format}`, async () => {
          const out = w.out();
          if (format === 'json') return out.includes('\n') ? out.slice(0, out.indexOf('\n')) : undefined;
          return out.startsWith('---\n') && out.length > 4 ? out : undefined;
        });
        if (format === 'yaml') assert.ok(!isJson(text.replace(/^---\n/, '')), `${args.join(' ')} -o yaml printed JSON:\n${text.slice(0, 300)}`);
        return format === 'json' ? JSON.parse(text) : parseAllDocuments(text)[0]!.toJS();
      } finally {
        w.child.kill('SIGTERM');
        await w.exited;
      }
    };
    /** What two runs share once the fields that differ by time (expiry, tokens, the clock) are dropped. */
    const varies = /^(at|now|token|svid|serial|expiresAt|checkedAt|nextRefreshAt)$|seconds|since|ms$/i;
    const stable = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (k, x) => (varies.test(k) ? undefined : x)));
    const shape = (v: unknown): unknown =>
      Array.isArray(v) ? v.map(shape) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)])) : typeof v;
    for (const cmd of walked.filter((c) => c in READS)) {
      const { args, codes = [0], stream, shapeOnly } = READS[cmd]!;
      const t0 = performance.now();
      const out: Partial<Record<'json' | 'yaml', unknown>> = {};
      for (const format of ['json', 'yaml'] as const) {
        if (stream) {
          out[format] = await firstItem(args, format);
          continue;
        }
        const r = await writ(srv, [...args, '-o', format]);
        assert.ok(codes.includes(r.code ?? -1), `writ ${cmd} -o ${format}: exit ${r.code}: ${r.stderr}`);
        if (format === 'yaml') assert.ok(!isJson(r.stdout), `writ ${cmd} -o yaml printed JSON (YAML parses it too):\n${r.stdout.slice(0, 300)}`);
        out[format] = format === 'json' ? JSON.parse(r.stdout) : parseYaml(r.stdout);
      }
      assert.ok(out.json !== null && typeof out.json === 'object', `${cmd} -o json: ${JSON.stringify(out.json)}`);
      // admission manifests: JSON wraps the documents in a List, YAML gives them one by one (kubectl apply -f takes both).
      const json = cmd === 'admission manifests' ? (out.json as { items: unknown[] }).items : out.json;
      // doctor's messages carry ages ("18s ago"): the two runs agree on the fields and their types.
      const same = shapeOnly ? shape : stable;
      assert.deepEqual(same(out.yaml), same(json), `${cmd}: -o yaml and -o json differ`);
      t.diagnostic(`${cmd}: ${Math.round(performance.now() - t0)} ms`);
    }
    for (const [cmd, says] of Object.entries(ONE_FORMAT)) {
      const words = cmd.split(' ');
      assert.match((await writ(undefined, [...words, '--help'])).stdout.replace(/\s+/g, ' '), says, `${cmd} --help says why -o is not honoured`);
      const y = await writ(srv, [...words, '-o', 'yaml']);
      assert.equal(y.code, 0, y.stderr);
      assert.doesNotThrow(() => JSON.parse(y.stdout), `${cmd} -o yaml prints its JSON document: ${y.stdout.slice(0, 200)}`);
    }
    for (const [cmd, file] of Object.entries(ELSEWHERE)) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      assert.ok(text.includes(`'${cmd.split(' ').join("', '")}'`) && text.includes("'-o', 'json'"), `${file} runs ${cmd} with -o json`);
    }
  });
});

describe('help', () => {
  const help = async (args: string[]) => {
    const r = await writ(undefined, [...args, '--help']);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.replace(/\s+/g, ' ');
  };

  it('writ --help names the exit codes; every new command and flag is described, the pinning flags in one wording everywhere', async () => {
    const top = await help([]);
    assert.match(top, /Exit codes: 0 ok, 1 error, 2 usage, 3 policy violation/);
    for (const c of ['version', 'doctor', 'completion <shell>']) assert.ok(top.includes(` ${c} `), `writ --help lists ${c}`);
    for (const args of [
      ['version'],
      ['doctor'],
      ['decisions', 'show'],
      ['policy', 'apply'],
      ['quarantine', 'add'],
      ['quarantine', 'remove'],
      ['entry', 'list'],
      ['agent', 'start'],
    ]) {
      const h = await help(args);
      assert.ok(
        h.includes(
          "--trust-domain <td> the server's trust domain, to pin its identity spiffe://TD/writ/server (env WRIT_TRUST_DOMAIN; default: from --ca-file)",
        ),
        `${args.join(' ')}: ${h}`,
      );
      assert.ok(
        h.includes('--server-spiffe-id <id> the SPIFFE ID the server must present (env WRIT_SERVER_SPIFFE_ID; default spiffe://TD/writ/server)'),
        args.join(' '),
      );
    }
    for (const args of [
      ['policy', 'apply'],
      ['quarantine', 'add'],
      ['quarantine', 'remove'],
    ])
      assert.match(
        await help(args),
        /--wait \[timeout\] return once every live agent enforces .* \(e\.g\. --wait=2m; default 30s\); exit 1 listing those that did not/,
      );
    const apply = await help(['policy', 'apply']);
    assert.match(apply, /a failing one stops the apply \(exit 3\)/);
    assert.match(apply, /--skip-tests apply even when the file's PolicyTest cases fail/);
    assert.match(await help(['decisions', 'show']), /decision id \(a 403 from a proxy or the middleware carries it\)/);
    assert.match(await help(['doctor']), /--socket <path>.*the exit status is 1 when any check fails/);
    assert.match(await help(['version']), /exit 1 when the server cannot be reached/);
    assert.match(await help(['completion']), /for writ and npx writ/);
    // Offline commands do not offer the flags that pin a server they never call.
    assert.doesNotMatch(await help(['policy', 'test']), /--server-spiffe-id/);
    const fish = await writ(undefined, ['completion', 'fish']);
    assert.equal(fish.code, 2);
    assert.match(fish.stderr, /completion supports bash and zsh/);
  });
});
