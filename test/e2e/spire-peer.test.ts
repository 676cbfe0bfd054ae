/**
 * SPIRE, the SPIFFE project's reference implementation, as a peer of Writ: a real spire-server
 * (v1.13.3, pinned in test/go/spire, built by .ci/run into test/go/bin) with a SQLite datastore and
 * an https_spiffe bundle endpoint, a real spire-agent attested by a join token, and go-spiffe
 * fetching a SPIRE-issued X.509-SVID as another uid. Then federation both ways: Writ fetches
 * SPIRE's bundle from SPIRE's endpoint, and SPIRE fetches Writ's from Writ's; then a go-spiffe
 * client with a SPIRE SVID and a go-spiffe server with a Writ SVID authenticate each other; the
 * SPIRE workload calls a Writ workload behind `writ proxy` and is called back through it; and CA
 * rotations are followed both ways (SPIRE's forced with `localauthority`, Writ's own 4-minute CA).
 * The HCL is in test/e2e/fixtures/spire/*.conf.tmpl (the test fills in the @@NAMES@@).
 * The tests run in order: the mTLS one uses the servers and relationships of the ones before.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  ROOT,
  WRIT,
  cleanup,
  onFreePorts,
  run,
  startAgentProcess,
  startServerProcess,
  waitFor,
  writ,
  type AgentProcess,
  type RunResult,
  type ServerProcess,
} from './helpers.ts';
import { GOSPIFFE, gospiffe, spawnGospiffe } from './gospiffe.ts';

const BIN = join(ROOT, 'test/go/bin');
const SPIRE_SERVER = join(BIN, 'spire-server');
const SPIRE_AGENT = join(BIN, 'spire-agent');
const FIXTURES = join(ROOT, 'test/e2e/fixtures/spire');
const missing = [SPIRE_SERVER, SPIRE_AGENT, GOSPIFFE].filter((f) => !existsSync(f));
const SKIP = missing.length
  ? `${missing.join(', ')} missing: build them as .ci/run does (cd test/go/spire && go build -o ../bin/ github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent; cd test/go/gospiffe && go build -o ../bin/gospiffe .)`
  : false;

const NODE_ID = 'spiffe://spire.test/node/writ-e2e';
const WORKLOAD_ID = 'spiffe://spire.test/workload/go';
const WORKLOAD_UID = 1009;
/** The workloads of the cross-domain tests: a Writ one (uid 1010, and the proxy's as this test's uid) and a SPIRE one (uid 1011). */
const WRIT_SERVER_ID = 'spiffe://writ.test/ns/go/sa/server';
const WRIT_API = 'spiffe://writ.test/ns/orders/sa/api';
const SPIRE_CLIENT_ID = 'spiffe://spire.test/workload/client';
const [writUid, spireUid] = [1010, 1011];

let dir: string;
let serverSock: string;
let agentSock: string;
let bundlePort: number;
let writSrv: ServerProcess | undefined;
let writAgent: AgentProcess | undefined;
/** The inbound listener of the writ proxy the proxy test starts (the rotation test calls it again). */
let proxyInbound: string | undefined;
const children: ChildProcess[] = [];
/** In-process servers a test leaves running for the tests after it. */
const closers: Array<() => Promise<void>> = [];
const logs: Record<string, string[]> = { server: [], agent: [] };

interface BundleDoc {
  keys: Array<{ use: string; x5c?: string[] }>;
}

/** A config template with its @@NAMES@@ filled in, written to the temp dir. */
function config(name: string, values: Record<string, string | number>): string {
  let text = readFileSync(join(FIXTURES, `${name}.conf.tmpl`), 'utf8');
  for (const [k, v] of Object.entries(values)) text = text.replaceAll(`@@${k}@@`, String(v));
  assert.doesNotMatch(text, /@@\w+@@/, `${name}.conf.tmpl has a name the test did not fill in`);
  const file = join(dir, `${name}.conf`);
  writeFileSync(file, text);
  return file;
}

function start(name: 'server' | 'agent', cmd: string, args: string[]): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const keep = (d: Buffer): void => void logs[name]!.push(d.toString());
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return child;
}

/** spire-server's CLI against its API socket; fails the test on a non-zero exit. */
async function spire(args: string[]): Promise<RunResult> {
  const r = await run(SPIRE_SERVER, [...args, '-socketPath', serverSock]);
  assert.equal(r.code, 0, `spire-server ${args.join(' ')}: ${r.stdout}${r.stderr}\nserver log: ${logs['server']!.join('').slice(-3000)}`);
  return r;
}

/** `writ ARGS` against `srv`; fails the test on a non-zero exit. */
async function writOk(srv: ServerProcess, args: string[]): Promise<RunResult> {
  const r = await writ(srv, args);
  assert.equal(r.code, 0, `writ ${args.join(' ')}: ${r.stderr}`);
  return r;
}

/** SPIRE's federation relationship with writ.test (`create` or `update`), the endpoint authenticated as `endpointId`. */
const spireFederation = (verb: 'create' | 'update', endpoint: string, endpointId: string): Promise<RunResult> =>
  spire([
    'federation',
    verb,
    '-trustDomain',
    'writ.test',
    '-bundleEndpointURL',
    endpoint,
    '-bundleEndpointProfile',
    'https_spiffe',
    '-endpointSpiffeID',
    endpointId,
  ]);

/** A long-running `gospiffe serve` as `uid`: its lines so far once one has `event: listening`. */
const serveGo = async (uid: number, socket: string, args: string[]): Promise<Array<Record<string, string>>> =>
  (await spawnGospiffe(uid, socket, ['serve', ...args], children, (l) => l['event'] === 'listening')).lines;

/** The trust domains of the X.509 bundles a workload gets, once `td` is among them. */
const bundlesWith = (uid: number, socket: string, td: string): Promise<Array<{ trustDomain: string; authorities: string[] }>> =>
  waitFor(
    `${td} in the bundles of uid ${uid}`,
    async () => {
      const x509 = (await gospiffe(uid, socket, ['bundles'])).out['x509'] as Array<{ trustDomain: string; authorities: string[] }> | undefined;
      return x509?.some((b) => b.trustDomain === td) ? x509 : undefined;
    },
    90_000,
  );

const x5cs = (b: BundleDoc): string[] =>
  b.keys
    .filter((k) => k.use === 'x509-svid')
    .map((k) => k.x5c![0]!)
    .sort();

before(async () => {
  if (SKIP) return;
  dir = mkdtempSync(join(tmpdir(), 'writ-spire-'));
  // The agent socket in a directory other uids reach: attestation decides who gets what.
  chmodSync(dir, 0o755);
  mkdirSync(join(dir, 'data'));
  mkdirSync(join(dir, 'sock'), { mode: 0o755 });
  serverSock = join(dir, 'server.sock');
  agentSock = join(dir, 'sock', 'agent.sock');
  // spire-server binds both ports itself: one taken meanwhile makes it exit, and it starts again on fresh ones.
  const port = await onFreePorts(2, async ([p, bp]) => {
    bundlePort = bp!;
    logs['server']!.length = 0;
    const server = start('server', SPIRE_SERVER, ['run', '-config', config('server', { DIR: dir, PORT: p!, BUNDLE_PORT: bundlePort })]);
    // Polled by hand, not with waitFor (which takes a throw for "not yet"): an exit ends the wait at once.
    for (const end = Date.now() + 60_000; ; await new Promise((r) => setTimeout(r, 100))) {
      if (server.exitCode !== null) throw new Error(`spire-server exited ${server.exitCode}: ${logs['server']!.join('').slice(-3000)}`);
      if ((await run(SPIRE_SERVER, ['healthcheck', '-socketPath', serverSock])).code === 0) return p!;
      if (Date.now() > end) throw new Error(`spire-server not healthy in 60 s: ${logs['server']!.join('').slice(-3000)}`);
    }
  });
  const token = /Token: (\S+)/.exec((await spire(['token', 'generate', '-spiffeID', NODE_ID, '-ttl', '600'])).stdout)?.[1];
  assert.ok(token, 'spire-server token generate printed no token');
  writeFileSync(join(dir, 'bootstrap.pem'), (await spire(['bundle', 'show'])).stdout);
  start('agent', SPIRE_AGENT, ['run', '-config', config('agent', { DIR: dir, PORT: port, SOCKET: agentSock }), '-joinToken', token]);
  await waitFor('spire-agent healthy', async () => ((await run(SPIRE_AGENT, ['healthcheck', '-socketPath', agentSock])).code === 0 ? true : undefined), 60_000);
});

after(async () => {
  for (const close of closers) await close();
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGTERM');
        }),
    ),
  );
  await writAgent?.stop();
  await writSrv?.stop();
  if (writSrv) cleanup(writSrv.dataDir);
  if (writAgent) cleanup(writAgent.dataDir);
  if (dir) cleanup(dir);
});

describe('SPIRE as a peer', { skip: SKIP }, () => {
  it("a SPIRE agent serves go-spiffe (as another uid) the X.509-SVID of its registration entry, chained to SPIRE's CA", async () => {
    await spire(['entry', 'create', '-parentID', NODE_ID, '-spiffeID', WORKLOAD_ID, '-selector', `unix:uid:${WORKLOAD_UID}`]);
    // The agent learns of the new entry on its next sync: go-spiffe's X509Source waits for it.
    const r = await gospiffe(WORKLOAD_UID, agentSock, ['x509']);
    assert.equal(r.code, 0, `gospiffe x509: ${r.raw.stdout}${r.raw.stderr}\nagent log: ${logs['agent']!.join('').slice(-3000)}`);
    const svid = r.out['svid'] as Record<string, unknown>;
    assert.equal(svid['spiffeId'], WORKLOAD_ID);
    assert.equal(svid['bundleTrustDomain'], 'spiffe://spire.test');
    assert.equal(svid['chainVerifies'], true);
  });

  it("Writ federates with SPIRE: Writ fetches SPIRE's bundle from SPIRE's https_spiffe endpoint, and SPIRE fetches Writ's from Writ's", async () => {
    // A 4-minute CA: a successor is published at 2 min and signs from 3 min 20 s, which the rotation test waits for.
    writSrv = await startServerProcess({ args: ['--trust-domain', 'writ.test', '--bundle-endpoint-listen', '127.0.0.1:0', '--ca-ttl', '4m'] });
    const srv = writSrv;
    const ok = (args: string[]): Promise<RunResult> => writOk(srv, args);
    // Writ -> SPIRE: SPIRE's bundle (SPIFFE format) bootstraps the first fetch.
    const spireBundle = JSON.parse((await spire(['bundle', 'show', '-format', 'spiffe'])).stdout) as BundleDoc;
    writeFileSync(join(dir, 'spire-bundle.json'), JSON.stringify(spireBundle));
    await ok([
      'federation',
      'create',
      '--trust-domain',
      'spire.test',
      '--bundle-endpoint-url',
      `https://127.0.0.1:${bundlePort}`,
      '--profile',
      'https_spiffe',
      '--endpoint-spiffe-id',
      'spiffe://spire.test/spire/server',
      '--bootstrap-bundle',
      join(dir, 'spire-bundle.json'),
    ]);
    const shown = await waitFor('spire.test fetched', async () => {
      const st = JSON.parse((await ok(['federation', 'show', 'spire.test', '-o', 'json'])).stdout) as { lastSuccessAt: string | null; lastError: unknown };
      return st.lastSuccessAt ? st : undefined;
    });
    assert.equal(shown.lastError, null);
    const held = (JSON.parse((await ok(['bundle', 'list', '-o', 'json'])).stdout) as Array<{ trustDomain: string; bundle: BundleDoc }>).find(
      (b) => b.trustDomain === 'spire.test',
    );
    assert.ok(held, 'Writ holds no bundle of spire.test');
    assert.deepEqual(x5cs(held.bundle), x5cs(spireBundle), "Writ holds SPIRE's CA");
    assert.match((await ok(['federation', 'status'])).stdout, /spire\.test/);

    // SPIRE -> Writ: Writ's bundle as SPIRE's bootstrap, then a fetch from Writ's endpoint.
    const writBundle = JSON.parse((await ok(['bundle', 'show'])).stdout) as BundleDoc;
    const endpoint = await waitFor('the bundle endpoint log line', async () => {
      for (const line of srv.logs) {
        const j = JSON.parse(line) as { msg?: string; url?: string };
        if (j.msg === 'bundle endpoint listening') return j.url;
      }
      return undefined;
    });
    writeFileSync(join(dir, 'writ-bundle.json'), JSON.stringify(writBundle));
    await spire(['bundle', 'set', '-format', 'spiffe', '-id', 'spiffe://writ.test', '-path', join(dir, 'writ-bundle.json')]);
    await spireFederation('create', endpoint, 'spiffe://writ.test/writ/server');
    const spireCopy = async (): Promise<BundleDoc> => {
      const list = await spire(['bundle', 'list', '-format', 'spiffe', '-id', 'spiffe://writ.test']);
      return JSON.parse(list.stdout.slice(list.stdout.indexOf('{'))) as BundleDoc;
    };
    // SPIRE authenticates Writ's endpoint: under another endpoint SPIFFE ID the fetch is refused.
    await spireFederation('update', endpoint, 'spiffe://writ.test/not-the-server');
    const refused = await run(SPIRE_SERVER, ['federation', 'refresh', '-id', 'writ.test', '-socketPath', serverSock]);
    assert.notEqual(refused.code, 0, 'SPIRE accepted an endpoint with the wrong SPIFFE ID');
    assert.match(refused.stdout + refused.stderr, /not-the-server|unexpected ID|SPIFFE ID/i);
    await spireFederation('update', endpoint, 'spiffe://writ.test/writ/server');
    await spire(['federation', 'refresh', '-id', 'writ.test']);
    const spireHeld = await spireCopy();
    assert.deepEqual(x5cs(spireHeld), x5cs(writBundle), "SPIRE holds Writ's CA");
  });

  it('mTLS across the two trust domains: a go-spiffe client with a SPIRE SVID calls a go-spiffe server with a Writ SVID, each trusting the federated bundle', async () => {
    assert.ok(writSrv, 'the federation test starts the Writ server');
    const srv = writSrv;
    const ok = (args: string[]): Promise<RunResult> => writOk(srv, args);
    await ok([
      'entry',
      'create',
      '--spiffe-id',
      WRIT_SERVER_ID,
      '--parent-id',
      'spiffe://writ.test/writ/agent/sp',
      '--selector',
      `unix:uid:${writUid}`,
      '--federates-with',
      'spire.test',
    ]);
    const token = JSON.parse((await ok(['token', 'create', '--node-name', 'sp', '-o', 'json'])).stdout).token as string;
    writAgent = await startAgentProcess(srv, { joinToken: token, socket: join(dir, 'sock', 'writ.sock') });
    await spire([
      'entry',
      'create',
      '-parentID',
      NODE_ID,
      '-spiffeID',
      SPIRE_CLIENT_ID,
      '-selector',
      `unix:uid:${spireUid}`,
      '-federatesWith',
      'spiffe://writ.test',
    ]);

    // Each workload gets the other trust domain's bundle from its own agent.
    const onWrit = await bundlesWith(writUid, writAgent.socket, 'spire.test');
    const onSpire = await bundlesWith(spireUid, agentSock, 'writ.test');
    assert.deepEqual(
      onWrit.map((b) => b.trustDomain),
      ['spire.test', 'writ.test'],
    );
    assert.deepEqual(
      onSpire.map((b) => b.trustDomain),
      ['spire.test', 'writ.test'],
    );
    assert.deepEqual(onWrit.find((b) => b.trustDomain === 'spire.test')!.authorities, onSpire.find((b) => b.trustDomain === 'spire.test')!.authorities);
    assert.deepEqual(onSpire.find((b) => b.trustDomain === 'writ.test')!.authorities, onWrit.find((b) => b.trustDomain === 'writ.test')!.authorities);

    const lines = await serveGo(writUid, writAgent.socket, ['-authorize', SPIRE_CLIENT_ID]);
    const listening = lines.find((l) => l['event'] === 'listening')!;
    assert.equal(listening['spiffeId'], WRIT_SERVER_ID);
    const call = await gospiffe(spireUid, agentSock, ['client', '-authorize', WRIT_SERVER_ID, '-url', `https://${listening['addr']}/v1/hello`]);
    assert.equal(call.code, 0, `${call.raw.stdout}${call.raw.stderr}`);
    assert.equal(call.out['status'], 200);
    assert.equal(call.out['peer'], WRIT_SERVER_ID);
    assert.deepEqual(call.out['body'], { server: WRIT_SERVER_ID, peer: SPIRE_CLIENT_ID, method: 'GET', path: '/v1/hello' });
    // The SPIRE workload whose entry does not federate with writ.test cannot verify Writ's server.
    const unfederated = await gospiffe(WORKLOAD_UID, agentSock, ['client', '-authorize', WRIT_SERVER_ID, '-url', `https://${listening['addr']}/v1/hello`]);
    assert.notEqual(unfederated.code, 0);
    assert.match(String(unfederated.out['error']), /no X\.509 bundle for trust domain "writ\.test"/);
  });

  it("through writ proxy both ways: a SPIRE workload calls a Writ workload behind writ proxy, and the Writ workload calls it back; each side authorizes the other's SPIFFE ID", async () => {
    assert.ok(writSrv && writAgent, 'the tests before start the Writ server and agent');
    const srv = writSrv;
    const wa = writAgent;
    const ok = (args: string[]): Promise<RunResult> => writOk(srv, args);
    // The proxy runs as this test's uid; its identity is the entry for that uid.
    await ok([
      'entry',
      'create',
      '--spiffe-id',
      WRIT_API,
      '--parent-id',
      'spiffe://writ.test/writ/agent/sp',
      '--selector',
      `unix:uid:${process.getuid!()}`,
      '--federates-with',
      'spire.test',
    ]);
    const policy = join(dir, 'orders.yaml');
    writeFileSync(
      policy,
      `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders-from-spire }
spec:
  to: ${WRIT_API}
  rules:
    - effect: allow
      from: [${SPIRE_CLIENT_ID}]
      actions: [{ methods: [GET], paths: ["/v1/orders/*"] }]
`,
    );
    await ok(['policy', 'apply', '-f', policy, '--wait=60s']);

    // The Writ workload: a plain HTTP app that says who the proxy said called it.
    const app = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ app: 'orders', caller: req.headers['x-writ-peer-id'] ?? null, path: req.url }));
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise<void>((r) => app.close(() => r())));
    {
      // The SPIRE workload's own server, authorizing only the Writ workload's ID.
      const spireServe = (await serveGo(spireUid, agentSock, ['-authorize', WRIT_API])).find((l) => l['event'] === 'listening')!;
      assert.equal(spireServe['spiffeId'], SPIRE_CLIENT_ID);
      const appPort = (app.address() as AddressInfo).port;
      const ports = await onFreePorts(3, async (ports) => {
        const child = spawn(
          process.execPath,
          [
            WRIT,
            'proxy',
            '--socket',
            wa.socket,
            '--spiffe-id',
            WRIT_API,
            '--inbound',
            `127.0.0.1:${ports[0]}=127.0.0.1:${appPort}`,
            '--outbound',
            `127.0.0.1:${ports[1]}=${SPIRE_CLIENT_ID}@${spireServe['addr']}`,
            '--outbound',
            `127.0.0.1:${ports[2]}=spiffe://spire.test/workload/someone-else@${spireServe['addr']}`,
          ],
          { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_TEST_CONTEXT: '' } },
        );
        children.push(child);
        let out = '';
        await new Promise<void>((resolve, reject) => {
          child.stdout!.on('data', (d: Buffer) => {
            out += d.toString();
            if (out.includes('"writ proxy listening"')) resolve();
          });
          child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
          child.once('exit', () => reject(new Error(`writ proxy did not start: ${out}`)));
        });
        return ports;
      });

      // SPIRE -> Writ: go-spiffe with its SPIRE SVID; the proxy presents the Writ SVID and authorizes by policy.
      proxyInbound = `https://127.0.0.1:${ports[0]}`;
      const url = (path: string): string => `${proxyInbound}${path}`;
      const allowed = await gospiffe(spireUid, agentSock, ['client', '-authorize', WRIT_API, '-url', url('/v1/orders/7')]);
      assert.equal(allowed.code, 0, `${allowed.raw.stdout}${allowed.raw.stderr}`);
      assert.equal(allowed.out['status'], 200);
      assert.equal(allowed.out['peer'], WRIT_API, 'go-spiffe verified the Writ SVID through the federated bundle');
      assert.deepEqual(allowed.out['body'], { app: 'orders', caller: SPIRE_CLIENT_ID, path: '/v1/orders/7' });
      const denied = await gospiffe(spireUid, agentSock, ['client', '-authorize', WRIT_API, '-url', url('/admin')]);
      assert.equal(denied.out['status'], 403, `${denied.raw.stdout}${denied.raw.stderr}`);
      const body = denied.out['body'] as { code: string; decisionId: string };
      assert.equal(body.code, 'NO_MATCHING_ALLOW', 'refused by policy: nothing allows this path');
      // The agent reports decisions in batches: the deny reaches the server's log a moment later.
      const shown = await waitFor('the deny in the decision log', async () => {
        const r = await writ(srv, ['decisions', 'show', body.decisionId, '-o', 'json']);
        return r.code === 0 ? (JSON.parse(r.stdout) as { from: string; to: string; decision: string }) : undefined;
      });
      assert.deepEqual([shown.from, shown.to, shown.decision], [SPIRE_CLIENT_ID, WRIT_API, 'deny']);

      // Writ -> SPIRE: plain HTTP into the outbound listener; the proxy checks the SPIRE peer's ID and the SPIRE side checks Writ's.
      const back = await fetch(`http://127.0.0.1:${ports[1]}/v1/hello`);
      assert.equal(back.status, 200);
      assert.deepEqual(await back.json(), { server: SPIRE_CLIENT_ID, peer: WRIT_API, method: 'GET', path: '/v1/hello' });
      const wrongPeer = await fetch(`http://127.0.0.1:${ports[2]}/v1/hello`);
      assert.equal(wrongPeer.status, 502, 'the outbound listener expecting another SPIFFE ID refuses the SPIRE server');
      assert.equal(((await wrongPeer.json()) as { code: string }).code, 'ERR_UPSTREAM');
    }
  });

  it("CA rotations are followed both ways without an operator on the other side: SPIRE's (forced with localauthority) by Writ, and Writ's own (its 4-minute CA) by SPIRE", {
    timeout: 600_000,
  }, async () => {
    assert.ok(writSrv && writAgent && proxyInbound, 'the tests before start the Writ server, agent and proxy');
    const srv = writSrv;
    const ok = (args: string[]): Promise<RunResult> => writOk(srv, args);
    const fp = (b64: string): string => createHash('sha256').update(Buffer.from(b64, 'base64')).digest('hex');
    const spireBundle = async (): Promise<string[]> => x5cs(JSON.parse((await spire(['bundle', 'show', '-format', 'spiffe'])).stdout) as BundleDoc);
    const writsCopyOfSpire = async (): Promise<string[]> =>
      x5cs(
        (JSON.parse((await ok(['bundle', 'list', '-o', 'json'])).stdout) as Array<{ trustDomain: string; bundle: BundleDoc }>).find(
          (b) => b.trustDomain === 'spire.test',
        )!.bundle,
      );
    const writBundle = async (): Promise<string[]> => x5cs(JSON.parse((await ok(['bundle', 'show'])).stdout) as BundleDoc);
    const spiresCopyOfWrit = async (): Promise<string[]> => {
      const list = await spire(['bundle', 'list', '-format', 'spiffe', '-id', 'spiffe://writ.test']);
      return x5cs(JSON.parse(list.stdout.slice(list.stdout.indexOf('{'))) as BundleDoc);
    };
    const authorityId = (out: string, slot: string): string => {
      const j = JSON.parse(out) as Record<string, { authority_id?: string; authorityId?: string } | undefined>;
      const id = j[slot]?.authority_id ?? j[slot]?.authorityId;
      assert.ok(id, `no ${slot} authority in ${out}`);
      return id;
    };
    const svidRoot = async (uid: number, socket: string): Promise<string> =>
      String(((await gospiffe(uid, socket, ['x509'])).out['svid'] as Record<string, unknown>)['root']);

    // 1. SPIRE prepares a new X.509 CA; Writ fetches it at SPIRE's refresh hint (5 s here), before it signs.
    const spireBefore = await spireBundle();
    const prepared = authorityId((await spire(['localauthority', 'x509', 'prepare', '-output', 'json'])).stdout, 'prepared_authority');
    const spireNow = await spireBundle();
    const spireNew = spireNow.find((c) => !spireBefore.includes(c));
    assert.ok(spireNew, 'SPIRE published its prepared CA');
    await waitFor(
      "Writ holds SPIRE's prepared CA",
      async () => (JSON.stringify(await writsCopyOfSpire()) === JSON.stringify(spireNow) ? true : undefined),
      90_000,
    );
    // 2. It signs: activated, the old one tainted, so SPIRE's agent re-signs its workloads' SVIDs at once.
    await spire(['localauthority', 'x509', 'activate', '-authorityID', prepared]);
    const old = authorityId((await spire(['localauthority', 'x509', 'show', '-output', 'json'])).stdout, 'old');
    await spire(['localauthority', 'x509', 'taint', '-authorityID', old]);
    await waitFor(
      "the SPIRE workload's SVID chains to SPIRE's new CA",
      async () => ((await svidRoot(spireUid, agentSock)) === fp(spireNew) ? true : undefined),
      180_000,
    );
    // 3. Writ's proxy accepts the SVID of SPIRE's new CA: nobody told Writ about the rotation.
    const call = await gospiffe(spireUid, agentSock, ['client', '-authorize', WRIT_API, '-url', `${proxyInbound}/v1/orders/8`]);
    assert.equal(call.code, 0, `${call.raw.stdout}${call.raw.stderr}`);
    assert.equal(call.out['status'], 200);
    assert.deepEqual(call.out['body'], { app: 'orders', caller: SPIRE_CLIENT_ID, path: '/v1/orders/8' });

    // 4. Writ rotates by itself: a successor is published at half its 4-minute CA life; SPIRE fetches it.
    const writNow = await waitFor(
      'Writ publishes a successor CA',
      async () => {
        const b = await writBundle();
        return b.length >= 2 ? b : undefined;
      },
      240_000,
    );
    const writNew = writNow.reduce((a, b) =>
      new X509Certificate(Buffer.from(a, 'base64')).validFrom > new X509Certificate(Buffer.from(b, 'base64')).validFrom ? a : b,
    );
    await waitFor("SPIRE holds Writ's successor CA", async () => ((await spiresCopyOfWrit()).includes(writNew) ? true : undefined), 180_000);
    // 5. Once the successor signs, a Writ workload's SVID chains to it, and the SPIRE workload trusts it.
    await waitFor(
      "the Writ workload's SVID chains to Writ's successor CA",
      async () => ((await svidRoot(writUid, writAgent!.socket)) === fp(writNew) ? true : undefined),
      300_000,
    );
    const lines = await serveGo(writUid, writAgent.socket, ['-authorize', SPIRE_CLIENT_ID]);
    const listening = lines.find((l) => l['event'] === 'listening')!;
    const back = await gospiffe(spireUid, agentSock, ['client', '-authorize', WRIT_SERVER_ID, '-url', `https://${listening['addr']}/v1/after-rotation`]);
    assert.equal(back.code, 0, `${back.raw.stdout}${back.raw.stderr}`);
    assert.equal(back.out['peer'], WRIT_SERVER_ID);
    assert.deepEqual(back.out['body'], { server: WRIT_SERVER_ID, peer: SPIRE_CLIENT_ID, method: 'GET', path: '/v1/after-rotation' });
  });
});
