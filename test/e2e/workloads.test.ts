/**
 * What runs where, now (issue 13), end to end: a real server process (with an `owners` config), an
 * agent over HTTPS with the k8s workload attestor against a fake kubelet speaking the real PodList
 * format, and three workloads that are real processes (`writ svid watch`, each placed in its pod by
 * a cgroup file the attestor reads). Each shows up in `writ workload list` with the image digest
 * from its pod status `imageID` and its owner (a label, the namespace map, an entry owner), and
 * leaves the running set once its process exits. Then `writ agent start` itself as a process
 * (`--workload-report-interval`) with a plain process as the workload.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startFakeKubelet, startK8sNodeAgent, startPodWorkload, type FakeKubelet, type K8sNodeAgent } from './fake-node.ts';
import { type ServerProcess, WRIT, cleanup, startAgentProcess, startServerProcess, waitFor, writ } from './helpers.ts';

const NODE = 'wl-node';
const WEB_DIGEST = `sha256:${'a1'.repeat(32)}`;
const LEDGER_DIGEST = `sha256:${'b2'.repeat(32)}`;

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
    annotations: { 'kubectl.kubernetes.io/last-applied-configuration': 'x'.repeat(10_000) },
    image: 'reg.example/payments/ledger:7',
    imageID: `reg.example/payments/ledger@${LEDGER_DIGEST}`,
  },
  {
    name: 'api-1',
    namespace: 'shop',
    uid: '33333333-3333-4333-8333-333333333333',
    cid: '3c'.repeat(32),
    labels: { app: 'api', team: 'payments' },
    annotations: {},
    image: 'reg.example/shop/api:2',
    imageID: `reg.example/shop/api@${WEB_DIGEST}`,
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

interface WorkloadRow {
  key: string;
  spiffeIds: string[];
  owner: string | null;
  node: string | null;
  namespace: string | null;
  podName: string | null;
  podOwner: string | null;
  imageDigest: string | null;
  imageName: string | null;
  annotations: Record<string, string>;
  running: boolean;
  endedAt: string | null;
}

describe('what runs where, now: a real server, an agent with the k8s attestor, workloads as processes, the CLI', () => {
  const dir = mkdtempSync(join(tmpdir(), 'writ-e2e-workloads-'));
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
  const list = async (...args: string[]): Promise<WorkloadRow[]> => {
    const r = await writ(srv, ['workload', 'list', '-o', 'json', ...args]);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { workloads: WorkloadRow[] }).workloads;
  };

  before(async () => {
    kubelet = await startFakeKubelet(dir, () => pods.map(podJson));
    writeFileSync(
      join(dir, 'server.yaml'),
      'owners:\n  labels: [team, app.kubernetes.io/part-of]\n  annotations: [example.com/owner]\n  namespaces: { payments: team-payments }\n',
    );
    srv = await startServerProcess({ args: ['--config', join(dir, 'server.yaml')] });
    node = await startK8sNodeAgent(srv, {
      dir,
      node: NODE,
      socket,
      proc,
      kubelet,
      entries: [
        { spiffeId: 'spiffe://e2e.test/shop/web', selectors: ['k8s:pod-name:web-1', 'k8s:ns:shop'] },
        { spiffeId: 'spiffe://e2e.test/payments/ledger', selectors: ['k8s:pod-name:ledger-1', 'k8s:ns:payments'] },
        { spiffeId: 'spiffe://e2e.test/shop/api', selectors: ['k8s:pod-name:api-1', 'k8s:ns:shop'], extra: ['--owner', 'api-team'] },
      ],
    });
  });
  after(async () => {
    for (const c of children.values()) c.kill('SIGKILL');
    await node?.close();
    await srv?.stop();
    kubelet.server.close();
    if (srv) cleanup(srv.dataDir);
    cleanup(dir);
  });

  it('writ entry create --owner stores the owner; writ entry show and the table show it', async () => {
    const r = await writ(srv, ['entry', 'list']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /OWNER/);
    assert.match(r.stdout, /spiffe:\/\/e2e\.test\/shop\/api .*api-team/);
    const json = JSON.parse((await writ(srv, ['entry', 'list', '-o', 'json'])).stdout) as Array<{ id: string; spiffeId: string; owner: string | null }>;
    const apiEntry = json.find((e) => e.spiffeId === 'spiffe://e2e.test/shop/api')!;
    assert.equal(apiEntry.owner, 'api-team');
    assert.equal(json.find((e) => e.spiffeId === 'spiffe://e2e.test/shop/web')!.owner, null);
    const show = await writ(srv, ['entry', 'show', apiEntry.id]);
    assert.match(show.stdout, /owner: api-team/);
    const bad = await writ(srv, ['entry', 'update', apiEntry.id, '--owner', 'a\u0007b']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /ERR_FIELD_INVALID|owner/);
  });

  it('workloads fetching their SVIDs appear with the imageID digest, pod, node and owner (label, namespace map, entry owner)', async () => {
    for (const p of pods) await startWorkload(p);
    const rows = await waitFor('three workloads running', async () => {
      const l = await list();
      return l.length === 3 ? l : undefined;
    });
    const by = new Map(rows.map((w) => [w.podName, w]));
    const web = by.get('web-1')!;
    assert.deepEqual(
      [web.key, web.spiffeIds, web.node, web.namespace, web.podOwner, web.imageDigest, web.imageName, web.owner, web.running],
      [pods[0]!.cid, ['spiffe://e2e.test/shop/web'], NODE, 'shop', 'ReplicaSet/web-5d8f', WEB_DIGEST, 'reg.example/shop/web', 'payments', true],
    );
    const ledger = by.get('ledger-1')!;
    assert.deepEqual(
      [ledger.imageDigest, ledger.imageName, ledger.owner],
      [LEDGER_DIGEST, 'reg.example/payments/ledger', 'team-payments'],
      'the namespace map',
    );
    assert.deepEqual(ledger.annotations, {}, 'an annotation over 4 KiB is not reported');
    assert.equal(by.get('api-1')!.owner, 'api-team', "the entry's owner wins over the team label");

    // The table groups by owner, shows where each runs and the digest.
    const table = await writ(srv, ['workload', 'list']);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split('\n');
    assert.match(lines[0]!, /^OWNER\s+SPIFFE ID\s+NODE\s+WHERE\s+IMAGE\s+DIGEST\s+SINCE/);
    assert.deepEqual(
      lines.slice(1).map((l) => l.split(/\s+/)[0]),
      ['api-team', 'payments', 'team-payments'],
    );
    assert.match(table.stdout, /shop\/web-1:main\s+reg\.example\/shop\/web\s+sha256:a1a1a1a1a1a1/);

    // Filters: by image (two pods run the same digest) and by SPIFFE ID.
    assert.deepEqual((await list('--image', WEB_DIGEST)).map((w) => w.podName).sort(), ['api-1', 'web-1']);
    assert.deepEqual(
      (await list('--spiffe-id', 'spiffe://e2e.test/payments/ledger')).map((w) => w.podName),
      ['ledger-1'],
    );
    const badImage = await writ(srv, ['workload', 'list', '--image', 'sha256:nope']);
    assert.notEqual(badImage.code, 0);

    // The runtime's digests entered the inventory with the image names.
    const img = await writ(srv, ['image', 'show', LEDGER_DIGEST, '-o', 'json']);
    assert.equal(img.code, 0, img.stderr);
    assert.deepEqual((JSON.parse(img.stdout) as { names: string[] }).names, ['reg.example/payments/ledger']);
  });

  it('a workload whose process exits leaves the running set; --all still shows it, ended', async () => {
    const web = children.get('web-1')!;
    const exited = new Promise((r) => web.once('exit', r));
    web.kill('SIGKILL');
    await exited;
    // Its stream closed with its process: the agent reports the change (debounced about a second).
    await waitFor('web-1 gone from the running set', async () => ((await list()).some((w) => w.podName === 'web-1') ? undefined : true), 60_000);
    assert.deepEqual((await list()).map((w) => w.podName).sort(), ['api-1', 'ledger-1']);
    const all = await list('--all');
    const gone = all.find((w) => w.podName === 'web-1')!;
    assert.equal(gone.running, false);
    assert.ok(gone.endedAt, 'with the time it ended');
    const table = await writ(srv, ['workload', 'list', '--all']);
    assert.match(table.stdout, /STATE/);
    assert.match(table.stdout, /ended 20\d\d-/);
  });

  it('the agent keeps reporting on its heartbeat: a running workload stays with first seen kept, last seen moving', async () => {
    const first = (await list()).find((w) => w.podName === 'ledger-1') as WorkloadRow & { firstSeen: string; lastSeen: string };
    const later = await waitFor('a heartbeat', async () => {
      const w = (await list()).find((x) => x.podName === 'ledger-1') as (WorkloadRow & { firstSeen: string; lastSeen: string }) | undefined;
      return w && w.lastSeen > first.lastSeen ? w : undefined;
    });
    assert.equal(later.firstSeen, first.firstSeen);
  });
});

describe('what runs where, now: `writ agent start` as a process, a plain process as the workload', () => {
  let srv: ServerProcess;
  let agentProc: Awaited<ReturnType<typeof startAgentProcess>> | undefined;
  let workload: ChildProcess | undefined;
  before(async () => {
    srv = await startServerProcess();
    const e = await writ(srv, [
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://e2e.test/host/cron',
      '--parent-id',
      'spiffe://e2e.test/writ/agent/plain-node',
      '--selector',
      `unix:uid:${process.getuid!()}`,
      '--owner',
      'infra',
    ]);
    assert.equal(e.code, 0, e.stderr);
  });
  after(async () => {
    workload?.kill('SIGKILL');
    await agentProc?.stop();
    await srv?.stop();
    if (agentProc) cleanup(agentProc.dataDir);
    if (srv) cleanup(srv.dataDir);
  });

  it('refuses a report interval out of range, naming the flag', async () => {
    const t = await writ(srv, ['token', 'create', '--node-name', 'bad-node', '-o', 'json']);
    const dataDir = mkdtempSync(join(tmpdir(), 'writ-agent-bad-'));
    try {
      const r = await writ(srv, [
        'agent',
        'start',
        '--data-dir',
        dataDir,
        '--socket',
        join(dataDir, 's.sock'),
        '--join-token',
        (JSON.parse(t.stdout) as { token: string }).token,
        '--workload-report-interval',
        '90s',
      ]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /--workload-report-interval/);
    } finally {
      cleanup(dataDir);
    }
  });

  it('a process outside containers is keyed pid:PID:START with its entry owner, and leaves when it exits', async () => {
    const t = await writ(srv, ['token', 'create', '--node-name', 'plain-node', '-o', 'json']);
    agentProc = await startAgentProcess(srv, {
      joinToken: (JSON.parse(t.stdout) as { token: string }).token,
      extraArgs: ['--workload-report-interval', '1s'],
    });
    const child = spawn(process.execPath, [WRIT, 'svid', 'watch', '--socket', agentProc.socket, '-o', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    workload = child;
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`the workload exited with ${code}`)));
    });
    const list = async (): Promise<WorkloadRow[]> => {
      const r = await writ(srv, ['workload', 'list', '-o', 'json']);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { workloads: WorkloadRow[] }).workloads;
    };
    const [row] = await waitFor('the watch reported', async () => {
      const l = await list();
      return l.length > 0 ? l : undefined;
    });
    assert.match(row!.key, new RegExp(`^pid:${child.pid}:\\d+$`));
    assert.deepEqual(
      [row!.spiffeIds, row!.owner, row!.node, row!.imageDigest, row!.podName],
      [['spiffe://e2e.test/host/cron'], 'infra', 'plain-node', null, null],
    );
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    await waitFor('gone once its process exited', async () => ((await list()).length === 0 ? true : undefined), 60_000);
  });
});
