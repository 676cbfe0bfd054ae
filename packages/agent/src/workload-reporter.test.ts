/**
 * The workload reporter: what it sends the server, when (start, debounced change, heartbeat), how a
 * workload leaves (stream closed, unary calls 45 s old), and failures; then the hook in the Workload
 * API, through a real Unix socket and a real agent on the fake server.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import pino from 'pino';
import { WritError } from '@writ/spiffe';
import { AGENT_PATHS, type WorkloadReport } from '@writ/protocol';
import { GrpcClient } from '@writ/sdk/internal';
import { Agent } from './agent.ts';
import { FakeServer, fakeEntry } from './testing/fake-server.ts';
import { WorkloadApiServer } from './workload-api.ts';
import { WorkloadReporter, describeWorkload, type WorkloadFacts } from './workload-reporter.ts';

const D = `sha256:${'d'.repeat(64)}`;
const CID = 'c'.repeat(64);
const POD = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';

const k8sSelectors = [
  'unix:uid:0',
  'k8s:ns:shop',
  'k8s:sa:web',
  'k8s:pod-name:web-7d9f-x2',
  `k8s:pod-uid:${POD}`,
  'k8s:pod-label:team:payments',
  'k8s:pod-label:app:web',
  'k8s:pod-owner:ReplicaSet:web-7d9f',
  'k8s:pod-owner-uid:ReplicaSet:0f0f',
  'k8s:container-name:web',
  'k8s:container-image:reg.example/shop/web:1.4',
  `k8s:container-image-id:docker-pullable://reg.example/shop/web@${D}`,
];

describe('describeWorkload', () => {
  it('a pod container: key is the container ID; image digest and name from imageID; owner, labels, annotations', () => {
    const w = describeWorkload({ pid: 7, startTime: '99', selectors: k8sSelectors, containerId: CID, annotations: { 'writ.dev/owner': 'team-x' } });
    assert.deepEqual(w, {
      key: CID,
      containerId: CID,
      containerName: 'web',
      podUid: POD,
      podName: 'web-7d9f-x2',
      namespace: 'shop',
      podOwner: 'ReplicaSet/web-7d9f',
      imageDigest: D,
      imageName: 'reg.example/shop/web',
      labels: { app: 'web', team: 'payments' },
      annotations: { 'writ.dev/owner': 'team-x' },
    });
  });

  it('without a container ID the key is POD/CONTAINER; an image ID that is a config digest gives no digest', () => {
    const sel = k8sSelectors.map((s) => (s.startsWith('k8s:container-image-id:') ? `k8s:container-image-id:docker://${D}` : s));
    const w = describeWorkload({ pid: 7, startTime: '99', selectors: sel });
    assert.equal(w.key, `${POD}/web`);
    assert.equal(w.imageDigest, null);
    assert.equal(w.imageName, 'reg.example/shop/web', 'the name from the spec image');
  });

  it('a docker container: repo digest, name without tag, docker labels', () => {
    const w = describeWorkload({
      pid: 7,
      startTime: '99',
      containerId: CID,
      selectors: ['docker:label:team:infra', 'docker:image_id:reg.example/tools/cron:2', `docker:image_digest:${D}`, 'docker:container_name:cron-1'],
    });
    assert.deepEqual([w.key, w.imageDigest, w.imageName, w.containerName, w.labels], [CID, D, 'reg.example/tools/cron', 'cron-1', { team: 'infra' }]);
  });

  it('a process outside containers is pid:PID:STARTTIME; oversized annotations are left out, not sent', () => {
    const w = describeWorkload({ pid: 4242, startTime: '123456', selectors: ['unix:uid:1000'], annotations: { big: 'x'.repeat(5000), ok: 'y' } });
    assert.equal(w.key, 'pid:4242:123456');
    assert.equal(w.imageDigest, null);
    assert.deepEqual(w.annotations, { ok: 'y' });
  });
});

const facts = (key: string): WorkloadFacts => ({ ...describeWorkload({ pid: 1, startTime: '1', selectors: [] }), key });
const sent = (server: FakeServer): WorkloadReport[][] =>
  server.calledWith('POST', AGENT_PATHS.workloads).map((c) => (c.body as { workloads: WorkloadReport[] }).workloads);
const keys = (list: WorkloadReport[] | undefined): string[] => (list ?? []).map((w) => w.key);

describe('WorkloadReporter', () => {
  let server: FakeServer;
  let reporter: WorkloadReporter;
  let logged: string[];
  beforeEach(async () => {
    mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_000_000 });
    server = new FakeServer();
    // An attested agent identity, so the fake takes its reports.
    server.agents.add('spiffe://fake.test/writ/agent/n1');
    server.answer.set(`POST ${AGENT_PATHS.workloads}`, () => ({ workloads: 0 }));
    logged = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line).msg as string) });
    reporter = new WorkloadReporter({ client: server, clock: Date.now, log });
  });
  afterEach(() => {
    reporter.stop();
    mock.timers.reset();
  });
  /** Lets timers due within `ms` run, and the promises they start settle. */
  const advance = async (ms: number): Promise<void> => {
    mock.timers.tick(ms);
    for (let i = 0; i < 5; i++) await new Promise((r) => process.nextTick(r));
  };

  it('sends the snapshot at start, even empty (the server learns this node runs nothing)', async () => {
    reporter.start();
    await advance(0);
    assert.deepEqual(sent(server), [[]]);
  });

  it('debounces changes into one report a second later, with the SPIFFE IDs served', async () => {
    reporter.start();
    await advance(0);
    reporter.opened(facts('a'), ['spiffe://fake.test/web']);
    reporter.served(facts('b'), ['spiffe://fake.test/jobs']);
    reporter.served(facts('a'), ['spiffe://fake.test/admin']);
    await advance(999);
    assert.equal(sent(server).length, 1, 'nothing before the debounce ends');
    await advance(1);
    assert.equal(sent(server).length, 2);
    const last = sent(server)[1]!;
    assert.deepEqual(keys(last), ['a', 'b']);
    assert.deepEqual(last[0]!.spiffeIds, ['spiffe://fake.test/admin', 'spiffe://fake.test/web']);
  });

  it('a stream closing ends its workload at the next report', async () => {
    reporter.start();
    const close = reporter.opened(facts('a'), ['spiffe://fake.test/web']);
    const close2 = reporter.opened(facts('a'), ['spiffe://fake.test/web']);
    await advance(1000);
    assert.deepEqual(keys(sent(server).at(-1)), ['a']);
    close();
    close(); // twice is once
    await advance(1000);
    assert.deepEqual(keys(sent(server).at(-1)), ['a'], 'still one stream open');
    close2();
    await advance(1000);
    assert.deepEqual(keys(sent(server).at(-1)), []);
  });

  it('a workload seen only in unary calls stays 45 s after its last call, then leaves without waiting for a heartbeat', async () => {
    reporter.start();
    reporter.served(facts('u'), ['spiffe://fake.test/jobs']);
    await advance(1000);
    assert.deepEqual(keys(sent(server).at(-1)), ['u']);
    await advance(30_000);
    reporter.served(facts('u'), ['spiffe://fake.test/jobs']); // seen again: 45 s from now
    await advance(44_000);
    assert.deepEqual(keys(reporter.snapshot()), ['u']);
    const before = sent(server).length;
    await advance(1500);
    assert.deepEqual(keys(reporter.snapshot()), []);
    await advance(1000); // the change, debounced
    assert.ok(sent(server).length > before);
    assert.deepEqual(keys(sent(server).at(-1)), []);
  });

  it('heartbeats the whole snapshot every 20 s, changed or not', async () => {
    reporter.start();
    reporter.opened(facts('a'), ['spiffe://fake.test/web']);
    await advance(1000);
    const n = sent(server).length;
    await advance(19_000);
    assert.equal(sent(server).length, n + 1);
    await advance(20_000);
    assert.equal(sent(server).length, n + 2);
    assert.deepEqual(keys(sent(server).at(-1)), ['a']);
  });

  it('a failing server is logged once, retried, and the recovery said once', async () => {
    let down = true;
    server.answer.set(`POST ${AGENT_PATHS.workloads}`, () => {
      if (down) throw new WritError('ERR_REQUEST_FAILED', 'server unreachable');
      return { workloads: 1 };
    });
    reporter.start();
    reporter.opened(facts('a'), ['spiffe://fake.test/web']);
    for (let i = 0; i < 10; i++) await advance(2000);
    const tries = sent(server).length;
    assert.ok(tries >= 5, `retried (${tries} tries)`);
    assert.equal(logged.filter((m) => m.startsWith('cannot report workloads')).length, 1);
    down = false;
    await advance(20_000);
    assert.equal(logged.filter((m) => m === 'the server takes workload reports again').length, 1);
    assert.deepEqual(keys(sent(server).at(-1)), ['a']);
  });

  it('nothing is sent before start or after stop', async () => {
    reporter.opened(facts('a'), ['spiffe://fake.test/web']);
    await advance(30_000);
    assert.equal(sent(server).length, 0);
    reporter.start();
    await advance(0);
    reporter.stop();
    reporter.served(facts('b'), ['spiffe://fake.test/web']);
    await advance(60_000);
    assert.equal(sent(server).length, 1);
  });
});

describe('the Workload API reports what it serves', () => {
  const dir = mkdtempSync(join(tmpdir(), 'writ-wrep-'));
  const server = new FakeServer();
  const log = pino({ level: 'silent' });
  const uid = process.getuid!();
  const agent = new Agent({
    serverUrl: 'https://fake.invalid',
    caPem: server.ca.pem,
    joinToken: server.joinToken('node-r'),
    dataDir: dir,
    log,
    client: server,
  });
  const api = new WorkloadApiServer({ agent, socketPath: join(dir, 'api.sock'), log });
  const until = async (what: string, ok: () => boolean): Promise<void> => {
    for (let i = 0; i < 500 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(ok(), what);
  };
  const mine = (): WorkloadReport[] => server.workloads.get('spiffe://fake.test/writ/agent/node-r') ?? [];

  it('a FetchX509SVID stream is a running workload keyed pid:PID:START until the stream closes', async (t) => {
    t.after(async () => {
      agent.stop();
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    });
    server.put(fakeEntry('e1', 'spiffe://fake.test/ns/web', [`unix:uid:${uid}`]));
    await agent.start();
    await api.listen();
    await until('the start report', () => server.workloads.has('spiffe://fake.test/writ/agent/node-r'));
    const client = new GrpcClient(`unix://${join(dir, 'api.sock')}`);
    let got = 0;
    const cancel = client.call(
      '/SpiffeWorkloadAPI/FetchX509SVID',
      Buffer.alloc(0),
      { 'workload.spiffe.io': 'true' },
      () => got++,
      () => undefined,
    );
    await until('an SVID on the stream', () => got > 0);
    await until('the workload reported', () => mine().length === 1);
    const [w] = mine();
    assert.match(w!.key, new RegExp(`^pid:${process.pid}:\\d+$`));
    assert.deepEqual(w!.spiffeIds, ['spiffe://fake.test/ns/web']);
    assert.equal(w!.imageDigest, null);
    cancel();
    client.close();
    await until('the workload gone once its stream closed', () => mine().length === 0);
  });
});
