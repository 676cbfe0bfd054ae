/**
 * Server, agent and workloads as real processes. The Workload API is driven by Python's grpcio
 * (Debian python3-grpcio, stubs compiled with python3-grpc-tools) and by the writ CLI.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GRPC_STATUS, WorkloadClient } from '@writ/sdk';
import {
  DEBIAN_PYTHON,
  ROOT,
  WRIT,
  cleanup,
  run,
  startAgentProcess,
  startServerProcess,
  waitFor,
  writ,
  type AgentProcess,
  type ServerProcess,
  pythonStubs,
} from './helpers.ts';

let srv: ServerProcess;
let partner: ServerProcess;
let agent: AgentProcess;
let stubs: string;
const AUD = 'spiffe://e2e.test/ns/db';

async function entry(args: string[]): Promise<{ id: string }> {
  const r = await writ(srv, ['entry', 'create', '--parent-id', 'spiffe://e2e.test/writ/agent/node-a', ...args, '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

before(async () => {
  // Restartable: the agent's server URL outlives a restart of the server (tests below stop and start it).
  [srv, partner] = await Promise.all([startServerProcess({ restartable: true }), startServerProcess({ args: ['--trust-domain', 'partner.test'] })]);
  // Static federation with a real second trust domain.
  const pb = await writ(partner, ['bundle', 'show']);
  const f = join(srv.dataDir, 'partner.json');
  writeFileSync(f, pb.stdout);
  assert.equal((await writ(srv, ['bundle', 'set', '--trust-domain', 'partner.test', '-f', f])).code, 0);
  await entry(['--spiffe-id', 'spiffe://e2e.test/ns/web', '--selector', 'unix:uid:0', '--federates-with', 'partner.test', '--hint', 'main']);
  const token = JSON.parse((await writ(srv, ['token', 'create', '--node-name', 'node-a', '-o', 'json'])).stdout).token as string;
  // The socket lives in a directory every local user can reach: attestation decides, not permissions.
  const sockDir = mkdtempSync(join(tmpdir(), 'writ-sock-'));
  chmodSync(sockDir, 0o755);
  agent = await startAgentProcess(srv, { joinToken: token, socket: join(sockDir, 'api.sock') });
  stubs = await pythonStubs('workload.proto', 'test/e2e/fixtures');
  chmodSync(stubs, 0o755);
});

after(async () => {
  await agent?.stop();
  await Promise.all([srv?.stop(), partner?.stop()]);
  for (const d of [srv?.dataDir, partner?.dataDir, agent?.dataDir, stubs]) if (d) cleanup(d);
});

const py = (args: string[], opts: { uid?: number } = {}) =>
  opts.uid === undefined
    ? run(DEBIAN_PYTHON, [join(ROOT, 'test/e2e/fixtures/workload_client.py'), stubs, agent.socket, AUD, ...args])
    : run('setpriv', [
        `--reuid=${opts.uid}`,
        `--regid=${opts.uid}`,
        '--clear-groups',
        DEBIAN_PYTHON,
        join(ROOT, 'test/e2e/fixtures/workload_client.py'),
        stubs,
        agent.socket,
        AUD,
        ...args,
      ]);

describe('the Workload API, driven by Python grpcio', () => {
  it('serves every RPC with the standard wire format, header rule, federation and Unimplemented WIT RPCs', async () => {
    await waitFor('the first SVID', async () => ((await writ(undefined, ['svid', 'fetch', '--socket', agent.socket])).code === 0 ? true : undefined));
    const partnerJwt = JSON.parse(
      (await writ(partner, ['svid', 'mint-jwt', '--spiffe-id', 'spiffe://partner.test/billing', '--audience', AUD, '-o', 'json'])).stdout,
    ).token as string;
    const r = await py(['all', partnerJwt]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.no_header, 'INVALID_ARGUMENT');
    assert.equal(out.x509.svids.length, 1);
    assert.equal(out.x509.svids[0].spiffe_id, 'spiffe://e2e.test/ns/web');
    assert.equal(out.x509.svids[0].hint, 'main');
    assert.ok(out.x509.svids[0].key_bytes > 100 && out.x509.svids[0].bundle_bytes > 300);
    assert.equal(out.x509.first_cert_der_hex.slice(0, 2), '30', 'DER, not PEM');
    assert.deepEqual(out.x509.federated, ['spiffe://partner.test']);
    assert.deepEqual(out.x509_bundles, ['spiffe://e2e.test', 'spiffe://partner.test']);
    assert.deepEqual(out.jwt, [{ spiffe_id: 'spiffe://e2e.test/ns/web', parts: 3 }]);
    assert.equal(out.jwt_no_audience, 'INVALID_ARGUMENT');
    assert.equal(out.jwt_other_id, 'PERMISSION_DENIED');
    assert.deepEqual(Object.keys(out.jwt_bundles).sort(), ['spiffe://e2e.test', 'spiffe://partner.test']);
    assert.ok(out.jwt_bundles['spiffe://e2e.test'] >= 1);
    assert.equal(out.validate.spiffe_id, 'spiffe://e2e.test/ns/web');
    assert.equal(out.validate.claims.sub, 'spiffe://e2e.test/ns/web');
    assert.equal(out.validate.claims.aud, AUD);
    assert.equal(out.validate_wrong_audience, 'INVALID_ARGUMENT');
    assert.equal(out.validate_garbage, 'INVALID_ARGUMENT');
    assert.equal(out.validate_federated, 'spiffe://partner.test/billing', "a federated domain's token, checked against its own keys");
    assert.equal(out.wit, 'UNIMPLEMENTED');
    // The chain the Python client received verifies with openssl against the bundle it received.
    const bundle = await run('openssl', ['x509', '-inform', 'DER', '-in', join(stubs, 'bundle.der'), '-out', join(stubs, 'bundle.pem')]);
    assert.equal(bundle.code, 0, bundle.stderr);
    const leaf = await run('openssl', ['x509', '-inform', 'DER', '-in', join(stubs, 'svid.der'), '-out', join(stubs, 'svid.pem')]);
    assert.equal(leaf.code, 0, leaf.stderr);
    const v = await run('openssl', ['verify', '-CAfile', join(stubs, 'bundle.pem'), join(stubs, 'svid.pem')]);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout.trim(), `${join(stubs, 'svid.pem')}: OK`);
    // And a certificate it does not sign does not verify: the check can fail.
    const other = await run('openssl', ['verify', '-CAfile', join(stubs, 'bundle.pem'), join(partner.dataDir, 'bundle.pem')]);
    assert.notEqual(other.code, 0, other.stdout);
  });

  it('a caller with no identity (another uid) gets PermissionDenied', async () => {
    const r = await py(['denied'], { uid: 65534 });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { FetchX509SVID: 'PERMISSION_DENIED', FetchJWTSVID: 'PERMISSION_DENIED' });
  });

  it('the SDK validates a JWT-SVID against the bundles from the Workload API', async () => {
    const { JwtSource, validateJwtSvid } = await import('@writ/sdk');
    const src = await JwtSource.create({ endpoint: `unix://${agent.socket}` });
    const svid = await src.fetchJwtSvid(AUD);
    assert.equal((await validateJwtSvid(svid.svid, AUD, src)).spiffeId.uri, 'spiffe://e2e.test/ns/web');
    await assert.rejects(validateJwtSvid(svid.svid, 'spiffe://e2e.test/other', src), /audience/);
    src.close();
  });

  it('garbage bytes and a vanished client leave the agent serving everyone else', async () => {
    await new Promise<void>((resolve) => {
      const s = connect(agent.socket, () => s.write(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x08\x00\x00\x00\x00\x00garbage'.repeat(20))));
      s.resume();
      s.on('close', () => resolve()).on('error', () => resolve());
      setTimeout(() => s.destroy(), 500);
    });
    const c = new WorkloadClient(`unix://${agent.socket}`);
    const ctx = await c.fetchX509Context();
    assert.equal(ctx.svids[0]!.spiffeId, 'spiffe://e2e.test/ns/web');
    c.close();
    assert.equal(agent.child.exitCode, null);
  });
});

describe('hostile input on the socket', () => {
  it('an oversized request message gets ResourceExhausted, an unknown method Unimplemented', async () => {
    const { GrpcClient, GrpcError, GRPC_STATUS } = await import('@writ/sdk/internal');
    const g = new GrpcClient(`unix://${agent.socket}`);
    const big = Buffer.alloc(200 * 1024, 1);
    await assert.rejects(
      g.unary('/SpiffeWorkloadAPI/FetchJWTSVID', big, { 'workload.spiffe.io': 'true' }),
      (e) => e instanceof GrpcError && e.code === GRPC_STATUS.RESOURCE_EXHAUSTED,
    );
    await assert.rejects(
      g.unary('/SpiffeWorkloadAPI/Nope', Buffer.alloc(0), { 'workload.spiffe.io': 'true' }),
      (e) => e instanceof GrpcError && e.code === GRPC_STATUS.UNIMPLEMENTED,
    );
    g.close();
  });

  it('an executable replaced on disk after the process started does not change the identity of the running process', async () => {
    const { createHash } = await import('node:crypto');
    const { copyFileSync, readFileSync: rf, rmSync, renameSync } = await import('node:fs');
    const bin = join(mkdtempSync(join(tmpdir(), 'writ-exe-')), 'svc');
    copyFileSync('/usr/bin/python3.11', bin);
    chmodSync(bin, 0o755);
    chmodSync(join(bin, '..'), 0o755);
    const hash = createHash('sha256').update(rf(bin)).digest('hex');
    await entry(['--spiffe-id', 'spiffe://e2e.test/ns/pinned-binary', '--selector', `unix:sha256:${hash}`, '--selector', `unix:path:${bin}`]);
    // A long-running process from the binary: it asks twice, with the file replaced in between.
    const script = `
import sys, time
sys.path.insert(0, sys.argv[1])
import grpc, workload_pb2 as pb, workload_pb2_grpc as rpc
stub = rpc.SpiffeWorkloadAPIStub(grpc.insecure_channel("unix://" + sys.argv[2]))
def ids():
    for m in stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=[("workload.spiffe.io", "true")], timeout=5):
        return sorted(s.spiffe_id for s in m.svids)
for _ in range(150):  # a bounded wait (30 s) for the entry to reach the agent
    try:
        if "spiffe://e2e.test/ns/pinned-binary" in ids(): break
    except grpc.RpcError: pass
    time.sleep(0.2)
print(ids(), flush=True)
sys.stdin.readline()
print(ids(), flush=True)
`;
    const { spawn } = await import('node:child_process');
    const proc = spawn(bin, ['-c', script, stubs, agent.socket], { stdio: ['pipe', 'pipe', 'pipe'], env: { PYTHONPATH: '/usr/lib/python3/dist-packages' } });
    const lines: string[] = [];
    proc.stdout.on('data', (d: Buffer) => lines.push(...d.toString().trim().split('\n')));
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    await waitFor('the first answer', async () => (lines.length >= 1 ? true : undefined)).catch(() => assert.fail(err));
    assert.match(lines[0]!, /pinned-binary/);
    // Replace the file on disk with another program.
    copyFileSync('/bin/true', `${bin}.new`);
    renameSync(`${bin}.new`, bin);
    proc.stdin.write('\n');
    await waitFor('the second answer', async () => (lines.length >= 2 ? true : undefined)).catch(() => assert.fail(err));
    assert.match(lines[1]!, /pinned-binary/, 'the running process is still attested by what it runs, not by what the file now holds');
    proc.kill();
    rmSync(join(bin, '..'), { recursive: true, force: true });
  });
});

describe('connect, then exec()', () => {
  it('a process that connects, then exec()s an allowed binary while a child keeps the connection, gets nothing for it', async () => {
    await entry(['--spiffe-id', 'spiffe://e2e.test/ns/exec-target', '--selector', 'unix:path:/usr/bin/sleep']);
    const dir = mkdtempSync(join(tmpdir(), 'writ-exec-'));
    // The connecting process (python) waits until the agent accepted (its HTTP/2 SETTINGS arrived,
    // peeked, not read), hands the socket to a child, then becomes /usr/bin/sleep.
    writeFileSync(
      join(dir, 'connect-exec.py'),
      `import os, socket, subprocess, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.recv(1, socket.MSG_PEEK)
subprocess.Popen([sys.argv[2], sys.argv[3], str(s.fileno()), str(os.getpid())], pass_fds=[s.fileno()])
os.execv("/usr/bin/sleep", ["sleep", "60"])
`,
    );
    // The child asks over the inherited connection once its parent runs /usr/bin/sleep.
    writeFileSync(
      join(dir, 'child.mjs'),
      `import { connect } from 'node:http2';
import { Socket } from 'node:net';
import { readlinkSync } from 'node:fs';
const [fd, ppid] = process.argv.slice(2).map(Number);
while (readlinkSync('/proc/' + ppid + '/exe') !== '/usr/bin/sleep') await new Promise((r) => setTimeout(r, 10));
const s = connect('http://localhost', { createConnection: () => new Socket({ fd, readable: true, writable: true }) });
const req = s.request({ ':method': 'POST', ':path': '/SpiffeWorkloadAPI/FetchX509SVID', 'content-type': 'application/grpc', te: 'trailers', 'workload.spiffe.io': 'true' });
let data = Buffer.alloc(0);
let status = {};
req.on('response', (h) => (status = h));
req.on('trailers', (h) => (status = h));
req.on('data', (d) => {
  data = Buffer.concat([data, d]);
  if (data.includes('spiffe://e2e.test/ns/exec-target')) done({ served: true });
});
req.on('close', () => done({ served: false, status: status['grpc-status'], message: decodeURIComponent(status['grpc-message'] ?? '') }));
// The parent (now sleep) has served its purpose.
const done = (o) => (console.log(JSON.stringify(o)), process.kill(ppid, 'SIGKILL'), process.exit(0));
req.end(Buffer.alloc(5));
`,
    );
    const r = await run(DEBIAN_PYTHON, [join(dir, 'connect-exec.py'), agent.socket, process.execPath, join(dir, 'child.mjs')], { timeoutMs: 60_000 });
    cleanup(dir);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1) || JSON.stringify({ stderr: r.stderr }));
    assert.equal(out.served, false, 'the SVID of the exec()ed binary is not handed over a connection made before the exec');
    assert.equal(out.status, String(GRPC_STATUS.PERMISSION_DENIED));
    assert.match(out.message, /runs another executable than when it connected/);
  });
});

describe('sync, rotation and outages', () => {
  it('a new entry reaches the workload stream, a deleted one is withdrawn within seconds', async () => {
    const c = new WorkloadClient(`unix://${agent.socket}`);
    const seen: string[][] = [];
    const errors: string[] = [];
    const stop = c.watchX509Context(
      (ctx) => seen.push(ctx.svids.map((s) => s.spiffeId)),
      (e) => errors.push(e.message),
    );
    await waitFor('initial context', async () => (seen.length > 0 ? true : undefined));
    const extra = await entry(['--spiffe-id', 'spiffe://e2e.test/ns/web-extra', '--selector', 'unix:uid:0', '--selector', 'unix:gid:0']);
    await waitFor('the new SVID on the stream', async () => (seen.at(-1)?.includes('spiffe://e2e.test/ns/web-extra') ? true : undefined));
    assert.equal((await writ(srv, ['entry', 'delete', extra.id])).code, 0);
    await waitFor('the SVID withdrawn', async () => (seen.at(-1)?.length === 1 ? true : undefined));
    stop();
    c.close();
  });

  it('keeps serving from cache with the server down, and after its own restart', async () => {
    await srv.stop();
    try {
      const c = new WorkloadClient(`unix://${agent.socket}`);
      assert.equal((await c.fetchX509Context()).svids[0]!.spiffeId, 'spiffe://e2e.test/ns/web');
      c.close();
      await agent.stop();
      agent = await startAgentProcess(srv, { dataDir: agent.dataDir, socket: agent.socket });
      const c2 = new WorkloadClient(`unix://${agent.socket}`);
      const ctx = await c2.fetchX509Context();
      assert.equal(ctx.svids[0]!.spiffeId, 'spiffe://e2e.test/ns/web', 'served at once from the data dir, no server needed');
      c2.close();
    } finally {
      srv = await srv.startAgain();
    }
    const later = await entry(['--spiffe-id', 'spiffe://e2e.test/ns/after-restart', '--selector', 'unix:uid:0']);
    const c3 = new WorkloadClient(`unix://${agent.socket}`);
    await waitFor(
      'the agent to catch up with the restarted server',
      async () => {
        const ctx = await c3.fetchX509Context();
        return ctx.svids.some((s) => s.spiffeId === 'spiffe://e2e.test/ns/after-restart') ? true : undefined;
      },
      30_000,
    );
    c3.close();
    assert.ok(later.id);
  });
});

describe("the decision log's drop counts reach the server", () => {
  it("a reporter's drops and the agent's own buffer-full drops are counted in writ_decision_log_dropped_total", async () => {
    const { GrpcClient, Writer, encodeDecision } = await import('@writ/sdk/internal');
    const dropped = async (): Promise<number> => {
      const m = await run('curl', ['-sS', '--cacert', join(srv.dataDir, 'bundle.pem'), `${srv.url}/metrics`]);
      // Drops lost on a node are one series (`reporter="agent"`), not one per agent: agents come and go.
      return Number(/writ_decision_log_dropped_total\{reporter="agent"\} (\d+)/.exec(m.stdout)?.[1] ?? 0);
    };
    const decision = (i: number): Buffer =>
      encodeDecision({
        id: `d-${i}`,
        at: Date.now(),
        from: '',
        to: 'spiffe://e2e.test/ns/web',
        action: 'tcp 1',
        decision: 'deny',
        reason: 'NO_MATCHING_ALLOW',
        rule: '',
        policyRevision: 0,
        latencyNs: 1,
      });
    const report = (decisions: Buffer[], droppedHere: number): Buffer => {
      const w = new Writer();
      for (const d of decisions) w.message(1, d);
      if (droppedHere) w.enumValue(2, droppedHere);
      return w.finish();
    };
    const g = new GrpcClient(`unix://${agent.socket}`);
    const send = (msg: Buffer) => g.unary('/writ.authz.v1.DecisionLog/Report', msg, { 'workload.spiffe.io': 'true' });
    const start = await dropped();
    // A reporter (an SDK in a workload) says it dropped 7.
    await send(report([decision(0)], 7));
    await waitFor("the reporter's drops on the server", async () => ((await dropped()) === start + 7 ? true : undefined));
    // With the server away the agent buffers 10,000 decisions; 500 more are dropped and counted.
    await srv.stop();
    try {
      for (let i = 0; i < 3; i++)
        await send(
          report(
            Array.from({ length: 3500 }, (_, j) => decision(1 + i * 3500 + j)),
            0,
          ),
        );
    } finally {
      srv = await srv.startAgain();
    }
    const after = await waitFor('the buffer-full drops on the restarted server', async () => ((await dropped()) >= 500 ? dropped() : undefined), 30_000);
    assert.equal(after, 500, 'a restarted server counts from zero: exactly the 500 the full buffer dropped');
    g.close();
  });
});

describe('long polling', () => {
  it('an agent of a server that has no entries at all waits on its poll instead of asking again and again', async (t) => {
    const empty = await startServerProcess();
    const tok = JSON.parse((await writ(empty, ['token', 'create', '--node-name', 'idle', '-o', 'json'])).stdout).token as string;
    const a = await startAgentProcess(empty, { joinToken: tok });
    try {
      // Sync polls answered so far, and how many of them took over a second (the histogram's le="1" bucket counts the rest).
      const syncPolls = async (): Promise<{ answered: number; held: number }> => {
        const metrics = (await run('curl', ['-sS', '--cacert', join(empty.dataDir, 'bundle.pem'), `${empty.url}/metrics`])).stdout;
        const sync = 'method="GET",route="/v1/agent/sync"';
        const count = Number(new RegExp(`writ_http_request_duration_seconds_count\\{${sync}\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
        const quick = Number(new RegExp(`writ_http_request_duration_seconds_bucket\\{le="1",${sync}\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
        return { answered: count, held: count - quick };
      };
      // The agent's poll waits (20 s) for a change that never comes: wait for one such poll to be answered, not a window.
      const polls = await waitFor('a sync poll the server held', async () => ((await syncPolls()).held >= 1 ? syncPolls() : undefined), 60_000);
      t.diagnostic(`${polls.answered} sync polls answered by the time the first held one was`);
      // An agent asking again and again would have been answered many times over while one poll was held.
      assert.ok(polls.answered <= 3, `${polls.answered} sync polls, ${polls.held} of them held`);
    } finally {
      await a.stop();
      await empty.stop();
      cleanup(a.dataDir);
      cleanup(empty.dataDir);
    }
  });
});

describe('agent management', () => {
  it('lists agents; an evicted agent is refused until it attests again; a banned one cannot attest', async () => {
    const list = JSON.parse((await writ(srv, ['agent', 'list', '-o', 'json'])).stdout);
    assert.ok(list.some((a: { spiffeId: string }) => a.spiffeId === 'spiffe://e2e.test/writ/agent/node-a'));
    const show = JSON.parse((await writ(srv, ['agent', 'show', 'spiffe://e2e.test/writ/agent/node-a', '-o', 'json'])).stdout);
    assert.equal(show.attestationType, 'join_token');
    // A second node, evicted then banned.
    const tok = JSON.parse((await writ(srv, ['token', 'create', '--node-name', 'node-b', '-o', 'json'])).stdout).token as string;
    const b = await startAgentProcess(srv, { joinToken: tok });
    await writ(srv, [
      'entry',
      'create',
      '--parent-id',
      'spiffe://e2e.test/writ/agent/node-b',
      '--spiffe-id',
      'spiffe://e2e.test/ns/on-b',
      '--selector',
      'unix:uid:0',
    ]);
    const servedByB = async (): Promise<true | undefined> => {
      const r = await writ(undefined, ['svid', 'fetch', '--socket', b.socket, '-o', 'json']);
      return r.code === 0 && r.stdout.includes('spiffe://e2e.test/ns/on-b') ? true : undefined;
    };
    await waitFor('node-b serving its workload', servedByB);
    let b2: AgentProcess | undefined;
    try {
      assert.equal((await writ(srv, ['agent', 'evict', 'spiffe://e2e.test/writ/agent/node-b'])).code, 0);
      await waitFor('the evicted agent to notice', async () => (b.logs.some((l) => /not attested|evicted/.test(l)) ? true : undefined), 30_000);
      assert.equal((await writ(srv, ['agent', 'ban', 'spiffe://e2e.test/writ/agent/node-b'])).code, 1, 'an evicted agent has no record to ban');
      // Restarted with a new join token on the same data dir: it attests again with it and serves fresh SVIDs.
      await b.stop();
      const fresh = JSON.parse((await writ(srv, ['token', 'create', '--node-name', 'node-b', '-o', 'json'])).stdout).token as string;
      b2 = await startAgentProcess(srv, { joinToken: fresh, dataDir: b.dataDir, socket: b.socket });
      assert.ok(
        b2.logs.some((l) => l.includes('"attested to the server"')),
        b2.logs.join('\n'),
      );
      const shown = JSON.parse((await writ(srv, ['agent', 'show', 'spiffe://e2e.test/writ/agent/node-b', '-o', 'json'])).stdout);
      assert.equal(shown.attestationType, 'join_token', 'the server knows node-b again');
      await waitFor('node-b serving again', servedByB);
      assert.ok(!b2.logs.some((l) => l.includes('sync failed')), 'its syncs are accepted');
      // A banned node cannot attest again, even with a fresh join token.
      const c1 = JSON.parse((await writ(srv, ['token', 'create', '--node-name', 'node-c', '-o', 'json'])).stdout).token as string;
      const c = await startAgentProcess(srv, { joinToken: c1 });
      await c.stop();
      cleanup(c.dataDir);
      assert.equal((await writ(srv, ['agent', 'ban', 'spiffe://e2e.test/writ/agent/node-c'])).code, 0);
      const bannedC = JSON.parse((await writ(srv, ['agent', 'show', 'spiffe://e2e.test/writ/agent/node-c', '-o', 'json'])).stdout);
      assert.equal(bannedC.banned, true);
      const c2 = JSON.parse((await writ(srv, ['token', 'create', '--node-name', 'node-c', '-o', 'json'])).stdout).token as string;
      const refused = await run(
        process.execPath,
        [
          join(ROOT, 'packages/cli/bin/writ.js'),
          'agent',
          'start',
          '--data-dir',
          mkdtempSync(join(tmpdir(), 'writ-banned-')),
          '--join-token',
          c2,
          '--socket',
          join(tmpdir(), `writ-banned-${process.pid}.sock`),
        ],
        {
          env: { WRIT_SERVER: srv.url, WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem'), NODE_TEST_CONTEXT: '' },
        },
      );
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /banned.*ERR_FORBIDDEN/);
    } finally {
      await b.stop();
      await b2?.stop();
      cleanup(b.dataDir);
    }
  });

  it('a TLS server presenting a workload SVID of the same CA for localhost gets no byte of the join token', async () => {
    // A real workload SVID from the real CA, with the DNS name the agent dials.
    await entry(['--spiffe-id', 'spiffe://e2e.test/ns/impostor', '--selector', 'unix:uid:0', '--dns-name', 'localhost']);
    const c = new WorkloadClient(`unix://${agent.socket}`);
    const svid = await waitFor('the impostor SVID', async () => (await c.fetchX509Context()).svids.find((s) => s.spiffeId === 'spiffe://e2e.test/ns/impostor'));
    c.close();
    const { createServer } = await import('node:tls');
    const { certificatesToPem } = await import('@writ/spiffe');
    const received: Buffer[] = [];
    const impostor = createServer({ key: svid.key.export({ format: 'pem', type: 'pkcs8' }) as string, cert: certificatesToPem(svid.chain) }, (s) => {
      s.on('data', (d: Buffer) => received.push(d));
      s.on('error', () => undefined);
    });
    impostor.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', () => r()));
    const tok = JSON.parse((await writ(srv, ['token', 'create', '--node-name', 'node-x', '-o', 'json'])).stdout).token as string;
    const dataDir = mkdtempSync(join(tmpdir(), 'writ-impostor-'));
    try {
      const r = await run(process.execPath, [WRIT, 'agent', 'start', '--data-dir', dataDir, '--socket', join(dataDir, 'api.sock'), '--join-token', tok], {
        env: { WRIT_SERVER: `https://localhost:${(impostor.address() as { port: number }).port}`, WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem') },
      });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /presented spiffe:\/\/e2e\.test\/ns\/impostor, expected spiffe:\/\/e2e\.test\/writ\/server/);
      assert.equal(Buffer.concat(received).length, 0, 'not a byte of the request reached the impostor');
    } finally {
      impostor.close();
      cleanup(dataDir);
    }
  });

  it('pinned to another server ID, the agent refuses the real server, naming both IDs, and its join token stays unspent', async () => {
    const tok = JSON.parse((await writ(srv, ['token', 'create', '--node-name', 'node-pin', '-o', 'json'])).stdout).token as string;
    const dataDir = mkdtempSync(join(tmpdir(), 'writ-pin-'));
    const args = [WRIT, 'agent', 'start', '--data-dir', dataDir, '--socket', join(dataDir, 'api.sock'), '--join-token', tok];
    const env = { WRIT_SERVER: srv.url, WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem') };
    const refused = await run(process.execPath, [...args, '--server-spiffe-id', 'spiffe://e2e.test/ns/not-the-server'], { env });
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /presented spiffe:\/\/e2e\.test\/writ\/server, expected spiffe:\/\/e2e\.test\/ns\/not-the-server/);
    assert.ok(!refused.stderr.includes(tok) && !refused.stdout.includes(tok), 'the token is in no message');
    // Nothing was redeemed: the same token still attests, with the default pin (WRIT_TRUST_DOMAIN names the domain).
    const a = await startAgentProcess(srv, { dataDir, joinToken: tok, extraArgs: [] });
    await a.stop();
    const wrongTd = await run(process.execPath, args, { env: { ...env, WRIT_TRUST_DOMAIN: 'other.test' } });
    cleanup(dataDir);
    assert.equal(wrongTd.code, 1);
    assert.match(wrongTd.stderr, /expected spiffe:\/\/other\.test\/writ\/server/);
  });
});

describe('two workloads under two uids talk mTLS through the SDK', () => {
  it('each gets its own identity; SVIDs rotate during a live connection without an error', async () => {
    const ttl = '4s';
    await entry(['--spiffe-id', 'spiffe://e2e.test/ns/server', '--selector', 'unix:uid:1001', '--x509-svid-ttl', ttl]);
    await entry(['--spiffe-id', 'spiffe://e2e.test/ns/client', '--selector', 'unix:uid:1002', '--x509-svid-ttl', ttl]);
    const fixture = join(ROOT, 'test/e2e/fixtures/workload.ts');
    const env = { SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socket}`, DURATION_MS: '9000' };
    const { spawn } = await import('node:child_process');
    const server = spawn('setpriv', ['--reuid=1001', '--regid=1001', '--clear-groups', process.execPath, fixture, 'server', 'spiffe://e2e.test/ns/client'], {
      env: { ...process.env, ...env, NODE_TEST_CONTEXT: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let serr = '';
    server.stderr.on('data', (d: Buffer) => (serr += d.toString()));
    try {
      const first = await new Promise<{ port: number; id: string }>((resolve, reject) => {
        server.stdout.once('data', (d: Buffer) => resolve(JSON.parse(d.toString().split('\n')[0]!)));
        server.once('exit', (c) => reject(new Error(`workload server exited ${c}: ${serr}`)));
      });
      assert.equal(first.id, 'spiffe://e2e.test/ns/server');
      const client = await run(
        'setpriv',
        ['--reuid=1002', '--regid=1002', '--clear-groups', process.execPath, fixture, 'client', String(first.port), 'spiffe://e2e.test/ns/server'],
        { env: { ...env, NODE_TEST_CONTEXT: '' }, timeoutMs: 40_000 },
      );
      assert.equal(client.code, 0, client.stderr);
      const report = JSON.parse(client.stdout.trim().split('\n').at(-1)!);
      assert.deepEqual(report.errors, [], 'no error on the live connection or on new ones');
      assert.ok(report.pongs >= 50, `the live connection kept working (${report.pongs} echoes)`);
      assert.ok(report.serverSerials.length >= 2, `the server presented rotated SVIDs to new connections: ${report.serverSerials}`);
      assert.ok(report.clientSerials.length >= 2, `the client rotated too: ${report.clientSerials}`);
    } finally {
      server.kill();
    }
  });
});

describe('the SDK as published', () => {
  it('packs to JavaScript + types that a plain project installs offline, type-checks against, and runs from node_modules; the internal entry is not reachable there', async () => {
    // Every workspace package's exports name files that exist (a dangling one breaks whoever imports it).
    for (const name of readdirSync(join(ROOT, 'packages'))) {
      const pkg = JSON.parse(readFileSync(join(ROOT, 'packages', name, 'package.json'), 'utf8')) as { exports?: Record<string, string> };
      for (const [sub, file] of Object.entries(pkg.exports ?? {}))
        assert.ok(existsSync(join(ROOT, 'packages', name, file)), `packages/${name}/package.json exports ${sub} as ${file}, which does not exist`);
    }
    const packed = await run(process.execPath, [join(ROOT, 'scripts/pack.mjs')], { timeoutMs: 120_000 });
    assert.equal(packed.code, 0, packed.stderr);
    const tarballs = packed.stdout
      .trim()
      .split('\n')
      .filter((l) => l.endsWith('.tgz'));
    assert.equal(tarballs.length, 3);
    // What ships: no internal entry's declarations (the gRPC server layer and codecs the agent uses).
    for (const tgz of tarballs) {
      const files = (await run('tar', ['tzf', tgz])).stdout.split('\n').filter(Boolean);
      assert.ok(files.includes('package/types/index.d.ts'), `${tgz}: ${files.join(' ')}`);
      assert.deepEqual(
        files.filter((f) => /internal/.test(f)),
        [],
        `${tgz} ships internal files`,
      );
    }
    const proj = mkdtempSync(join(tmpdir(), 'writ-consumer-'));
    writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    const inst = await run('npm', ['install', '--offline', '--no-audit', '--no-fund', ...tarballs], {
      cwd: proj,
      env: { npm_config_cache: join(proj, '.npm') },
      timeoutMs: 120_000,
    });
    assert.equal(inst.code, 0, inst.stderr);
    writeFileSync(
      join(proj, 'app.mjs'),
      `import { GRPC_STATUS, WorkloadClient } from '@writ/sdk';\nconst c = new WorkloadClient(process.argv[2]);\nconst ctx = await c.fetchX509Context();\nconsole.log(ctx.svids.map((s) => s.spiffeId).join(' '));\nc.close();\n`,
    );
    const r = await run(process.execPath, [join(proj, 'app.mjs'), `unix://${agent.socket}`], { env: { NODE_TEST_CONTEXT: '' } });
    assert.ok(r.stdout.trim().split(' ').includes('spiffe://e2e.test/ns/web'), r.stdout + r.stderr);
    // The internal entry exists in the repository (the agent imports it) but not for a consumer.
    writeFileSync(join(proj, 'internal.mjs'), `try { await import('@writ/sdk/internal'); console.log('imported'); } catch (err) { console.log(err.code); }\n`);
    const internal = await run(process.execPath, [join(proj, 'internal.mjs')], { env: { NODE_TEST_CONTEXT: '' } });
    assert.equal(internal.stdout.trim(), 'ERR_PACKAGE_PATH_NOT_EXPORTED', internal.stderr);
    writeFileSync(
      join(proj, 'app.ts'),
      `import { X509Source, authorizeMemberOf, type X509Context } from '@writ/sdk';\nconst s: Promise<X509Source> = X509Source.create({ timeoutMs: 1 });\nconst a = authorizeMemberOf('example.org');\nexport const used: [typeof s, typeof a, X509Context | undefined] = [s, a, undefined];\n`,
    );
    writeFileSync(
      join(proj, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          noEmit: true,
          skipLibCheck: false,
          types: ['node'],
          typeRoots: [join(ROOT, 'node_modules/@types')],
        },
        files: ['app.ts'],
      }),
    );
    const tc = await run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(proj, 'tsconfig.json')]);
    assert.equal(tc.code, 0, tc.stdout + tc.stderr);
    cleanup(proj);
  });
});
