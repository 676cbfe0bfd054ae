/**
 * go-spiffe, the SPIFFE project's reference Go library, as the workload: a small Go program
 * (test/go/gospiffe, go-spiffe v2.9.0 pinned, built by .ci/run into test/go/bin) runs under other
 * uids against a real server and agent. X509Source, JWTSource, FetchX509Bundles with a federated
 * bundle, ValidateJWTSVID and jwtsvid.ParseAndValidate of another workload's token, and go-spiffe's
 * tlsconfig mTLS client and server talking to `writ proxy` inbound and outbound, with the
 * refusals on both sides when the authorized SPIFFE ID does not match.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  applyPolicy,
  cleanup,
  onFreePorts,
  run,
  startAgentProcess,
  startProxyProcess,
  startServerProcess,
  waitFor,
  writ,
  type AgentProcess,
  type RunResult,
  type ServerProcess,
} from './helpers.ts';
import { GOSPIFFE, gospiffe as runGospiffe, spawnGospiffe, type GoResult } from './gospiffe.ts';

const TD = 'spiffe://e2e.test/ns';
/** The go-spiffe client workload (uid 1005), federating with partner.test. */
const GO_CLIENT = `${TD}/go/sa/client`;
/** The go-spiffe server workload (uid 1006), which also mints the JWT-SVID the client validates. */
const GO_SERVER = `${TD}/go/sa/server`;
/** A go-spiffe workload (uid 1007) whose X.509-SVIDs live 10 s: rotated while it watches. */
const GO_ROTATING = `${TD}/go/sa/rotating`;
/** A uid (1008) with no entry until the test creates one while a go-spiffe X509Source waits. */
const GO_LATE = `${TD}/go/sa/late`;
/** Behind `writ proxy` inbound (uid 0): a plain HTTP app that reports who called. */
const ORDERS = `${TD}/orders/sa/api`;
/** `writ proxy` outbound (uid 0) to the go-spiffe servers. */
const WEB = `${TD}/web/sa/frontend`;
const UID = { client: 1005, server: 1006, rotating: 1007, late: 1008 } as const;

let srv: ServerProcess;
let partner: ServerProcess;
let agent: AgentProcess;
let sockDir: string;
let app: Server;
/** Every request the app behind the inbound proxy received. */
const seen: Array<{ path: string; peer: string | undefined }> = [];
const children: ChildProcess[] = [];
const proxyLogs: string[] = [];
const port: Record<string, number> = {};
/** The go-spiffe servers: `ok` authorizes WEB (the proxy's identity), `strict` only an ID nobody has. */
const goServers: Record<string, { addr: string; lines: Array<Record<string, string>> }> = {};

/** The go-spiffe program as `uid` against the agent's socket; its one JSON line parsed. */
const gospiffe = (uid: number, args: string[], input?: string): Promise<GoResult> => runGospiffe(uid, agent.socket, args, input);

/** A long-running go-spiffe command as `uid`: resolves with its JSON lines so far once `ready` says so. */
const spawnGo = (uid: number, args: string[], ready: (line: Record<string, string>) => boolean) => spawnGospiffe(uid, agent.socket, args, children, ready);

/** `writ proxy` as root (ORDERS and WEB are uid 0's identities); resolves once it listens. */
async function startProxy(args: string[]): Promise<ChildProcess> {
  const child = await startProxyProcess(agent.socket, args, { logs: proxyLogs });
  children.push(child);
  return child;
}

async function ok(server: ServerProcess, args: string[]): Promise<RunResult> {
  const r = await writ(server, args);
  assert.equal(r.code, 0, `writ ${args.join(' ')}: ${r.stderr}`);
  return r;
}

const entry = (id: string, uid: number, ...extra: string[]): Promise<RunResult> =>
  ok(srv, ['entry', 'create', '--spiffe-id', id, '--parent-id', 'spiffe://e2e.test/writ/agent/gs', '--selector', `unix:uid:${uid}`, ...extra]);

/** SHA-256 of each certificate in a PEM file, as go-spiffe's side prints them (lowercase hex, sorted). */
function pemFingerprints(file: string): string[] {
  const pems = readFileSync(file, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return pems.map((p) => new X509Certificate(p).fingerprint256.replaceAll(':', '').toLowerCase()).sort();
}

/** curl against a local plaintext port (an outbound proxy's listener): status and JSON body. */
async function curl(name: string, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await run('curl', ['-sS', '-w', '\n%{http_code}', `http://127.0.0.1:${port[name]}${path}`]);
  const lines = r.stdout.trimEnd().split('\n');
  const status = Number(lines.pop());
  return { status, body: JSON.parse(lines.join('\n') || '{}') as Record<string, unknown> };
}

before(async () => {
  if (!existsSync(GOSPIFFE)) throw new Error(`${GOSPIFFE} is missing: build it as .ci/run does (cd test/go/gospiffe && go build -o ../bin/gospiffe .)`);
  [srv, partner] = await Promise.all([startServerProcess(), startServerProcess({ args: ['--trust-domain', 'partner.test'] })]);
  await entry(GO_CLIENT, UID.client, '--federates-with', 'partner.test');
  await entry(GO_SERVER, UID.server);
  await entry(GO_ROTATING, UID.rotating, '--x509-svid-ttl', '10s');
  await entry(ORDERS, 0);
  await entry(WEB, 0);
  const token = JSON.parse((await ok(srv, ['token', 'create', '--node-name', 'gs', '-o', 'json'])).stdout).token as string;
  // The socket in a directory other uids reach: attestation decides who gets what, not permissions.
  sockDir = mkdtempSync(join(tmpdir(), 'writ-gs-sock-'));
  chmodSync(sockDir, 0o755);
  agent = await startAgentProcess(srv, { joinToken: token, socket: join(sockDir, 'api.sock') });
  await applyPolicy(
    srv,
    agent.dataDir,
    `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${ORDERS}
  rules:
    - { effect: allow, from: ["${GO_CLIENT}"], actions: [{ methods: [GET], paths: ["/v1/orders/*"] }] }
`,
  );
  app = createServer((req, res) => {
    const peer = req.headers['x-writ-peer-id'] as string | undefined;
    seen.push({ path: req.url!, peer });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ peer: peer ?? null, path: req.url }));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  await onFreePorts(1, ([p]) => {
    port['orders'] = p!;
    return startProxy(['--spiffe-id', ORDERS, '--inbound', `127.0.0.1:${p}=127.0.0.1:${(app.address() as AddressInfo).port}`]);
  });
  for (const [name, allowed] of [
    ['ok', WEB],
    ['strict', `${TD}/nobody`],
  ] as const) {
    const { lines } = await spawnGo(UID.server, ['serve', '-authorize', allowed], (l) => l['event'] === 'listening');
    goServers[name] = { addr: lines.find((l) => l['event'] === 'listening')!['addr']!, lines };
  }
  await onFreePorts(3, (picked) => {
    for (const [i, k] of ['toOk', 'toStrict', 'wrongId'].entries()) port[k] = picked[i]!;
    return startProxy([
      '--spiffe-id',
      WEB,
      '--outbound',
      `127.0.0.1:${port['toOk']}=${GO_SERVER}@${goServers['ok']!.addr}`,
      '--outbound',
      `127.0.0.1:${port['toStrict']}=${GO_SERVER}@${goServers['strict']!.addr}`,
      // The go-spiffe server is GO_SERVER, not the ID this outbound expects: Writ must refuse it.
      '--outbound',
      `127.0.0.1:${port['wrongId']}=${TD}/go/sa/other@${goServers['ok']!.addr}`,
    ]);
  });
});

after(async () => {
  for (const c of children) c.kill();
  app?.close();
  await agent?.stop();
  await Promise.all([srv?.stop(), partner?.stop()]);
  for (const d of [srv?.dataDir, partner?.dataDir, agent?.dataDir, sockDir]) if (d) cleanup(d);
});

describe('go-spiffe against the agent', () => {
  it("workloadapi.X509Source: the caller's SVID, chained to the bundle the server serves, verified by go-spiffe", async () => {
    const r = await gospiffe(UID.client, ['x509']);
    assert.equal(r.code, 0, r.raw.stdout + r.raw.stderr);
    const svid = r.out['svid'] as Record<string, unknown>;
    assert.equal(svid['spiffeId'], GO_CLIENT);
    assert.equal(svid['chainVerifies'], true, 'x509svid.Verify accepts the chain against the X509Source bundle');
    assert.equal(svid['bundleTrustDomain'], 'spiffe://e2e.test');
    assert.deepEqual(svid['bundleAuthorities'], pemFingerprints(join(srv.dataDir, 'bundle.pem')), 'the authorities the server publishes');
    const other = await gospiffe(UID.server, ['x509']);
    assert.equal((other.out['svid'] as Record<string, unknown>)['spiffeId'], GO_SERVER, 'another uid, its own identity');
  });

  it('X509Source sees a rotated SVID (10 s lifetime) through its Updated channel: a new serial and key, same ID, later expiry', async () => {
    const { lines } = await spawnGo(UID.rotating, ['x509', '-rotate'], (l) => l['event'] === 'rotated');
    const [first, rotated] = lines.map((l) => l['svid'] as unknown as Record<string, string>);
    assert.equal(first!['spiffeId'], GO_ROTATING);
    assert.equal(rotated!['spiffeId'], GO_ROTATING);
    assert.notEqual(rotated!['serial'], first!['serial']);
    assert.notEqual(rotated!['keyFingerprint'], first!['keyFingerprint'], 'a fresh key, not the old one re-signed');
    assert.ok(Date.parse(rotated!['notAfter']!) > Date.parse(first!['notAfter']!));
    assert.equal(rotated!['chainVerifies'] as unknown, true);
  });

  it('a go-spiffe X509Source waiting on a uid without an entry gets its SVID once the entry is created, without a restart', async () => {
    // The source connects and is refused (PermissionDenied, which go-spiffe retries) before the entry exists.
    const refused = await spawnGo(UID.late, ['x509'], (l) => l['event'] === 'workloadapi-error' && /PermissionDenied/.test(l['error']!));
    await entry(GO_LATE, UID.late);
    // Bounded as the Go side is (go-spiffe retries a refused watch with a growing backoff).
    const got = await waitFor('the SVID at the waiting source', async () => refused.lines.find((l) => l['event'] === 'svid'), 90_000);
    assert.equal((got['svid'] as unknown as Record<string, string>)['spiffeId'], GO_LATE);
  });

  it('FetchX509Bundles and FetchJWTBundles: a bundle set with PUT /v1/federated-bundles/partner.test reaches the entry that federates with it, and only that one', async () => {
    const before = await gospiffe(UID.client, ['bundles']);
    assert.equal(before.code, 0, before.raw.stdout + before.raw.stderr);
    assert.deepEqual(
      (before.out['x509'] as Array<{ trustDomain: string }>).map((b) => b.trustDomain),
      ['e2e.test'],
    );
    // A token from the partner domain is refused while its bundle is unknown, by the agent and by go-spiffe.
    const partnerJwt = JSON.parse(
      (await ok(partner, ['svid', 'mint-jwt', '--spiffe-id', 'spiffe://partner.test/billing', '--audience', GO_CLIENT, '-o', 'json'])).stdout,
    ).token as string;
    const unknown = await gospiffe(UID.client, ['validate', '-audience', GO_CLIENT], partnerJwt);
    assert.match(String((unknown.out['workloadApi'] as Record<string, unknown>)['error']), /InvalidArgument/);
    assert.match(String((unknown.out['local'] as Record<string, unknown>)['error']), /no bundle found for trust domain "partner.test"/);

    const jwks = (await ok(partner, ['bundle', 'show'])).stdout;
    const header = join(agent.dataDir, 'auth.header');
    writeFileSync(header, `authorization: Bearer ${srv.adminToken}\n`, { mode: 0o600 });
    const put = await run('curl', [
      '-sS',
      '--cacert',
      join(srv.dataDir, 'bundle.pem'),
      '-H',
      `@${header}`,
      '-H',
      'content-type: application/json',
      '-X',
      'PUT',
      '--data-binary',
      jwks,
      '-w',
      '\n%{http_code}',
      `${srv.url}/v1/federated-bundles/partner.test`,
    ]);
    assert.match(put.stdout, /\n20[01]$/, put.stdout + put.stderr);

    const after = await waitFor('the federated bundle at the go-spiffe client', async () => {
      const r = await gospiffe(UID.client, ['bundles']);
      return (r.out['x509'] as Array<{ trustDomain: string }> | undefined)?.some((b) => b.trustDomain === 'partner.test') ? r : undefined;
    });
    const x509 = after.out['x509'] as Array<{ trustDomain: string; authorities: string[] }>;
    assert.deepEqual(
      x509.map((b) => b.trustDomain),
      ['e2e.test', 'partner.test'],
    );
    assert.deepEqual(x509[1]!.authorities, pemFingerprints(join(partner.dataDir, 'bundle.pem')), "partner.test's own CA");
    const partnerKids = (JSON.parse(jwks) as { keys: Array<{ use: string; kid: string }> }).keys
      .filter((k) => k.use === 'jwt-svid')
      .map((k) => k.kid)
      .sort();
    const jwt = after.out['jwt'] as Array<{ trustDomain: string; keyIds: string[] }>;
    assert.deepEqual(
      jwt.map((b) => b.trustDomain),
      ['e2e.test', 'partner.test'],
    );
    assert.deepEqual(jwt[1]!.keyIds, partnerKids);
    // The entry that does not federate with partner.test does not get its bundle.
    const server = await gospiffe(UID.server, ['bundles']);
    assert.deepEqual(
      (server.out['x509'] as Array<{ trustDomain: string }>).map((b) => b.trustDomain),
      ['e2e.test'],
    );
    // Now the partner token validates, by the agent and locally against the federated JWT bundle.
    const known = await gospiffe(UID.client, ['validate', '-audience', GO_CLIENT], partnerJwt);
    assert.deepEqual(known.out, {
      workloadApi: { spiffeId: 'spiffe://partner.test/billing', audience: [GO_CLIENT] },
      local: { spiffeId: 'spiffe://partner.test/billing', audience: [GO_CLIENT] },
    });
  });

  it("tlsconfig with the federated bundle: the federating go-spiffe client accepts a partner.test server's SVID; a workload without that bundle refuses it", async () => {
    // A partner.test service: an HTTPS server with an X.509-SVID the partner server minted.
    const out = join(agent.dataDir, 'partner-svid');
    await ok(partner, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://partner.test/billing', '--out', out]);
    const billing = createHttpsServer({ cert: readFileSync(join(out, 'svid.pem')), key: readFileSync(join(out, 'svid.key')) }, (_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end('{"service":"billing"}');
    });
    await new Promise<void>((r) => billing.listen(0, '127.0.0.1', () => r()));
    try {
      const at = `https://127.0.0.1:${(billing.address() as AddressInfo).port}/v1/invoices`;
      const r = await gospiffe(UID.client, ['client', '-authorize', 'spiffe://partner.test/billing', '-url', at]);
      assert.equal(r.code, 0, r.raw.stdout + r.raw.stderr);
      assert.equal(r.out['peer'], 'spiffe://partner.test/billing');
      assert.deepEqual(r.out['body'], { service: 'billing' });
      // The same call from the workload whose entry does not federate with partner.test.
      const refused = await gospiffe(UID.server, ['client', '-authorize', 'spiffe://partner.test/billing', '-url', at]);
      assert.equal(refused.code, 1);
      assert.match(String(refused.out['error']), /could not get X509 bundle: .*no X\.509 bundle for trust domain "partner\.test"/);
    } finally {
      billing.close();
    }
  });

  it('JWTSource.FetchJWTSVID by one workload; ValidateJWTSVID and jwtsvid.ParseAndValidate by another; the wrong audience or a changed signature refused by both', async () => {
    const minted = await gospiffe(UID.server, ['jwt', '-audience', GO_CLIENT]);
    assert.equal(minted.code, 0, minted.raw.stdout + minted.raw.stderr);
    assert.equal(minted.out['spiffeId'], GO_SERVER);
    assert.deepEqual(minted.out['audience'], [GO_CLIENT]);
    const token = String(minted.out['token']);
    assert.equal(token.split('.').length, 3);
    const valid = await gospiffe(UID.client, ['validate', '-audience', GO_CLIENT], token);
    assert.deepEqual(valid.out, { workloadApi: { spiffeId: GO_SERVER, audience: [GO_CLIENT] }, local: { spiffeId: GO_SERVER, audience: [GO_CLIENT] } });

    const wrongAud = await gospiffe(UID.client, ['validate', '-audience', `${TD}/elsewhere`], token);
    assert.match(String((wrongAud.out['workloadApi'] as Record<string, unknown>)['error']), /InvalidArgument/);
    assert.match(String((wrongAud.out['local'] as Record<string, unknown>)['error']), /audience/i);

    const [h, p, s] = token.split('.');
    const flipped = `${h}.${p}.${s!.slice(0, 10)}${s![10] === 'A' ? 'B' : 'A'}${s!.slice(11)}`;
    const tampered = await gospiffe(UID.client, ['validate', '-audience', GO_CLIENT], flipped);
    assert.match(String((tampered.out['workloadApi'] as Record<string, unknown>)['error']), /InvalidArgument/);
    assert.match(String((tampered.out['local'] as Record<string, unknown>)['error']), /cryptographic primitive/, 'go-jose: the signature does not verify');
  });
});

describe('go-spiffe tlsconfig and writ proxy', () => {
  const url = (path: string): string => `https://127.0.0.1:${port['orders']}${path}`;

  for (const [proto, flags] of [
    ['HTTP/1.1', []],
    ['HTTP/2.0', ['-http2']],
  ] as const) {
    it(`inbound: a go-spiffe MTLSClientConfig client (AuthorizeID the proxy's ID) is served over ${proto}; Writ's policy decides on its ID`, async () => {
      const r = await waitFor('an allowed call through the inbound proxy', async () => {
        const x = await gospiffe(UID.client, ['client', '-authorize', ORDERS, '-url', url('/v1/orders/7'), ...flags]);
        return x.out['status'] === 200 ? x : undefined;
      });
      assert.equal(r.out['peer'], ORDERS, "go-spiffe accepted Writ's SVID for the authorized ID");
      assert.equal(r.out['proto'], proto);
      assert.deepEqual(r.out['body'], { peer: GO_CLIENT, path: '/v1/orders/7' }, "Writ identified go-spiffe's client and told the app");
      const denied = await gospiffe(UID.client, ['client', '-authorize', ORDERS, '-url', url('/v1/admin'), ...flags]);
      assert.equal(denied.out['status'], 403);
      assert.equal((denied.out['body'] as Record<string, unknown>)['code'], 'NO_MATCHING_ALLOW');
      // Another go-spiffe workload, which no rule allows, is identified and refused.
      const stranger = await gospiffe(UID.server, ['client', '-authorize', ORDERS, '-url', url('/v1/orders/7'), ...flags]);
      assert.equal(stranger.out['status'], 403);
      assert.equal((stranger.out['body'] as Record<string, unknown>)['code'], 'NO_MATCHING_ALLOW');
    });
  }

  it("inbound: a go-spiffe client that authorizes another ID refuses Writ's proxy before any request is sent", async () => {
    const count = seen.length;
    const r = await gospiffe(UID.client, ['client', '-authorize', `${TD}/billing/sa/api`, '-url', url('/v1/orders/8')]);
    assert.equal(r.code, 1);
    assert.match(String(r.out['error']), new RegExp(`unexpected ID "${ORDERS}"`));
    assert.equal(seen.length, count, 'the app saw nothing');
  });

  it('outbound: writ proxy calls a go-spiffe MTLSServerConfig server that authorizes its ID; both sides see the other', async () => {
    const r = await waitFor('a call through the outbound proxy', async () => {
      const x = await curl('toOk', '/v1/hello');
      return x.status === 200 ? x : undefined;
    });
    assert.deepEqual(r.body, { server: GO_SERVER, peer: WEB, method: 'GET', path: '/v1/hello' }, "go-spiffe accepted Writ's SVID as the authorized ID");
    assert.ok(goServers['ok']!.lines.some((l) => l['event'] === 'request' && l['peer'] === WEB && l['path'] === '/v1/hello'));
  });

  it('outbound: a go-spiffe server that authorizes another ID refuses the proxy (502 ERR_UPSTREAM), and says why', async () => {
    const r = await curl('toStrict', '/v1/hello');
    assert.equal(r.status, 502);
    assert.equal(r.body['code'], 'ERR_UPSTREAM');
    await waitFor('the refusal at the go-spiffe server', async () =>
      goServers['strict']!.lines.some((l) => l['event'] === 'server-error' && l['error']!.includes(`unexpected ID "${WEB}"`)) ? true : undefined,
    );
    assert.ok(!goServers['strict']!.lines.some((l) => l['event'] === 'request'), 'no request reached the handler');
  });

  it('outbound: writ proxy refuses a go-spiffe server whose SVID is not the ID it expects (502 ERR_UPSTREAM), and sends it nothing', async () => {
    const r = await curl('wrongId', '/v1/impostor');
    assert.equal(r.status, 502);
    assert.equal(r.body['code'], 'ERR_UPSTREAM');
    await waitFor('the refusal in the proxy log', async () => (proxyLogs.some((l) => l.includes('outbound connection refused')) ? true : undefined));
    assert.ok(!goServers['ok']!.lines.some((l) => l['path'] === '/v1/impostor'), 'the go-spiffe server got no request');
  });
});

describe('go-spiffe follows a CA rotation', () => {
  let rotating: ServerProcess;
  let rotatingAgent: AgentProcess;
  const ID = `${TD}/go/sa/ca-watcher`;
  before(async () => {
    // A 30 s CA: a successor is prepared (published) at half its life and activated at 5/6.
    rotating = await startServerProcess({ args: ['--ca-ttl', '30s'] });
    await ok(rotating, [
      'entry',
      'create',
      '--spiffe-id',
      ID,
      '--parent-id',
      'spiffe://e2e.test/writ/agent/gsca',
      '--selector',
      'unix:uid:1009',
      '--x509-svid-ttl',
      '6s',
    ]);
    const token = JSON.parse((await ok(rotating, ['token', 'create', '--node-name', 'gsca', '-o', 'json'])).stdout).token as string;
    rotatingAgent = await startAgentProcess(rotating, { joinToken: token, socket: join(sockDir, 'ca.sock') });
  });
  after(async () => {
    await rotatingAgent?.stop();
    await rotating?.stop();
    for (const d of [rotating?.dataDir, rotatingAgent?.dataDir]) if (d) cleanup(d);
  });

  it('X509Source: the next CA is in the bundle before any SVID chains to it, the SVID moves to it, the old CA stays trusted', async () => {
    const child = spawn('setpriv', ['--reuid=1009', '--regid=1009', '--clear-groups', GOSPIFFE, 'x509', '-socket', rotatingAgent.socket, '-until-new-ca'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.equal(code, 0, stdout + stderr);
    type Svid = { spiffeId: string; root: string; bundleAuthorities: string[]; chainVerifies: boolean };
    const events = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; svid?: Svid })
      .filter((e) => e.svid);
    const first = events[0]!.svid!;
    const last = events.at(-1)!;
    assert.equal(last.event, 'ca-rotated');
    const old = first.root;
    const next = last.svid!.root;
    assert.notEqual(next, old);
    assert.ok(
      events.slice(0, -1).some((e) => e.svid!.root === old && e.svid!.bundleAuthorities.includes(next)),
      'an update published the next CA while the SVID still chained to the old one',
    );
    assert.ok(last.svid!.bundleAuthorities.includes(old), 'the old CA is still in the bundle: SVIDs it signed stay valid');
    for (const e of events) {
      assert.equal(e.svid!.spiffeId, ID);
      assert.equal(e.svid!.chainVerifies, true);
    }
  });
});
