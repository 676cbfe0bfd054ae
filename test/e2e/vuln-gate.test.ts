/**
 * Containment and vulnerability events end to end: a real server process (owners and vulnEvents
 * with a webhook in its config file), an agent with the k8s attestor against a fake kubelet speaking
 * the real PodList format, workloads that are real processes (`writ svid watch`), Trivy reports
 * ingested with `writ vuln ingest`, and a local HTTP receiver checking the webhook's HMAC-SHA256
 * signature. A report putting a critical CVE in a running image raises one event per identity
 * (cause report), a workload starting on that image another (cause workload), a medium one none;
 * `writ vuln quarantine` quarantines the identities running it, in one write, the CVE in the reason.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startFakeKubelet, startK8sNodeAgent, startPodWorkload, type FakeKubelet, type K8sNodeAgent } from './fake-node.ts';
import { type ServerProcess, cleanup, startServerProcess, waitFor, writ } from './helpers.ts';
import { trivyReport } from './vuln-fixtures.ts';

const NODE = 'gate-node';
const WEB_DIGEST = `sha256:${'a1'.repeat(32)}`;
const LEDGER_DIGEST = `sha256:${'b2'.repeat(32)}`;
const CVE = 'CVE-2026-31337';
const SECRET = 'webhook-secret-0123456789abcdef';
const WEB = 'spiffe://e2e.test/shop/web';
const API = 'spiffe://e2e.test/shop/api';
const LEDGER = 'spiffe://e2e.test/payments/ledger';

interface PodSpec {
  name: string;
  namespace: string;
  uid: string;
  cid: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  image: string;
  imageID: string;
}
const pods: PodSpec[] = [
  {
    name: 'web-1',
    namespace: 'shop',
    uid: '11111111-1111-4111-8111-111111111111',
    cid: '1a'.repeat(32),
    labels: { app: 'web', team: 'payments' },
    annotations: {},
    image: 'reg.example/shop/web:1.4',
    imageID: `docker-pullable://reg.example/shop/web@${WEB_DIGEST}`,
  },
  {
    name: 'ledger-1',
    namespace: 'payments',
    uid: '22222222-2222-4222-8222-222222222222',
    cid: '2b'.repeat(32),
    labels: { app: 'ledger' },
    annotations: {},
    image: 'reg.example/payments/ledger:7',
    imageID: `reg.example/payments/ledger@${LEDGER_DIGEST}`,
  },
  {
    name: 'api-1',
    namespace: 'shop',
    uid: '33333333-3333-4333-8333-333333333333',
    cid: '3c'.repeat(32),
    labels: { app: 'api', team: 'storefront' },
    annotations: {},
    image: 'reg.example/shop/web:1.4',
    imageID: `reg.example/shop/web@${WEB_DIGEST}`,
  },
];
const podJson = (p: PodSpec) => ({
  metadata: {
    name: p.name,
    namespace: p.namespace,
    uid: p.uid,
    labels: p.labels,
    annotations: p.annotations,
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${p.name.split('-')[0]}-5d8f`, uid: `rs-${p.uid}`, controller: true }],
  },
  spec: { serviceAccountName: 'default', nodeName: NODE, containers: [{ name: 'main', image: p.image }] },
  status: { phase: 'Running', containerStatuses: [{ name: 'main', image: p.image, imageID: p.imageID, containerID: `containerd://${p.cid}`, ready: true }] },
});

interface EventRow {
  id: string;
  at: string;
  cause: string;
  vulnerability: string;
  severity: string;
  imageDigest: string;
  spiffeId: string;
  owner: string | null;
  node: string | null;
  namespace: string | null;
  pod: string | null;
}

/** What the webhook receiver got: the body, its signature header, and whether that signature checks out. */
interface Delivery {
  body: string;
  signature: string;
  valid: boolean;
  status: number;
}

describe('vulnerability events and containment: a real server, an agent, workloads as processes, reports, a webhook receiver', () => {
  const deliveries: Delivery[] = [];
  // The receiver fails the first delivery (503): the server must retry it.
  let failNext = true;
  const receiver = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const signature = String(req.headers['x-writ-signature'] ?? '');
      const valid = signature === `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;
      const status = failNext ? 503 : 204;
      failNext = false;
      deliveries.push({ body, signature, valid, status });
      res.statusCode = status;
      res.end();
    });
  });
  const dir = mkdtempSync(join(tmpdir(), 'writ-e2e-vuln-gate-'));
  const proc = join(dir, 'proc');
  const socket = join(dir, 'api.sock');
  let kubelet: FakeKubelet;
  let srv: ServerProcess;
  let node: K8sNodeAgent | undefined;
  const children = new Map<string, ChildProcess>();

  /** A workload: `writ svid watch` on the agent's socket, in pod `p` (its cgroup file written before it can connect). */
  const startWorkload = async (p: PodSpec): Promise<void> => {
    children.set(p.name, await startPodWorkload({ socket, proc, uid: p.uid, cid: p.cid, name: p.name }));
  };

  before(async () => {
    kubelet = await startFakeKubelet(dir, () => pods.map(podJson));
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
    writeFileSync(join(dir, 'hook.secret'), `${SECRET}\n`);
    writeFileSync(
      join(dir, 'server.yaml'),
      [
        'owners:',
        '  labels: [team]',
        '  namespaces: { payments: team-payments }',
        'vulnEvents:',
        '  minSeverity: high',
        '  interval: 2s',
        '  webhook:',
        `    url: http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/writ`,
        `    secretFile: ${join(dir, 'hook.secret')}`,
        '',
      ].join('\n'),
    );
    // Debug: the server logs each evaluation of the running set, which a negative check waits for.
    srv = await startServerProcess({ args: ['--config', join(dir, 'server.yaml'), '--log-level', 'debug'] });
    node = await startK8sNodeAgent(srv, {
      dir,
      node: NODE,
      socket,
      proc,
      kubelet,
      entries: [
        { spiffeId: 'spiffe://e2e.test/shop/web', selectors: ['k8s:pod-name:web-1', 'k8s:ns:shop'] },
        { spiffeId: 'spiffe://e2e.test/payments/ledger', selectors: ['k8s:pod-name:ledger-1', 'k8s:ns:payments'] },
        { spiffeId: 'spiffe://e2e.test/shop/api', selectors: ['k8s:pod-name:api-1', 'k8s:ns:shop'] },
      ],
    });
  });
  after(async () => {
    for (const c of children.values()) c.kill('SIGKILL');
    await node?.close();
    await srv?.stop();
    kubelet.server.close();
    receiver.close();
    if (srv) cleanup(srv.dataDir);
    cleanup(dir);
  });

  const events = async (): Promise<EventRow[]> => {
    const r = await writ(srv, ['vuln', 'events', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as EventRow[];
  };
  const running = async (): Promise<Array<{ podName: string }>> => {
    const r = await writ(srv, ['workload', 'list', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { workloads: Array<{ podName: string }> }).workloads;
  };
  const ingest = async (name: string, digest: string, image: string, severity: 'CRITICAL' | 'MEDIUM'): Promise<void> => {
    writeFileSync(
      join(dir, `${name}.json`),
      trivyReport({
        digest,
        name: image,
        createdAt: new Date(),
        vulns: [{ id: CVE, pkg: 'libcrypto3', version: '3.3.2-r0', fixed: '3.3.2-r4', severity }],
      }),
    );
    const r = await writ(srv, ['vuln', 'ingest', '-f', join(dir, `${name}.json`)]);
    assert.equal(r.code, 0, r.stderr);
  };

  it('a report putting a critical CVE in a running image raises one event per identity running it (cause report), signed to the webhook and retried', async () => {
    await startWorkload(pods[0]!);
    await startWorkload(pods[1]!);
    await waitFor('web-1 and ledger-1 running', async () => ((await running()).length === 2 ? true : undefined));
    assert.deepEqual(await events(), [], 'nothing is affected yet');

    await ingest('web', WEB_DIGEST, 'reg.example/shop/web', 'CRITICAL');
    const [e] = await waitFor('an event for web', async () => {
      const l = await events();
      return l.length ? l : undefined;
    });
    assert.deepEqual(
      [e!.cause, e!.vulnerability, e!.severity, e!.imageDigest, e!.spiffeId, e!.owner, e!.node, e!.namespace, e!.pod],
      ['report', CVE, 'critical', WEB_DIGEST, WEB, 'payments', NODE, 'shop', 'web-1'],
    );

    // The webhook: a 503 first, then the same body again, both signed with the shared secret.
    const got = await waitFor('the webhook delivered', async () => (deliveries.some((d) => d.status === 204) ? deliveries : undefined));
    assert.deepEqual(
      got.map((d) => [d.status, d.valid]),
      [
        [503, true],
        [204, true],
      ],
    );
    assert.equal(got[0]!.body, got[1]!.body);
    assert.deepEqual(JSON.parse(got[1]!.body), e);
  });

  it('the same vulnerability at medium (below minSeverity high) raises nothing; a workload starting on the affected image raises one (cause workload); none twice', async () => {
    await ingest('ledger', LEDGER_DIGEST, 'reg.example/payments/ledger', 'MEDIUM');
    await startWorkload(pods[2]!);
    const list = await waitFor('an event for api', async () => {
      const l = await events();
      return l.some((x) => x.spiffeId === API) ? l : undefined;
    });
    const api = list.find((x) => x.spiffeId === API)!;
    assert.deepEqual([api.cause, api.imageDigest, api.owner, api.pod], ['workload', WEB_DIGEST, 'storefront', 'api-1']);
    // Two evaluations later, still one event per identity, none for ledger. Each is made by a new scan of
    // ledger (still medium): the timer (every 2 s) evaluates only after a change, and heartbeats change nothing.
    const evaluations = (): number => srv.logs.filter((l) => l.includes('"vulnerability events evaluated"')).length;
    for (let i = 0; i < 2; i++) {
      const seen = evaluations();
      await ingest('ledger', LEDGER_DIGEST, 'reg.example/payments/ledger', 'MEDIUM');
      await waitFor('an evaluation after the new scan', async () => (evaluations() > seen ? true : undefined));
    }
    assert.deepEqual((await events()).map((x) => x.spiffeId).sort(), [API, WEB]);
    const table = await writ(srv, ['vuln', 'events']);
    assert.match(table.stdout, /^TIME\s+SEVERITY\s+VULNERABILITY\s+SPIFFE ID\s+IMAGE\s+NODE\s+POD\s+OWNER\s+CAUSE/);
    assert.match(table.stdout, new RegExp(`critical\\s+${CVE}\\s+${API}\\s+sha256:a1a1a1a1a1a1\\s+${NODE}\\s+shop/api-1\\s+storefront\\s+workload`));
  });

  it('writ vuln quarantine: a dry run shows who; the real run quarantines the identities running it, in one write, the CVE in the reason', async () => {
    const dry = await writ(srv, ['vuln', 'quarantine', CVE, '--reason', 'actively exploited', '--dry-run', '-o', 'json']);
    assert.equal(dry.code, 0, dry.stderr);
    const d = JSON.parse(dry.stdout) as { quarantined: Array<{ spiffeId: string }>; images: Array<{ digest: string; severity: string }> };
    assert.deepEqual(d.quarantined.map((q) => q.spiffeId).sort(), [LEDGER, API, WEB].sort(), 'every severity by default');
    assert.match(dry.stderr, /would quarantine 3 identities running CVE-2026-31337 \(2 affected images\)/);
    assert.deepEqual((JSON.parse((await writ(srv, ['quarantine', 'list', '-o', 'json'])).stdout) as unknown[]).length, 0, 'a dry run writes nothing');

    const r = await writ(srv, ['vuln', 'quarantine', CVE.toLowerCase(), '--reason', 'actively exploited', '--ttl', '1h', '--min-severity', 'high']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^quarantined 2 identities running CVE-2026-31337 \(1 affected image\) until 20\d\d-/m);
    assert.match(r.stdout, /^SPIFFE ID\s+STATE\s+IMAGE\s+NODE\s+POD\s+OWNER/);
    assert.match(r.stdout, new RegExp(`${WEB}\\s+quarantined\\s+sha256:a1a1a1a1a1a1\\s+${NODE}\\s+shop/web-1\\s+payments`));
    const q = JSON.parse((await writ(srv, ['quarantine', 'list', '-o', 'json'])).stdout) as Array<{
      spiffeId: string;
      reason: string;
      expiresAt: string | null;
    }>;
    assert.deepEqual(q.map((x) => [x.spiffeId, x.reason, x.expiresAt !== null]).sort(), [
      [API, `[${CVE}] actively exploited`, true],
      [WEB, `[${CVE}] actively exploited`, true],
    ]);

    // Again: nobody new, and the entries keep their first reason. (Quarantined workloads may leave the
    // running set meanwhile: their agent stops serving them SVIDs.)
    const again = await writ(srv, ['vuln', 'quarantine', CVE, '--reason', 'second try', '--min-severity', 'high', '-o', 'json']);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual((JSON.parse(again.stdout) as { quarantined: unknown[] }).quarantined, []);
    const kept = JSON.parse((await writ(srv, ['quarantine', 'list', '-o', 'json'])).stdout) as Array<{ reason: string }>;
    assert.deepEqual(
      kept.map((x) => x.reason),
      [`[${CVE}] actively exploited`, `[${CVE}] actively exploited`],
    );

    // The agents hear of it through the quarantine they already enforce.
    await waitFor('the agent acknowledged the quarantine', async () => {
      const s = JSON.parse((await writ(srv, ['policy', 'status', '-o', 'json'])).stdout) as {
        quarantineVersion: number;
        agents: Array<{ quarantineVersion: number }>;
      };
      return s.agents.length && s.agents.every((x) => x.quarantineVersion >= s.quarantineVersion) ? true : undefined;
    });
  });

  it('a VulnException that expires makes the suppressed finding count: an event with cause exception-expired', async () => {
    const expires = Date.now() + 8000;
    const f = join(dir, 'exception.yaml');
    writeFileSync(
      f,
      `apiVersion: writ.dev/v1
kind: VulnException
metadata: { name: ledger-zlib }
spec:
  vulnerability: CVE-2026-5555
  scope: { digest: ["${LEDGER_DIGEST}"] }
  reason: "TICKET-77: until the rebuild"
  owner: team-payments
  expires: ${new Date(expires).toISOString()}
`,
    );
    const applied = await writ(srv, ['policy', 'apply', '-f', f]);
    assert.equal(applied.code, 0, applied.stderr);
    writeFileSync(
      join(dir, 'ledger2.json'),
      trivyReport({
        digest: LEDGER_DIGEST,
        name: 'reg.example/payments/ledger',
        createdAt: new Date(),
        vulns: [{ id: 'CVE-2026-5555', pkg: 'zlib', version: '1.3.1-r0', fixed: '1.3.1-r2', severity: 'HIGH' }],
      }),
    );
    const r = await writ(srv, ['vuln', 'ingest', '-f', join(dir, 'ledger2.json')]);
    assert.equal(r.code, 0, r.stderr);
    const e = await waitFor('the event once the exception expired', async () => (await events()).find((x) => x.vulnerability === 'CVE-2026-5555'), 60_000);
    assert.deepEqual([e.cause, e.spiffeId, e.severity, e.owner], ['exception-expired', LEDGER, 'high', 'team-payments']);
    assert.ok(Date.parse(e.at) >= expires, 'not before the exception expired');
  });

  it('writ vuln affected --quarantine contains first, then answers; the rollout shows the quarantines; release lifts them and the rollout sees what still runs the affected digest', async () => {
    const a = await writ(srv, ['vuln', 'affected', 'CVE-2026-5555', '--quarantine', '--reason', 'exploited', '--ttl', '2h']);
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stderr, /^quarantined 1 identity running CVE-2026-5555 \(1 affected image\) until 20\d\d-/m);
    assert.match(a.stdout, /sha256:b2b2b2b2b2b2/, 'then the affected answer');
    assert.equal((await writ(srv, ['vuln', 'affected', 'CVE-2026-5555', '--reason', 'x'])).code, 2, '--reason needs --quarantine');

    type Rollout = {
      verified: boolean;
      owners: Array<{ identities: Array<{ spiffeId: string; status: string; quarantine: { reason: string } | null }> }>;
    };
    const rollout = async (id: string): Promise<{ verified: boolean; ids: Map<string, { status: string; quarantine: { reason: string } | null }> }> => {
      const r = await writ(srv, ['vuln', 'rollout', id, '-o', 'json']);
      // Exit 3 is the "not verified" verdict, an answer too (JSON on stdout); this test reads the quarantines in it.
      assert.ok(r.code === 0 || r.code === 3, r.stderr);
      const j = JSON.parse(r.stdout) as Rollout;
      return { verified: j.verified, ids: new Map(j.owners.flatMap((g) => g.identities.map((i) => [i.spiffeId, i]))) };
    };
    const r1 = await rollout(CVE);
    assert.equal(r1.ids.get(WEB)?.quarantine?.reason, `[${CVE}] actively exploited`);
    assert.equal(r1.ids.get(API)?.quarantine?.reason, `[${CVE}] actively exploited`);
    assert.match((await writ(srv, ['vuln', 'rollout', CVE])).stdout, /spiffe:\/\/e2e\.test\/shop\/web\s+\S+.*, quarantined/);

    // The old web and api pods are gone; lifting CVE-2026-31337's quarantines leaves the other one.
    for (const name of ['web-1', 'api-1']) {
      const c = children.get(name)!;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await exited;
    }
    const dry = await writ(srv, ['vuln', 'release', CVE, '--dry-run', '-o', 'json']);
    assert.deepEqual((JSON.parse(dry.stdout) as { released: string[] }).released.sort(), [API, WEB]);
    const rel = await writ(srv, ['vuln', 'release', CVE]);
    assert.equal(rel.code, 0, rel.stderr);
    assert.match(rel.stderr, /^released 2 quarantines of CVE-2026-31337$/m);
    const left = JSON.parse((await writ(srv, ['quarantine', 'list', '-o', 'json'])).stdout) as Array<{ spiffeId: string; reason: string }>;
    assert.deepEqual(
      left.map((q) => [q.spiffeId, q.reason]),
      [[LEDGER, '[CVE-2026-5555] exploited']],
    );

    // --spiffe-id lifts one: the rollout no longer shows it quarantined.
    const ledger = await writ(srv, ['vuln', 'release', 'CVE-2026-5555', '--spiffe-id', LEDGER]);
    assert.equal(ledger.code, 0, ledger.stderr);
    assert.match(ledger.stderr, /^released 1 quarantine of CVE-2026-5555$/m);
    assert.deepEqual(JSON.parse((await writ(srv, ['quarantine', 'list', '-o', 'json'])).stdout), []);
    assert.equal((await rollout('CVE-2026-5555')).ids.get(LEDGER)?.quarantine, null);
  });

  it('bad input: an ID that is not one, a missing reason, a bad severity', async () => {
    const bad = await writ(srv, ['vuln', 'quarantine', 'CVE-24-1', '--reason', 'x']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /ERR_VULN_ID_INVALID/);
    assert.equal((await writ(srv, ['vuln', 'quarantine', CVE])).code, 2);
    assert.equal((await writ(srv, ['vuln', 'quarantine', CVE, '--reason', 'x', '--min-severity', 'severe'])).code, 2);
    const ttl = await writ(srv, ['vuln', 'quarantine', CVE, '--reason', 'x', '--ttl', 'forever']);
    assert.equal(ttl.code, 1);
    assert.match(ttl.stderr, /ERR_DURATION_INVALID|ERR_FIELD_INVALID/);
  });
});
