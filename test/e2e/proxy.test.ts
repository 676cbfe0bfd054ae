/**
 * Three workloads (web, orders, legacy) behind `writ proxy`, called with curl: allowed and denied
 * calls per policy, a policy change taking effect, quarantine closing a live connection, audit
 * mode, and hostile input at the proxy.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect as http2Connect, constants as h2constants } from 'node:http2';
import { connect } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import fc from 'fast-check';
import { normalizePath } from '@writ/policy';
import {
  DEBIAN_PYTHON,
  ROOT,
  WRIT,
  applyPolicy,
  cleanup,
  freePort,
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
import { CALLER, CASES, assertHttpAnswer, tablePolicy } from './enforcement-cases.ts';

const TD = 'spiffe://e2e.test/ns';
const ORDERS = `${TD}/orders/sa/api`;
const WEB = `${TD}/web/sa/frontend`;
const LEGACY = `${TD}/legacy/sa/batch`;
const REPORTS = `${TD}/reports/sa/api`;
const BILLING = `${TD}/billing/sa/grpc`;
/** The service the shared enforcement table is decided for. */
const TABLE = `${TD}/table/sa/api`;
/** A service behind the SDK middleware (not a proxy), run by one test as uid 1004. */
const MW = `${TD}/mw/sa/api`;
let srv: ServerProcess;
let agent: AgentProcess;
let sockDir: string | undefined;
let app: Server;
let grpcApp: ChildProcess | undefined;
const proxies: ChildProcess[] = [];
/** Every request the app received: method, target, and each x-writ-peer-id field it carried. */
const seen: Array<{ method: string; url: string; peers: string[]; via: string | undefined; maxForwards: string | undefined }> = [];
const logs: string[] = [];
const port: Record<string, number> = {};

const POLICY = (methods: string) => `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${ORDERS}
  rules:
    - { effect: allow, from: ["${TD}/web/**"], actions: [{ methods: [${methods}], paths: ["/v1/orders/*"] }] }
    - { effect: deny, from: ["${TD}/legacy/**"] }
---
apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: reports }
spec:
  to: ${REPORTS}
  mode: audit
  rules:
    - { effect: allow, from: ["${TD}/web/**"] }
---
apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: billing }
spec:
  to: ${BILLING}
  rules:
    - { effect: allow, from: ["${TD}/web/**"], actions: [{ grpc: [/billing.v1.Billing/Get, /billing.v1.Billing/Fail, /billing.v1.Billing/Watch] }] }
    - { effect: deny, from: ["${TD}/legacy/**"] }
---
apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: mw }
spec:
  to: ${MW}
  rules:
    - { effect: allow, from: ["${TD}/web/**"] }
---
${tablePolicy(TABLE)}`;

const apply = (yaml: string): Promise<void> => applyPolicy(srv, agent.dataDir, yaml);

/** `writ` against `server`; it must exit 0. */
async function ok(server: ServerProcess, args: string[]): Promise<RunResult> {
  const r = await writ(server, args);
  assert.equal(r.code, 0, `writ ${args.join(' ')}: ${r.stderr}`);
  return r;
}

/** Starts a proxy listening on `ports` (names in `port`, picked free, again if one was taken), with arguments built from them. */
function startProxyOn(ports: string[], args: () => string[], uid?: number): Promise<ChildProcess> {
  return onFreePorts(ports.length, (picked) => {
    for (const [i, k] of ports.entries()) port[k] = picked[i]!;
    return startProxy(args(), uid);
  });
}

/** Stops a proxy a test started for itself: it leaves `proxies`, whose members the tests expect running. */
function stopProxy(child: ChildProcess): void {
  proxies.splice(proxies.indexOf(child), 1);
  child.kill();
}

/** A proxy as root (all the uid:0 identities), or as `uid` (through setpriv), whose identities are its own. */
async function startProxy(args: string[], uid?: number): Promise<ChildProcess> {
  // A running proxy that exits stays in `proxies` (the tests check on it); one that never started is not one of them.
  const child = await startProxyProcess(agent.socket, args, { uid, logs });
  proxies.push(child);
  return child;
}

const curl = (name: string, args: string[] = []) => run('curl', ['-sS', '-w', '\n%{http_code}', ...args, `http://127.0.0.1:${port[name]}/v1/orders/7`]);
const status = (r: { stdout: string }) => r.stdout.trim().split('\n').pop();
const body = (r: { stdout: string }) => JSON.parse(r.stdout.trim().split('\n').slice(0, -1).join('\n')) as Record<string, unknown>;

/** Writes the pieces, half-closes, and returns what came back once the proxy closed (or 'HANG'). */
/** An mTLS connection to 127.0.0.1:`port` with the SVID in `files` (bundle, certificate, key paths), offering `alpn`. */
function mtls(port: number, files: readonly string[], alpn: string): Promise<Socket> {
  const [ca, cert, key] = files.map((f) => readFileSync(f));
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ port, host: '127.0.0.1', ca, cert, key, ALPNProtocols: [alpn], checkServerIdentity: () => undefined }, () => resolve(s));
    s.once('error', reject);
  });
}
const svidFiles = (dir: string): string[] => ['bundle.pem', 'svid.pem', 'svid.key'].map((f) => join(dir, f));
/** curl's arguments for presenting the SVID in `dir` and trusting its bundle. */
const curlSvid = (dir: string): string[] => {
  const [ca, cert, key] = svidFiles(dir);
  return ['--cacert', ca!, '--cert', cert!, '--key', key!];
};

/** WRIT_FUZZ_SCALE=20 runs the fuzzers twenty times as long (a soak before a release). */
const FUZZ_SCALE = Math.max(1, Number(process.env['WRIT_FUZZ_SCALE']) || 1);

/** Writes the pieces (a moment apart), half-closes, and returns what came back once the peer closed (or 'HANG ...'). */
function exchange(s: Socket, pieces: Buffer[]): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const timer = setTimeout(() => (s.destroy(), resolve(`HANG after ${JSON.stringify(got.slice(0, 200))}`)), 10_000);
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => (clearTimeout(timer), resolve(got)));
    void (async () => {
      for (const p of pieces) {
        if (s.destroyed) return;
        s.write(p);
        await new Promise((r) => setTimeout(r, 2));
      }
      s.end();
    })();
  });
}

const frame = (type: number, flags: number, stream: number, payload: Buffer): Buffer => {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
};
/** An HPACK block of literal fields without indexing, no Huffman (RFC 7541 6.2.2). */
const block = (fields: Record<string, string>): Buffer =>
  Buffer.concat(Object.entries(fields).map(([n, v]) => Buffer.concat([Buffer.from([0, n.length]), Buffer.from(n), Buffer.from([v.length]), Buffer.from(v)])));

/**
 * HTTP/2 connections of valid frames (the given requests on streams 1, 3, 5..., each with a
 * forged x-writ-peer-id and a DATA frame; SETTINGS, WINDOW_UPDATE, PING, RST_STREAM, CONTINUATION)
 * in random order with random bytes changed: whatever the proxy makes of them, it keeps running.
 */
async function fuzzH2(
  open: () => Promise<Socket>,
  requests: Array<[method: string, path: string, extra: Record<string, string>]>,
  numRuns = 100 * FUZZ_SCALE,
): Promise<void> {
  const frames = [
    frame(4, 0, 0, Buffer.alloc(0)),
    frame(8, 0, 0, Buffer.from([0, 0, 1, 0])),
    frame(6, 0, 0, Buffer.alloc(8)),
    frame(3, 0, 1, Buffer.from([0, 0, 0, 8])),
    frame(9, 4, 3, block({ x: 'y' })),
  ];
  requests.forEach(([method, path, extra], i) => {
    const id = 1 + 2 * i;
    frames.push(frame(1, 4, id, block({ ':method': method, ':scheme': 'https', ':authority': 'orders', ':path': path, 'x-writ-peer-id': LEGACY, ...extra })));
    frames.push(frame(1, 5, id, block({ ':method': method, ':scheme': 'https', ':authority': 'orders', ':path': path, ...extra })));
    frames.push(frame(0, 1, id, Buffer.from([0, 0, 0, 0, 0])));
  });
  const connection = fc
    .tuple(
      fc.array(fc.constantFrom(...frames), { minLength: 1, maxLength: 8 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
    )
    .map(([fs, bytes]) => {
      const b = Buffer.concat(fs);
      for (const [at, v] of bytes) b[at % b.length] = v;
      return [Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), b];
    });
  await fc.assert(
    fc.asyncProperty(connection, async (pieces) => {
      const s = await open();
      // An HTTP/2 server may keep a connection open after the client's last frame: closed after a moment.
      setTimeout(() => s.destroy(), 200);
      await exchange(s, pieces);
    }),
    { numRuns },
  );
}

before(async () => {
  srv = await startServerProcess();
  for (const id of [ORDERS, WEB, LEGACY, REPORTS, TABLE])
    await ok(srv, ['entry', 'create', '--spiffe-id', id, '--parent-id', 'spiffe://e2e.test/writ/agent/px', '--selector', 'unix:uid:0']);
  // A DNS name as well: Python's gRPC client checks a host name against the server certificate.
  await ok(srv, [
    'entry',
    'create',
    '--spiffe-id',
    BILLING,
    '--parent-id',
    'spiffe://e2e.test/writ/agent/px',
    '--selector',
    'unix:uid:0',
    '--dns-name',
    'localhost',
  ]);
  const token = JSON.parse((await ok(srv, ['token', 'create', '--node-name', 'px', '-o', 'json'])).stdout).token as string;
  // A socket other uids can reach (the data dir is the agent's own): one proxy runs as uid 1001.
  sockDir = mkdtempSync(join(tmpdir(), 'writ-px-sock-'));
  chmodSync(sockDir, 0o755);
  agent = await startAgentProcess(srv, { joinToken: token, socket: join(sockDir, 'api.sock') });
  await apply(POLICY('GET'));
  // The apps: plain HTTP servers that report what the proxy told them.
  app = createServer((req, res) => {
    const peers: string[] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.toLowerCase() === 'x-writ-peer-id') peers.push(req.rawHeaders[i + 1]!);
    seen.push({ method: req.method!, url: req.url!, peers, via: req.headers['via'], maxForwards: req.headers['max-forwards'] as string | undefined });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ peer: req.headers['x-writ-peer-id'] ?? null, method: req.method, path: req.url }));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  const appPort = (app.address() as AddressInfo).port;
  // orders runs as two worker processes sharing the listener: every test below goes through them.
  await startProxyOn(['orders'], () => ['--spiffe-id', ORDERS, '--workers', '2', '--inbound', `127.0.0.1:${port['orders']}=127.0.0.1:${appPort}`]);
  await startProxyOn(['reports'], () => ['--spiffe-id', REPORTS, '--inbound', `127.0.0.1:${port['reports']}=127.0.0.1:${appPort}`]);
  await startProxyOn(['table'], () => ['--spiffe-id', TABLE, '--inbound', `127.0.0.1:${port['table']}=127.0.0.1:${appPort}`]);
  await startProxyOn(['web', 'webToReports', 'impostor'], () => [
    '--spiffe-id',
    WEB,
    '--outbound',
    `127.0.0.1:${port['web']}=${ORDERS}@127.0.0.1:${port['orders']}`,
    '--outbound',
    `127.0.0.1:${port['webToReports']}=${REPORTS}@127.0.0.1:${port['reports']}`,
    // An outbound that expects billing but reaches orders' address: must be refused.
    '--outbound',
    `127.0.0.1:${port['impostor']}=${TD}/billing/sa/api@127.0.0.1:${port['orders']}`,
  ]);
  await startProxyOn(['legacy', 'legacyToReports'], () => [
    '--spiffe-id',
    LEGACY,
    '--outbound',
    `127.0.0.1:${port['legacy']}=${ORDERS}@127.0.0.1:${port['orders']}`,
    '--outbound',
    `127.0.0.1:${port['legacyToReports']}=${REPORTS}@127.0.0.1:${port['reports']}`,
  ]);
});

after(async () => {
  grpcApp?.kill();
  for (const p of proxies) p.kill();
  app?.close();
  await agent?.stop();
  await srv?.stop();
  cleanup(srv.dataDir);
  cleanup(agent.dataDir);
  if (sockDir) cleanup(sockDir);
});

describe('writ proxy', () => {
  it('allows per policy and tells the app who called; denies with 403 {code, decisionId}', async () => {
    const ok = await waitFor('an allowed call', async () => {
      const r = await curl('web');
      return status(r) === '200' ? r : undefined;
    });
    assert.deepEqual(body(ok), { peer: WEB, method: 'GET', path: '/v1/orders/7' });
    assert.equal(seen.at(-1)!.via, '1.1 writ, 1.1 writ', 'both hops, the outbound first');
    const post = await curl('web', ['-X', 'POST']);
    assert.equal(status(post), '403');
    assert.equal(body(post)['code'], 'NO_MATCHING_ALLOW');
    assert.match(String(body(post)['decisionId']), /^[0-9a-f-]{36}$/);
    const legacy = await curl('legacy');
    assert.equal(status(legacy), '403');
    assert.equal(body(legacy)['code'], 'DENY_RULE');
    const spoof = await curl('legacy', ['-H', `x-writ-peer-id: ${WEB}`]);
    assert.equal(status(spoof), '403', 'a client cannot claim an identity with the header');
  });

  it('HTTP/1.1 and HTTP/2 give every case of the shared enforcement table its answer (as the middleware and the agent do)', async () => {
    const dirs = new Map<string, string>();
    for (const id of Object.values(CALLER)) {
      const out = join(agent.dataDir, `table-${id.split('/').pop()}`);
      const r = await writ(srv, ['svid', 'mint-x509', '--spiffe-id', id, '--out', out]);
      assert.equal(r.code, 0, r.stderr);
      dirs.set(id, out);
    }
    assert.equal((await writ(srv, ['quarantine', 'add', CALLER.quarantined, '--reason', 'enforcement table'])).code, 0);
    try {
      const ask = async (flag: string, c: (typeof CASES)[number]) => {
        const r = await run('curl', [
          '-sS',
          flag,
          '--path-as-is',
          '-k',
          '-X',
          c.method,
          ...(c.from ? curlSvid(dirs.get(c.from)!) : []),
          '-w',
          '\n%{http_code}',
          `https://127.0.0.1:${port['table']}${c.path}`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        return { status: Number(status(r)), body: body(r) };
      };
      const quarantined = CASES.find((c) => c.from === CALLER.quarantined)!;
      await waitFor('the quarantine at the table proxy', async () => ((await ask('--http1.1', quarantined)).body['code'] === 'QUARANTINED' ? true : undefined));
      for (const flag of ['--http1.1', '--http2'])
        for (const c of CASES) {
          const r = await ask(flag, c);
          assertHttpAnswer(`proxy ${flag}`, c, r.status, r.body);
        }
    } finally {
      assert.equal((await writ(srv, ['quarantine', 'remove', CALLER.quarantined])).code, 0);
    }
  });

  // Whatever a client offers in ALPN (h2 and http/1.1, only http/1.1, nothing), it gets that
  // protocol and the same per-request decision.
  for (const [offer, flags, version] of [
    ['h2 first', ['--http2'], '2'],
    ['only http/1.1', ['--http1.1'], '1.1'],
    ['nothing', ['--http1.1', '--no-alpn'], '1.1'],
  ] as const) {
    it(`straight to the inbound proxy with a client SVID, offering ${offer} in ALPN: HTTP/${version}, decided per request`, async () => {
      const out = join(agent.dataDir, 'direct-web');
      assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', WEB, '--out', out])).code, 0);
      const base = ['-sS', ...flags, ...curlSvid(out), '--resolve', `orders:${port['orders']}:127.0.0.1`, '-k', '-w', '\n%{http_code} %{http_version}'];
      const ok = await run('curl', [...base, `https://orders:${port['orders']}/v1/orders/9`]);
      assert.match(ok.stdout, new RegExp(`\\n200 ${version}$`), ok.stderr + ok.stdout);
      assert.equal(JSON.parse(ok.stdout.split('\n')[0]!).peer, WEB);
      assert.equal(seen.at(-1)!.via, `${version} writ`, 'the proxy names itself in Via with the version the request came in');
      const denied = await run('curl', [...base, '-X', 'DELETE', `https://orders:${port['orders']}/v1/orders/9`]);
      assert.match(denied.stdout, new RegExp(`\\n403 ${version}$`));
      assert.equal(JSON.parse(denied.stdout.split('\n')[0]!).code, 'NO_MATCHING_ALLOW');
    });
  }

  it('paths are decided in normal form ("/v1/%6Frders/9" and "//v1/orders/9" are "/v1/orders/9"); a "." or ".." segment, encoded or not, is refused with 400', async () => {
    const out = join(agent.dataDir, 'direct-web');
    assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', WEB, '--out', out])).code, 0);
    for (const flags of [['--http2'], ['--http1.1']]) {
      const base = ['-sS', ...flags, '--path-as-is', ...curlSvid(out), '--resolve', `orders:${port['orders']}:127.0.0.1`, '-k', '-w', '\n%{http_code}'];
      const url = (p: string): string => `https://orders:${port['orders']}${p}`;
      for (const p of ['/v1/%6Frders/9', '//v1/orders/9']) {
        const r = await run('curl', [...base, url(p)]);
        assert.equal(status(r), '200', `${flags[0]} ${p}: ${r.stdout}`);
        assert.equal(body(r)['peer'], WEB);
      }
      // "/v1/orders/%2e%2e" matched "/v1/orders/*" as it came, and is "/v1" to an app that resolves it.
      // "\" is "/" to WHATWG URL parsers ("/v1/orders\admin" would be "/v1/orders/admin").
      for (const p of ['/v1/orders/%2e%2e', '/v1/orders/9/..', '/v1/orders/./9', '/v1/orders/%2E/9', '/v1/orders/%zz', '/v1/orders\\admin']) {
        const r = await run('curl', [...base, url(p)]);
        assert.equal(status(r), '400', `${flags[0]} ${p}: ${r.stdout}`);
        assert.equal(body(r)['code'], 'ERR_PATH_INVALID');
      }
    }
  });

  it('a fragment in a request target is refused with 400 (an app would drop it: "/admin#/v1/orders/1" is "/admin" to it)', async () => {
    const s = await mtls(port['orders']!, svidFiles(join(agent.dataDir, 'direct-web')), 'http/1.1');
    const got = await exchange(s, [Buffer.from('GET /v1/orders/x#/../1 HTTP/1.1\r\nHost: orders\r\n\r\n')]);
    assert.match(got, /^HTTP\/1\.1 400 /);
    assert.match(got, /"code":"ERR_PATH_INVALID"/);
  });

  it('Max-Forwards over HTTP/2 and HTTP/1.1 (curl): OPTIONS at 0 is answered by the proxy, at 3 forwarded with 2; TRACE at 0 is 405', async () => {
    const out = join(agent.dataDir, 'direct-web');
    for (const flag of ['--http2', '--http1.1']) {
      const base = ['-sS', flag, ...curlSvid(out), '-k', '-w', '\n%{http_code}'];
      const url = `https://127.0.0.1:${port['reports']}/reports/1`;
      const n = seen.length;
      const here = await run('curl', [...base, '-X', 'OPTIONS', '-H', 'Max-Forwards: 0', url]);
      assert.equal(here.stdout.trim(), '200', `${flag}: ${here.stdout}${here.stderr}`);
      assert.equal(seen.length, n, `${flag}: the app was not asked`);
      const onward = await run('curl', [...base, '-X', 'OPTIONS', '-H', 'Max-Forwards: 3', url]);
      assert.equal(status(onward), '200');
      assert.equal(seen.at(-1)!.maxForwards, '2', flag);
      const trace = await run('curl', [...base, '-X', 'TRACE', '-H', 'Max-Forwards: 0', url]);
      assert.equal(status(trace), '405', flag);
    }
  });

  it("the proxy's decisions reach the server's decision log through the agent", async () => {
    const rows = await waitFor('proxy decisions in the log', async () => {
      const r = JSON.parse((await writ(srv, ['decisions', 'query', '--to', ORDERS, '-o', 'json'])).stdout) as Array<Record<string, unknown>>;
      return r.some((d) => d['reason'] === 'DENY_RULE') && r.some((d) => d['decision'] === 'allow') ? r : undefined;
    });
    const deny = rows.find((d) => d['reason'] === 'DENY_RULE')!;
    assert.equal(deny['from'], LEGACY);
    assert.equal(deny['action'], 'GET /v1/orders/7');
    assert.equal(deny['reporter'], 'spiffe://e2e.test/writ/agent/px');
  });

  it('the decisionId of a 403 from writ proxy is the decision `writ decisions show ID` prints', async () => {
    const post = await curl('web', ['-X', 'POST']);
    assert.equal(status(post), '403', post.stdout);
    const id = String(body(post)['decisionId']);
    const shown = await waitFor('the 403 in the decision log', async () => {
      const r = await writ(srv, ['decisions', 'show', id]);
      return r.code === 0 ? r.stdout : undefined;
    });
    for (const said of ['deny', 'NO_MATCHING_ALLOW', WEB, ORDERS, 'POST /v1/orders/7']) assert.ok(shown.includes(said), `${said} in:\n${shown}`);
    const j = JSON.parse((await ok(srv, ['decisions', 'show', id, '-o', 'json'])).stdout) as Record<string, unknown>;
    assert.deepEqual(
      [j['id'], j['decision'], j['reason'], j['from'], j['to'], j['action']],
      [id, 'deny', 'NO_MATCHING_ALLOW', WEB, ORDERS, 'POST /v1/orders/7'],
    );
  });

  it('outbound refuses a server that is not the expected SPIFFE ID', async () => {
    const r = await run('curl', ['-sS', '-w', '\n%{http_code}', `http://127.0.0.1:${port['impostor']}/v1/orders/7`]);
    assert.equal(status(r), '502');
    assert.equal(body(r)['code'], 'ERR_UPSTREAM');
    await waitFor('the refusal in the log', async () => (logs.some((l) => l.includes('outbound connection refused')) ? true : undefined));
  });

  it('audit mode lets a call pass and logs it as would-deny', async () => {
    const r = await run('curl', ['-sS', '-w', '\n%{http_code}', `http://127.0.0.1:${port['legacyToReports']}/anything`]);
    assert.equal(status(r), '200');
    await waitFor('the would-deny decision', async () =>
      logs.some((l) => l.includes('"decision":"audit-would-deny"') && l.includes(LEGACY)) ? true : undefined,
    );
  });

  it('a policy change is enforced by the proxy: POST allowed after it (time printed)', async (t) => {
    const t0 = Date.now();
    await apply(POLICY('GET, POST'));
    await waitFor('POST allowed', async () => (status(await curl('web', ['-X', 'POST'])) === '200' ? true : undefined));
    // Measured, not asserted: a loaded machine cannot promise a wall-clock bound (the wait above is the bound).
    t.diagnostic(`enforced in ${Date.now() - t0} ms`);
  });

  /** A keep-alive connection to the outbound on `port` that got a 200: its bytes so far, and whether it closed. */
  async function liveConnection(p: number): Promise<{ got: () => string; closed: () => boolean }> {
    const sock = connect(p, '127.0.0.1');
    let closed = false;
    let got = '';
    sock.on('data', (d) => (got += d.toString()));
    sock.on('error', (err) => assert.fail(`the connection failed instead of being closed: ${err.message}`));
    sock.on('close', () => (closed = true));
    sock.write('GET /v1/orders/1 HTTP/1.1\r\nHost: orders\r\nConnection: keep-alive\r\n\r\n');
    await waitFor('the first response on the live connection', async () => (got.includes('HTTP/1.1 200') ? true : undefined));
    return { got: () => got, closed: () => closed };
  }

  /** What a new connection to `p` gets for a request: '' when the proxy closes it unanswered. */
  const fresh = (p: number): Promise<string> =>
    exchange(connect(p, '127.0.0.1'), [Buffer.from('GET /v1/orders/2 HTTP/1.1\r\nHost: orders\r\nConnection: keep-alive\r\n\r\n')]);

  it("quarantine of web (its proxy runs as root and holds every uid:0 identity, web by --spiffe-id): web's proxy closes the app's live connection and refuses new ones", async () => {
    const live = await liveConnection(port['web']!);
    const before = logs.length;
    assert.equal((await writ(srv, ['quarantine', 'add', WEB, '--reason', 'compromised'])).code, 0);
    try {
      await waitFor('the live connection to close', async () => (live.closed() ? true : undefined));
      assert.equal(live.got().match(/HTTP\/1\.1 /g)?.length, 1, `nothing after the one response: ${live.got()}`);
      // (orders closes its side too, unless web's proxy closed it first: either may say so.)
      await waitFor("web's proxy to say why", async () => (logs.slice(before).some((l) => l.includes(`identity ${WEB} withdrawn (`)) ? true : undefined));
      assert.equal(await fresh(port['web']!), '', 'a new connection from the app is closed unanswered');
    } finally {
      assert.equal((await writ(srv, ['quarantine', 'remove', WEB])).code, 0);
    }
    await waitFor('web back', async () => (status(await curl('web')) === '200' ? true : undefined));
  });

  it("quarantine of a caller whose only identity it is (its proxy runs as uid 1001, default --outbound-mode http): its app's keep-alive connection is closed, not answered 403; new ones are refused; lifted, calls work again", async () => {
    const ISOLATED = `${TD}/web/sa/isolated`;
    await ok(srv, ['entry', 'create', '--spiffe-id', ISOLATED, '--parent-id', 'spiffe://e2e.test/writ/agent/px', '--selector', 'unix:uid:1001']);
    const proxy = await startProxyOn(['isolated'], () => ['--outbound', `127.0.0.1:${port['isolated']}=${ORDERS}@127.0.0.1:${port['orders']}`], 1001);
    try {
      await waitFor('an allowed call from the isolated caller', async () => (status(await curl('isolated')) === '200' ? true : undefined));
      const live = await liveConnection(port['isolated']!);
      const before = logs.length;
      assert.equal((await writ(srv, ['quarantine', 'add', ISOLATED, '--reason', 'compromised'])).code, 0);
      try {
        await waitFor('the live connection to close', async () => (live.closed() ? true : undefined));
        assert.equal(live.got().match(/HTTP\/1\.1 /g)?.length, 1, `closed, with nothing after the one response: ${live.got()}`);
        await waitFor("the caller's proxy to say why", async () =>
          logs.slice(before).some((l) => l.includes(`identity ${ISOLATED} withdrawn (the agent no longer issues it`)) ? true : undefined,
        );
        assert.equal(await fresh(port['isolated']!), '', 'a new connection is closed unanswered');
        const refused = await curl('isolated');
        assert.notEqual(refused.code, 0, `curl got no answer: ${refused.stdout}`);
        assert.equal(proxy.exitCode, null, 'the proxy keeps running, waiting for its identity');
      } finally {
        assert.equal((await writ(srv, ['quarantine', 'remove', ISOLATED])).code, 0);
      }
      await waitFor('calls to work again', async () => (status(await curl('isolated')) === '200' ? true : undefined), 30_000);
      assert.ok(logs.some((l) => l.includes(`identity ${ISOLATED} issued again: serving`)));
    } finally {
      stopProxy(proxy);
    }
  });

  /** An HTTPS server holding a valid SVID (`${TD}/NAME/sa/api`) that knows nothing of quarantine: only a caller's proxy can refuse it. */
  async function plainServer(name: string): Promise<{ id: string; server: ReturnType<typeof createHttpsServer> }> {
    const id = `${TD}/${name}/sa/api`;
    const dir = join(agent.dataDir, `${name}-server`);
    assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', id, '--out', dir])).code, 0);
    // keepAliveTimeout 0: it never closes an idle connection itself.
    const server = createHttpsServer(
      { cert: readFileSync(join(dir, 'svid.pem')), key: readFileSync(join(dir, 'svid.key')), keepAliveTimeout: 0 },
      (_req, res) => res.end('{}'),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return { id, server };
  }

  it("outbound to a quarantined server: the live connection is closed and a new one refused by the caller's own proxy, even when the server does not follow the quarantine", async () => {
    const { id: PLAIN, server: plain } = await plainServer('plain');
    const proxy = await startProxyOn(['toPlain'], () => [
      '--spiffe-id',
      WEB,
      '--outbound',
      `127.0.0.1:${port['toPlain']}=${PLAIN}@127.0.0.1:${(plain.address() as AddressInfo).port}`,
    ]);
    try {
      const live = await liveConnection(port['toPlain']!);
      assert.equal((await writ(srv, ['quarantine', 'add', PLAIN, '--reason', 'compromised'])).code, 0);
      try {
        await waitFor('the live connection to close', async () => (live.closed() ? true : undefined));
        assert.equal(live.got().match(/HTTP\/1\.1 /g)?.length, 1, `nothing after the one response: ${live.got()}`);
        assert.equal(await fresh(port['toPlain']!), '', 'a new connection is closed unanswered');
      } finally {
        assert.equal((await writ(srv, ['quarantine', 'remove', PLAIN])).code, 0);
      }
      await waitFor('calls to work again', async () => (status(await curl('toPlain')) === '200' ? true : undefined));
    } finally {
      stopProxy(proxy);
      plain.closeAllConnections();
      plain.close();
    }
  });

  it("--outbound-mode tcp, the caller's only identity quarantined (uid 1003), the server not closing its side: the caller's proxy closes the app's connection, refuses new ones, and carries them again once lifted", async () => {
    const CALLER_TCP = `${TD}/web/sa/tcp`;
    await ok(srv, ['entry', 'create', '--spiffe-id', CALLER_TCP, '--parent-id', 'spiffe://e2e.test/writ/agent/px', '--selector', 'unix:uid:1003']);
    const { id, server } = await plainServer('tcp-target');
    const proxy = await startProxyOn(
      ['tcpCaller'],
      () => ['--outbound-mode', 'tcp', '--outbound', `127.0.0.1:${port['tcpCaller']}=${id}@127.0.0.1:${(server.address() as AddressInfo).port}`],
      1003,
    );
    try {
      const live = await liveConnection(port['tcpCaller']!);
      assert.equal((await writ(srv, ['quarantine', 'add', CALLER_TCP, '--reason', 'compromised'])).code, 0);
      try {
        await waitFor('the live connection to close', async () => (live.closed() ? true : undefined));
        assert.equal(live.got().match(/HTTP\/1\.1 /g)?.length, 1, `nothing after the one response: ${live.got()}`);
        assert.equal(await fresh(port['tcpCaller']!), '', 'a new connection is closed unanswered');
      } finally {
        assert.equal((await writ(srv, ['quarantine', 'remove', CALLER_TCP])).code, 0);
      }
      await waitFor('calls to work again', async () => (status(await curl('tcpCaller')) === '200' ? true : undefined), 30_000);
    } finally {
      stopProxy(proxy);
      server.closeAllConnections();
      server.close();
    }
  });

  /** Runs `code` (an ES module using @writ/sdk, printing `{"port":N}` once it listens) as `uid`; its stdout lines are collected. */
  async function sdkWorkload(uid: number, code: string): Promise<{ child: ChildProcess; lines: string[]; port: number }> {
    const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, '--input-type=module', '-e', code], {
      cwd: ROOT,
      env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socket}`, NODE_TEST_CONTEXT: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => lines.push(...d.toString().trim().split('\n')));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const { port } = await waitFor(
        'the SDK workload listening',
        async () => {
          assert.equal(child.exitCode, null, `the SDK workload exited: ${stderr}`);
          const l = lines.find((x) => x.startsWith('{"port"'));
          return l ? (JSON.parse(l) as { port: number }) : undefined;
        },
        30_000,
      );
      return { child, lines, port };
    } catch (err) {
      child.kill();
      throw err;
    }
  }

  it('the SDK middleware of a workload whose only identity is quarantined (uid 1004) answers 403 NO_POLICY_LOADED instead of deciding on the last policy; lifted, it allows again', async () => {
    await ok(srv, ['entry', 'create', '--spiffe-id', MW, '--parent-id', 'spiffe://e2e.test/writ/agent/px', '--selector', 'unix:uid:1004']);
    const code = `import { createServer } from 'node:https';
      import { LocalPolicy, X509Source, writMiddleware } from '@writ/sdk';
      const source = await X509Source.create({ timeoutMs: 20000 });
      const policy = await LocalPolicy.create({ timeoutMs: 20000 });
      const mw = writMiddleware({ policy, x509: source });
      const server = createServer({ ...source.tlsCredentials(), requestCert: true, rejectUnauthorized: false }, (req, res) => mw(req, res, () => res.end('{"served":true}')));
      server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));`;
    const { child, port: mwPort } = await sdkWorkload(1004, code);
    try {
      const web = join(agent.dataDir, 'direct-web');
      assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', WEB, '--out', web])).code, 0);
      const call = async (): Promise<{ status: string | undefined; body: Record<string, unknown> }> => {
        const r = await run('curl', ['-sSk', ...curlSvid(web), '-w', '\n%{http_code}', `https://127.0.0.1:${mwPort}/v1/things/1`]);
        return { status: status(r), body: body(r) };
      };
      await waitFor('web allowed by the middleware', async () => ((await call()).status === '200' ? true : undefined));
      assert.equal((await writ(srv, ['quarantine', 'add', MW, '--reason', 'compromised'])).code, 0);
      try {
        const refused = await waitFor('the middleware to stop deciding on the last policy', async () => {
          const r = await call();
          return r.status === '200' ? undefined : r;
        });
        assert.equal(refused.status, '403');
        assert.equal(refused.body['code'], 'NO_POLICY_LOADED');
      } finally {
        assert.equal((await writ(srv, ['quarantine', 'remove', MW])).code, 0);
      }
      await waitFor('web allowed again', async () => ((await call()).status === '200' ? true : undefined), 30_000);
    } finally {
      child.kill();
    }
  });

  it('an SDK mTLS server (createMtlsServer with the policy, as uid 1002): withdrawn, it closes its live connections and refuses new ones; a quarantined caller is refused at accept; lifted, it serves again', async () => {
    const SDK_SERVER = `${TD}/orders/sa/sdk`;
    await ok(srv, ['entry', 'create', '--spiffe-id', SDK_SERVER, '--parent-id', 'spiffe://e2e.test/writ/agent/px', '--selector', 'unix:uid:1002']);
    const code = `import { LocalPolicy, X509Source, authorizeAny, createMtlsServer } from '@writ/sdk';
      const source = await X509Source.create({ timeoutMs: 20000 });
      const policy = await LocalPolicy.create({ timeoutMs: 20000 });
      const server = createMtlsServer({ source, authorize: authorizeAny(), policy }, (s, peer) => (s.on('error', () => {}), s.on('data', (d) => s.write(peer.uri + ' ' + d))));
      server.on('rejected', (err) => console.log(JSON.stringify({ rejected: err.message })));
      server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));`;
    const { child, lines, port: sdkPort } = await sdkWorkload(1002, code);
    try {
      const web = join(agent.dataDir, 'direct-web');
      assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', WEB, '--out', web])).code, 0);
      /** A connection from web: the echo of "ping", or '' when the server closes it unanswered. */
      const ping = async (): Promise<string> => exchange(await mtls(sdkPort, svidFiles(web), 'x'), [Buffer.from('ping')]);
      assert.equal(await ping(), `${WEB} ping`);
      const live = await mtls(sdkPort, svidFiles(web), 'x');
      let closed = false;
      live.on('error', () => undefined);
      live.on('close', () => (closed = true));
      assert.equal((await writ(srv, ['quarantine', 'add', SDK_SERVER, '--reason', 'compromised'])).code, 0);
      try {
        await waitFor('the live connection to close', async () => (closed ? true : undefined));
        assert.equal(await ping(), '', 'a new connection is closed unanswered');
        assert.ok(
          lines.some((l) => l.includes('was withdrawn by the agent')),
          `the refusal is reported: ${lines.join('\n')}`,
        );
      } finally {
        assert.equal((await writ(srv, ['quarantine', 'remove', SDK_SERVER])).code, 0);
      }
      await waitFor('the SDK server to serve again', async () => ((await ping()) === `${WEB} ping` ? true : undefined), 30_000);
      assert.equal((await writ(srv, ['quarantine', 'add', WEB, '--reason', 'compromised'])).code, 0);
      try {
        await waitFor('a quarantined caller refused at accept', async () => ((await ping()) === '' ? true : undefined));
        assert.ok(
          lines.some((l) => l.includes(`peer ${WEB} or this workload is quarantined`)),
          lines.join('\n'),
        );
      } finally {
        assert.equal((await writ(srv, ['quarantine', 'remove', WEB])).code, 0);
      }
      await waitFor('web served again', async () => ((await ping()) === `${WEB} ping` ? true : undefined));
    } finally {
      child.kill();
    }
  });

  it('an SVID from a trust domain orders does not federate with is no identity (401 UNAUTHENTICATED); once federated, it is checked against that bundle and the policy decides', async () => {
    const partner = await startServerProcess({ args: ['--trust-domain', 'partner.test'] });
    try {
      const out = join(agent.dataDir, 'partner-web');
      // Same path as the allowed caller, other trust domain: a policy pattern for e2e.test must not match it.
      assert.equal((await writ(partner, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://partner.test/ns/web/sa/frontend', '--out', out])).code, 0);
      const r = await run('curl', [
        '-sSk',
        '--cert',
        join(out, 'svid.pem'),
        '--key',
        join(out, 'svid.key'),
        '-w',
        '\n%{http_code}',
        `https://127.0.0.1:${port['orders']}/v1/orders/1`,
      ]);
      assert.equal(status(r), '401', r.stderr + r.stdout);
      assert.equal(body(r)['code'], 'UNAUTHENTICATED');
      assert.equal(status(await curl('web')), '200', 'and the proxy keeps serving');
      // Federated (bundle stored, orders' entry federates with it): the same SVID is an identity,
      // checked against partner.test's bundle, and the policy decides (no rule allows it).
      const f = join(agent.dataDir, 'partner-bundle.json');
      writeFileSync(f, (await ok(partner, ['bundle', 'show'])).stdout);
      assert.equal((await writ(srv, ['bundle', 'set', '--trust-domain', 'partner.test', '-f', f])).code, 0);
      const entries = JSON.parse((await ok(srv, ['entry', 'list', '-o', 'json'])).stdout) as Array<{ id: string; spiffeId: string }>;
      const orders = entries.find((e) => e.spiffeId === ORDERS)!;
      assert.equal((await writ(srv, ['entry', 'update', orders.id, '--federates-with', 'partner.test'])).code, 0);
      const federated = await waitFor('the federated bundle at the orders proxy', async () => {
        const x = await run('curl', [
          '-sSk',
          '--cert',
          join(out, 'svid.pem'),
          '--key',
          join(out, 'svid.key'),
          '-w',
          '\n%{http_code}',
          `https://127.0.0.1:${port['orders']}/v1/orders/1`,
        ]);
        return status(x) === '403' && body(x)['code'] !== 'UNAUTHENTICATED' ? x : undefined;
      });
      assert.equal(body(federated)['code'], 'NO_MATCHING_ALLOW');
    } finally {
      await partner.stop();
      cleanup(partner.dataDir);
    }
  });

  it('--workers: both workers listen on the shared port; a worker that cannot start stops the proxy with a clear error', async () => {
    await waitFor('two listening workers', async () =>
      logs.filter((l) => l.includes('"writ proxy listening"') && l.includes(ORDERS) && /"worker":\d/.test(l)).length >= 2 ? true : undefined,
    );
    const taken = await run(
      process.execPath,
      [WRIT, 'proxy', '--socket', agent.socket, '--workers', '2', '--spiffe-id', ORDERS, '--inbound', `127.0.0.1:${port['orders']}=127.0.0.1:1`],
      { env: { NODE_TEST_CONTEXT: '' }, timeoutMs: 10_000 },
    );
    assert.notEqual(taken.code, 0);
    assert.match(taken.stdout + taken.stderr, /EADDRINUSE|in use|failed to start/);
    const single = await run(
      process.execPath,
      [WRIT, 'proxy', '--socket', agent.socket, '--spiffe-id', ORDERS, '--inbound', `127.0.0.1:${port['orders']}=127.0.0.1:1`],
      { env: { NODE_TEST_CONTEXT: '' }, timeoutMs: 10_000 },
    );
    assert.equal(single.code, 1, 'one process: exits too, it does not hang on its agent streams');
    // One line naming the address and the reason, not a stack trace.
    assert.match(single.stderr, /^writ: cannot listen on 127\.0\.0\.1:\d+: the address is in use \(EADDRINUSE: another process listens there\)/);
    assert.doesNotMatch(single.stderr, /unexpected error| {4}at /);
    const bad = await run(process.execPath, [WRIT, 'proxy', '--socket', agent.socket, '--workers', 'lots', '--inbound', '127.0.0.1:1=127.0.0.1:2']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--workers "lots": a number from 1 to 64, or auto/);
    assert.equal(status(await curl('web')), '200');
  });

  it('conflicting Content-Length and Transfer-Encoding, non-SVID clients and garbage TLS are refused; the proxy keeps serving', async () => {
    const raw = await new Promise<string>((resolve) => {
      const s = connect(port['web']!, '127.0.0.1');
      let out = '';
      s.on('data', (d) => (out += d.toString()));
      s.on('close', () => resolve(out));
      s.on('error', () => resolve(out));
      s.write('POST /v1/orders/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
      // The proxy closes after its 400; the bound only keeps a broken one from hanging the test (and is generous for a loaded machine).
      setTimeout(() => s.destroy(), 15_000);
    });
    assert.match(raw, /^HTTP\/1\.1 400/);
    // A client certificate that is not an SVID: no identity, so no entry.
    const k = join(agent.dataDir, 'self');
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${k}.key`,
      '-out',
      `${k}.pem`,
      '-days',
      '1',
      '-subj',
      '/CN=intruder',
    ]);
    const r = await run('curl', ['-sSk', '--cert', `${k}.pem`, '--key', `${k}.key`, '-w', '\n%{http_code}', `https://127.0.0.1:${port['orders']}/v1/orders/1`]);
    assert.equal(status(r), '401');
    assert.equal(body(r)['code'], 'UNAUTHENTICATED');
    await new Promise<void>((resolve) => {
      const s = connect(port['orders']!, '127.0.0.1', () => s.write(Buffer.from('\x16\x03\x01\x02\x00garbage'.repeat(50))));
      s.resume();
      s.on('close', () => resolve()).on('error', () => resolve());
    });
    assert.equal(status(await curl('web')), '200');
    assert.ok(proxies.every((p) => p.exitCode === null));
  });

  it("a fuzzer's mutated HTTP/1.1 (to the inbound over mTLS, to the outbound in plaintext) and HTTP/2 frames: each connection gets responses or a close, never a hang; the app sees only allowed requests, each carrying the caller's true identity once; the proxies keep serving", async () => {
    await apply(POLICY('GET'));
    await waitFor('POST refused again', async () => (status(await curl('web', ['-X', 'POST'])) === '403' ? true : undefined));
    const dir = join(agent.dataDir, 'fuzz-web');
    assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', WEB, '--out', dir])).code, 0);
    const smuggled = 'GET /admin HTTP/1.1\r\nHost: orders\r\n\r\n';
    // Requests the policy allows (GET /v1/orders/*) carrying what a smuggler or an impostor would
    // add, and refused ones; the fuzzer mutates them.
    const bases = [
      'GET /v1/orders/1 HTTP/1.1\r\nHost: orders\r\n\r\n',
      `GET /v1/orders/2 HTTP/1.1\r\nHost: orders\r\nx-writ-peer-id: ${LEGACY}\r\n\r\n${smuggled}`,
      `GET /v1/orders/3 HTTP/1.1\r\nHost: orders\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
      `GET /v1/orders/4 HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n\r\n${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`,
      'GET /v1/orders/5 HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
      'POST /v1/orders/6 HTTP/1.1\r\nHost: orders\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc',
      // A body shorter than declared: the client half-closes before its end.
      'GET /v1/orders/7 HTTP/1.1\r\nHost: orders\r\nContent-Length: 10\r\n\r\nabc',
    ];
    const tokens = [
      '\r',
      '\n',
      '\r\n',
      ' ',
      '\t',
      ':',
      '\0',
      '\x7f',
      '\xff',
      '0',
      'f',
      ';',
      ',',
      '/',
      '%',
      '%2e',
      '..',
      'chunked',
      'Content-Length: 0\r\n',
      'Content-Length: 99\r\n',
      'Transfer-Encoding: chunked\r\n',
      'Transfer-Encoding: gzip, chunked\r\n',
      'Host: x\r\n',
      `x-writ-peer-id: ${LEGACY}\r\n`,
      'HTTP/1.0',
      '\r\n\r\n',
      'Connection: close\r\n',
      smuggled,
    ];
    const mutation = fc.oneof(
      fc.tuple(fc.constant('insert' as const), fc.nat(), fc.constantFrom(...tokens)),
      fc.tuple(fc.constant('delete' as const), fc.nat(), fc.integer({ min: 1, max: 8 })),
      fc.tuple(fc.constant('repeat' as const), fc.nat(), fc.integer({ min: 1, max: 16 })),
      fc.tuple(fc.constant('byte' as const), fc.nat(), fc.integer({ min: 0, max: 255 })),
    );
    const message = fc.tuple(fc.constantFrom(...bases), fc.array(mutation, { maxLength: 3 }), fc.array(fc.nat(), { maxLength: 2 })).map(([base, ms, cuts]) => {
      let b = Buffer.from(base, 'latin1');
      for (const [kind, at, arg] of ms) {
        const i = at % (b.length + 1);
        if (kind === 'insert') b = Buffer.concat([b.subarray(0, i), Buffer.from(arg, 'latin1'), b.subarray(i)]);
        else if (kind === 'delete') b = Buffer.concat([b.subarray(0, i), b.subarray(i + arg)]);
        else if (kind === 'repeat') b = Buffer.concat([b.subarray(0, i + arg), b.subarray(i)]);
        else if (i < b.length) b[i] = arg;
      }
      // Sent in pieces, so each parser also sees a message arrive across reads.
      const at = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
      return [0, ...at].map((from, k) => b.subarray(from, at[k] ?? b.length)).filter((p) => p.length > 0);
    });
    const tls = (alpn: string): Promise<Socket> => mtls(port['orders']!, svidFiles(dir), alpn);
    const plain = (): Promise<Socket> =>
      new Promise((resolve) => {
        const s = connect(port['web']!, '127.0.0.1', () => resolve(s));
      });
    seen.length = 0;
    for (const [name, open] of [
      ['inbound (mTLS)', () => tls('http/1.1')],
      ['outbound (plaintext)', plain],
    ] as const) {
      await fc.assert(
        fc.asyncProperty(message, async (pieces) => {
          const got = await exchange(await open(), pieces);
          assert.match(
            got,
            /^(?:$|HTTP\/1\.1 [1-5]\d\d )/,
            `${name}: ${JSON.stringify(Buffer.concat(pieces).toString('latin1'))} got ${JSON.stringify(got.slice(0, 300))}`,
          );
        }),
        { numRuns: 200 * FUZZ_SCALE },
      );
    }
    await fuzzH2(
      () => tls('h2'),
      [
        ['GET', '/v1/orders/1', {}],
        ['POST', '/admin', { 'content-length': '4' }],
        ['GET', '/v1/orders/%2e%2e', {}],
      ],
    );
    assert.ok(
      proxies.every((p) => p.exitCode === null),
      'every proxy process is still running',
    );
    assert.equal(status(await curl('web')), '200');
    assert.ok(seen.length > 50, `the app received ${seen.length} requests`);
    for (const r of seen) {
      assert.deepEqual(r.peers, [WEB], `${r.method} ${r.url}: the app was told ${JSON.stringify(r.peers)}`);
      assert.equal(r.method.toUpperCase(), 'GET', `${r.method} ${r.url} reached the app`);
      assert.match(normalizePath(r.url.split('?')[0]!), /^\/v1\/orders\/[^/]+$/, `${r.method} ${r.url} reached the app`);
    }
  });

  it('the agent restarts: meanwhile the proxies keep deciding on the last policy; after, they reconnect, enforce the next change, and deliver the decisions made while it was down', async () => {
    const { dataDir, socket } = agent;
    await agent.stop();
    assert.equal(status(await curl('web')), '200', 'allowed with the agent down');
    const denied = await curl('legacy');
    assert.equal(status(denied), '403', 'denied with the agent down');
    const duringOutage = String(body(denied)['decisionId']);
    agent = await startAgentProcess(srv, { dataDir, socket });
    await apply(POLICY('GET, DELETE'));
    await waitFor('DELETE allowed by the policy from the restarted agent', async () =>
      status(await curl('web', ['-X', 'DELETE'])) === '200' ? true : undefined,
    );
    await waitFor('the decision made while the agent was down, in the log', async () => {
      const r = JSON.parse((await writ(srv, ['decisions', 'query', '--to', ORDERS, '--limit', '1000', '-o', 'json'])).stdout) as Array<Record<string, unknown>>;
      return r.some((d) => d['id'] === duringOutage) ? true : undefined;
    });
    await apply(POLICY('GET'));
  });
});

describe('writ proxy waiting for its identity says why, and gives up after --wait-timeout', () => {
  /**
   * Runs `writ proxy` with `args` and a 7 s --wait-timeout to its exit: what it said while waiting
   * (its "waiting for" log lines) and its last words.
   */
  async function waiting(
    args: string[],
  ): Promise<{ code: number | null; first: Record<string, unknown> | undefined; waits: Array<Record<string, unknown>>; stderr: string }> {
    const listen = `127.0.0.1:${await freePort()}=127.0.0.1:1`;
    const r = await run(process.execPath, [WRIT, 'proxy', ...args, '--inbound', listen, '--wait-timeout', '7s'], { timeoutMs: 60_000 });
    const lines = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const waits = lines.filter((l) => String(l['msg']).startsWith('waiting for'));
    return { code: r.code, first: lines[0], waits, stderr: r.stderr };
  }

  /** The proxy's first line is its start; its first "waiting for" line follows within a second, both by the proxy's own clock. */
  function assertSaidWithinASecond(r: { first: Record<string, unknown> | undefined; waits: Array<Record<string, unknown>> }, waitTimeoutMs: number): void {
    const what = JSON.stringify(r);
    assert.equal(r.first?.['msg'], 'writ proxy starting', what);
    assert.equal(r.first?.['waitTimeoutMs'], waitTimeoutMs, what);
    const after = Date.parse(String(r.waits[0]?.['time'])) - Date.parse(String(r.first?.['time']));
    assert.ok(after >= 0 && after <= 1000, `the first "waiting for" line came ${after} ms after the start: ${what}`);
  }

  /**
   * The reason as soon as it is known (a slow agent: "has not answered yet" first), again every 5 s
   * (2 to 4 lines in 7 s: neither silence nor a flood), then one line naming it and exit 1.
   */
  function assertWaited(r: Awaited<ReturnType<typeof waiting>>, socket: string, reason: RegExp): void {
    const what = JSON.stringify(r);
    assert.equal(r.code, 1, what);
    assertSaidWithinASecond(r, 7000);
    assert.ok(r.waits.length >= 2 && r.waits.length <= 4, `said it ${r.waits.length} times: ${what}`);
    for (const w of r.waits) {
      assert.equal(w['socket'], `unix://${socket}`, what);
      assert.match(String(w['reason']), new RegExp(`${reason.source}|^the agent has not answered yet$`), what);
      assert.equal(w['level'], 40, 'a warning');
    }
    assert.ok(r.waits.filter((w) => reason.test(String(w['reason']))).length >= 2, `the reason, repeated: ${what}`);
    const last = r.stderr.trim().split('\n');
    assert.equal(last.length, 1, `one clear line: ${r.stderr}`);
    assert.match(last[0]!, new RegExp(`^writ: gave up after 7s waiting for .* at unix://${socket.replace(/[.]/g, '\\.')}: `), r.stderr);
    assert.match(last[0]!, reason, r.stderr);
  }

  it('a wrong --socket: no such socket, or connection refused when nothing listens on it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-proxy-wait-'));
    try {
      const missing = join(dir, 'missing.sock');
      // A socket file nothing listens on (bound, never listening): what a crashed agent leaves behind.
      const dead = join(dir, 'dead.sock');
      const bound = await run(DEBIAN_PYTHON, ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', dead]);
      assert.equal(bound.code, 0, bound.stderr);
      const [a, b] = await Promise.all([waiting(['--socket', missing]), waiting(['--socket', dead])]);
      assertWaited(a, missing, /no such socket/);
      assertWaited(b, dead, /connection refused/);
    } finally {
      cleanup(dir);
    }
  });

  it('without --wait-timeout it waits 60 s (its help and its first line say so), saying why within a second', async () => {
    assert.match((await run(process.execPath, [WRIT, 'proxy', '--help'])).stdout.replace(/\s+/g, ' '), /--wait-timeout <duration> .*\(default: "60s"\)/);
    const dir = mkdtempSync(join(tmpdir(), 'writ-proxy-wait-'));
    const child = spawn(process.execPath, [WRIT, 'proxy', '--socket', join(dir, 'missing.sock'), '--inbound', `127.0.0.1:${await freePort()}=127.0.0.1:1`], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_TEST_CONTEXT: '' },
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => child.once('exit', r));
    try {
      const lines = await waitFor('its start and first "waiting for" line', async () => {
        const ls = out
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        return ls.some((l) => String(l['msg']).startsWith('waiting for')) ? ls : undefined;
      });
      assertSaidWithinASecond({ first: lines[0], waits: lines.filter((l) => String(l['msg']).startsWith('waiting for')) }, 60_000);
      assert.equal(child.exitCode, null, 'still waiting');
    } finally {
      child.kill('SIGTERM');
      await exited;
      cleanup(dir);
    }
  });

  it('no identity issued for its process (naming its uid), and an --spiffe-id it does not have (naming those it has)', async () => {
    // An agent with no registration entry for anyone.
    const token = JSON.parse((await ok(srv, ['token', 'create', '--node-name', 'px-empty', '-o', 'json'])).stdout).token as string;
    const empty = await startAgentProcess(srv, { joinToken: token });
    try {
      const uid = process.getuid!();
      const [none, other] = await Promise.all([
        waiting(['--socket', empty.socket]),
        waiting(['--socket', agent.socket, '--spiffe-id', `${TD}/nobody/sa/here`]),
      ]);
      assertWaited(none, empty.socket, new RegExp(`no identity issued for this process \\(uid ${uid}\\)`));
      assertWaited(other, agent.socket, new RegExp(`identities present but not ${TD}/nobody/sa/here: this process has .*${ORDERS}`));
    } finally {
      await empty.stop();
      cleanup(empty.dataDir);
    }
  });
});

describe('writ proxy in front of a gRPC server (h2c:// upstream), called by Python grpcio', () => {
  const PY = '/usr/bin/python3'; // Debian's, with python3-grpcio
  const fixtures = join(import.meta.dirname, 'fixtures');
  let svid: Record<string, string[]>;
  const call = async (as: string, ...methods: string[]): Promise<Array<Record<string, unknown>>> => {
    const target = as === 'web outbound' ? [`127.0.0.1:${port['webToBilling']}`, '-', '-', '-'] : [`127.0.0.1:${port['billing']}`, ...svid[as]!];
    const r = await run(PY, [join(fixtures, 'grpc_call.py'), ...target, ...methods.map((m) => `/billing.v1.Billing/${m}`)]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Array<Record<string, unknown>>;
  };

  before(async () => {
    grpcApp = spawn(PY, [join(fixtures, 'grpc_billing.py')], { stdio: ['ignore', 'pipe', 'inherit'] });
    const appPort = await new Promise<number>((resolve, reject) => {
      grpcApp!.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      grpcApp!.once('exit', (c) => reject(new Error(`grpc app exited ${c}`)));
    });
    await startProxyOn(['billing'], () => ['--spiffe-id', BILLING, '--inbound', `127.0.0.1:${port['billing']}=h2c://127.0.0.1:${appPort}`]);
    await startProxyOn(['webToBilling'], () => ['--spiffe-id', WEB, '--outbound', `127.0.0.1:${port['webToBilling']}=${BILLING}@127.0.0.1:${port['billing']}`]);
    svid = {};
    for (const [name, id] of [
      ['web', WEB],
      ['legacy', LEGACY],
    ] as const) {
      const out = join(agent.dataDir, `grpc-${name}`);
      assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', id, '--out', out])).code, 0);
      svid[name] = svidFiles(out);
    }
  });

  it('allowed methods go through with the peer, trailers, errors and streams intact; others are PERMISSION_DENIED with the reason', async () => {
    const web = await waitFor('an allowed gRPC call', async () => {
      const r = await call('web', 'Get', 'Fail', 'Watch', 'Delete');
      return r[0]!['code'] === 'OK' ? r : undefined;
    });
    const [get, fail, watch, del] = web;
    assert.deepEqual(get, { method: '/billing.v1.Billing/Get', code: 'OK', body: `peer=${WEB};req=hello`, trailers: { 'x-total': '42' } });
    assert.deepEqual(fail, { method: '/billing.v1.Billing/Fail', code: 'NOT_FOUND', details: 'no such invoice' });
    assert.deepEqual(watch!['body'], ['tick 0', 'tick 1', 'tick 2']);
    assert.equal(del!['code'], 'PERMISSION_DENIED');
    assert.match(String(del!['details']), /^NO_MATCHING_ALLOW \(decision [0-9a-f-]{36}\)$/);
    const [legacy] = await call('legacy', 'Get');
    assert.equal(legacy!['code'], 'PERMISSION_DENIED');
    assert.match(String(legacy!['details']), /^DENY_RULE /);
  });

  it("through web's outbound proxy too: the app's plaintext gRPC (h2c) goes out as mTLS with ALPN h2", async () => {
    const [get, del, watch] = await call('web outbound', 'Get', 'Delete', 'Watch');
    assert.deepEqual(get, { method: '/billing.v1.Billing/Get', code: 'OK', body: `peer=${WEB};req=hello`, trailers: { 'x-total': '42' } });
    assert.equal(del!['code'], 'PERMISSION_DENIED');
    assert.deepEqual(watch!['body'], ['tick 0', 'tick 1', 'tick 2']);
    // HTTP/1.1 through the same outbound still goes by the relay (and reaches a 505: billing is HTTP/2 only).
    const r = await run('curl', ['-sS', '-w', '\n%{http_code}', `http://127.0.0.1:${port['webToBilling']}/billing.v1.Billing/Get`]);
    assert.equal(status(r), '505', r.stdout + r.stderr);
  });

  it('streams a client resets with an error code, half-sent or refused, leave the proxy serving', async () => {
    const [ca, cert, key] = svid['web']!.map((f) => readFileSync(f));
    // billing (h2c app, raw streams) and orders (HTTP/1.1 app, Node's compatibility API).
    for (const [p, paths] of [
      ['billing', ['/billing.v1.Billing/Get', '/billing.v1.Billing/Delete']],
      ['orders', ['/v1/orders/1', '/v1/orders/%2e%2e']],
    ] as const) {
      const session = http2Connect(`https://127.0.0.1:${port[p]}`, { ca, cert, key, checkServerIdentity: () => undefined });
      session.on('error', () => undefined);
      const closed: Array<Promise<unknown>> = [];
      for (const path of paths) {
        const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' }, { endStream: false });
        req.on('error', () => undefined);
        closed.push(new Promise((r) => req.once('close', r))); // not events.once: the reset stream also emits 'error'
        req.write(Buffer.from([0, 0, 0, 0, 9]));
        req.close(h2constants.NGHTTP2_PROTOCOL_ERROR);
      }
      // Each reset is on the wire once its stream closed; then the session goes (not after a fixed pause).
      await Promise.all(closed);
      await new Promise<void>((r) => session.close(() => r()));
    }
    assert.equal(status(await curl('web')), '200');
    const [get] = await call('web', 'Get');
    assert.equal(get!['code'], 'OK');
    assert.ok(proxies.every((p) => p.exitCode === null));
  });

  it('odd HTTP/2 requests (CONNECT, a 60 KB field, a body longer than its content-length, OPTIONS *) get a 4xx or a stream reset; the proxy keeps serving', async () => {
    const [ca, cert, key] = svid['web']!.map((f) => readFileSync(f));
    const tries: Array<Record<string, string>> = [
      { ':method': 'CONNECT', ':authority': 'x:443' },
      { ':method': 'GET', ':path': '/v1/orders/1', 'x-a': 'a'.repeat(60_000) },
      { ':method': 'POST', ':path': '/billing.v1.Billing/Get', 'content-type': 'application/grpc', te: 'trailers', 'content-length': '3' },
      { ':method': 'OPTIONS', ':path': '*' },
    ];
    for (const p of ['billing', 'orders']) {
      for (const h of tries) {
        const session = http2Connect(`https://127.0.0.1:${port[p]}`, { ca, cert, key, checkServerIdentity: () => undefined });
        session.on('error', () => undefined);
        const outcome = await new Promise<string>((resolve) => {
          const req = session.request(h, { endStream: false });
          req.on('response', (r) => resolve(String(r[':status'])));
          req.on('error', () => resolve('reset'));
          req.on('close', () => resolve('reset'));
          req.resume();
          req.end(Buffer.from([0, 0, 0, 0, 0]));
        });
        session.destroy();
        assert.ok(outcome === 'reset' || Number(outcome) >= 400, `${p} ${JSON.stringify(h).slice(0, 60)}: ${outcome}`);
      }
    }
    assert.equal((await call('web', 'Get'))[0]!['code'], 'OK');
    assert.equal(status(await curl('web')), '200');
    assert.ok(proxies.every((x) => x.exitCode === null));
  });

  it("a fuzzer's HTTP/2 frames (gRPC calls allowed and refused, forged identities, resets) with bytes changed leave the proxy serving", async () => {
    const grpc = { 'content-type': 'application/grpc', te: 'trailers' };
    await fuzzH2(
      () => mtls(port['billing']!, svid['web']!, 'h2'),
      [
        ['POST', '/billing.v1.Billing/Get', grpc],
        ['POST', '/billing.v1.Billing/Delete', grpc],
        ['POST', '/billing.v1.Billing/Watch', grpc],
      ],
    );
    assert.equal((await call('web', 'Get'))[0]!['code'], 'OK');
    assert.ok(proxies.every((x) => x.exitCode === null));
  });

  it('decisions on gRPC calls are logged as gRPC actions', async () => {
    await waitFor('the gRPC deny in the decision log', async () => {
      const r = JSON.parse((await writ(srv, ['decisions', 'query', '--to', BILLING, '-o', 'json'])).stdout) as Array<Record<string, unknown>>;
      return r.some((d) => d['action'] === 'grpc /billing.v1.Billing/Delete' && d['reason'] === 'NO_MATCHING_ALLOW') ? true : undefined;
    });
  });

  it('an h2c upstream is reached over HTTP/2 only: ALPN offers h2 alone, a client without ALPN gets 505', async () => {
    const base = [
      '-sSk',
      '--http1.1',
      '--cert',
      svid['web']![1]!,
      '--key',
      svid['web']![2]!,
      '-w',
      '\n%{http_code}',
      `https://127.0.0.1:${port['billing']}/billing.v1.Billing/Get`,
    ];
    const h1 = await run('curl', base);
    assert.match(h1.stderr, /no application protocol/, h1.stderr);
    const none = await run('curl', ['--no-alpn', ...base]);
    assert.equal(status(none), '505', none.stdout + none.stderr);
    assert.equal(body(none)['code'], 'ERR_HTTP_VERSION');
  });
});
