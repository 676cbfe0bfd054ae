/**
 * Identity follows image trust: an entry with requireAdmittedImage is served, through the real
 * Workload API socket, only to a container whose image digest was admitted. The container is this
 * test process as the docker attestor sees it: a cgroup file naming a container, and a fake Docker
 * Engine on a Unix socket speaking the Engine API's JSON.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import { createServer as createHttp2Server } from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { OID, WritError, buildName, issueCertificate, toPem } from '@writ/spiffe';
import { AGENT_PATHS } from '@writ/protocol';
import { GRPC_STATUS, GrpcError, WorkloadClient } from '@writ/sdk';
import { GrpcClient, Writer, acceptUnaryRequest, fields } from '@writ/sdk/internal';
import { Agent } from './agent.ts';
import { containerdAttestor } from './attest/containerd.ts';
import { dockerAttestor } from './attest/docker.ts';
import { k8sAttestor } from './attest/k8s.ts';
import type { WorkloadAttestor } from './attest/attestation.ts';
import { FakeServer, fakeEntry } from './testing/fake-server.ts';
import { WorkloadApiServer } from './workload-api.ts';

const CID = '4f'.repeat(32);
const CONFIG = `sha256:${'c'.repeat(64)}`;
const ADMITTED = `sha256:${'a'.repeat(64)}`;
const OTHER = `sha256:${'b'.repeat(64)}`;
const log = pino({ level: 'silent' });

const dir = mkdtempSync(join(tmpdir(), 'writ-admitted-'));
const proc = join(dir, 'proc');
/** What the fake Docker Engine says this container runs (its repo digest), or undefined: no container. */
let runs: string | undefined = ADMITTED;

function inContainer(yes: boolean): void {
  mkdirSync(join(proc, String(process.pid)), { recursive: true });
  writeFileSync(join(proc, String(process.pid), 'cgroup'), yes ? `0::/system.slice/docker-${CID}.scope\n` : '0::/user.slice/user-1000.slice/session-2.scope\n');
}

const docker = createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  if (req.url === `/v1.41/containers/${CID}/json`)
    return res.end(JSON.stringify({ Id: CID, Name: '/web-1', Image: CONFIG, Config: { Image: 'registry.example/shop/web:1.4', Labels: { app: 'web' } } }));
  if (req.url === `/v1.41/images/${encodeURIComponent(CONFIG)}/json`)
    return res.end(JSON.stringify({ Id: CONFIG, RepoDigests: runs ? [`registry.example/shop/web@${runs}`] : [] }));
  res.statusCode = 404;
  return res.end(JSON.stringify({ message: 'No such object' }));
});

const WEB = 'spiffe://fake.test/shop/web';
const PLAIN = 'spiffe://fake.test/shop/plain';
const HOST = 'spiffe://fake.test/host/tool';

function decodeWhoAmI(buf: Buffer): { spiffeIds: string[]; withheld: string[] } {
  const out = { spiffeIds: [] as string[], withheld: [] as string[] };
  for (const f of fields(buf)) {
    if (f.wire === 2 && f.field === 2) out.spiffeIds.push(f.data.toString('utf8'));
    if (f.wire === 2 && f.field === 4) out.withheld.push(f.data.toString('utf8'));
  }
  return out;
}

interface Node {
  readonly agent: Agent;
  readonly api: WorkloadApiServer;
  readonly socket: string;
  ids(): Promise<string[]>;
  whoAmI(): Promise<{ spiffeIds: string[]; withheld: string[] }>;
  close(): Promise<void>;
}

async function startNode(
  server: FakeServer,
  dataDir: string,
  joinToken?: string,
  attestors: ReadonlyArray<WorkloadAttestor> = [dockerAttestor({ socketPath: join(dir, 'docker.sock'), proc })],
): Promise<Node> {
  const agent = new Agent({ serverUrl: 'https://fake.invalid', caPem: server.ca.pem, joinToken, dataDir, log, client: server, syncWaitSeconds: 5 });
  const socket = join(dataDir, 'api.sock');
  const api = new WorkloadApiServer({ agent, socketPath: socket, log, attestors });
  await agent.start();
  await api.listen();
  const grpc = new GrpcClient(`unix://${socket}`);
  return {
    agent,
    api,
    socket,
    async ids() {
      const wl = new WorkloadClient(`unix://${socket}`, { attempts: 1 });
      try {
        return (await wl.fetchX509Context()).svids.map((s) => s.spiffeId).sort();
      } catch (err) {
        if (err instanceof GrpcError && err.code === GRPC_STATUS.PERMISSION_DENIED) return [];
        throw err;
      } finally {
        wl.close();
      }
    },
    async whoAmI() {
      return decodeWhoAmI(await grpc.unary('/writ.agent.v1.Debug/WhoAmI', Buffer.alloc(0), { 'workload.spiffe.io': 'true' }));
    },
    async close() {
      grpc.close();
      agent.stop();
      await api.close();
    },
  };
}

async function eventually<T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  let v = await read();
  while (!ok(v)) {
    if (Date.now() > deadline) assert.fail(`${what}: still ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 25));
    v = await read();
  }
  return v;
}

/** The admitted-images version the agent last reported in a sync: it moves only once the agent applied a new set. */
function imagesVersionReported(server: FakeServer): string | null {
  const syncs = server.calledWith('GET', AGENT_PATHS.sync);
  return syncs.length ? new URLSearchParams(syncs.at(-1)!.path.split('?')[1]).get('images') : null;
}

describe('requireAdmittedImage through the Workload API socket', () => {
  const server = new FakeServer();
  let node: Node;
  before(async () => {
    await new Promise<void>((r) => docker.listen(join(dir, 'docker.sock'), () => r()));
    inContainer(true);
    node = await startNode(server, join(dir, 'node-a'), server.joinToken('node-a'));
    server.put({ ...fakeEntry('web', WEB, ['docker:label:app:web']), requireAdmittedImage: true });
    server.put(fakeEntry('plain', PLAIN, ['docker:label:app:web']));
    await eventually(
      () => node.ids(),
      (ids) => ids.includes(PLAIN),
      'the entry without the requirement is served',
    );
  });
  after(async () => {
    await node.close();
    docker.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a container whose digest was not admitted gets no SVID of the entry, and WhoAmI says why', async () => {
    assert.deepEqual(await node.ids(), [PLAIN]);
    const me = await node.whoAmI();
    assert.deepEqual(me.spiffeIds, [PLAIN]);
    assert.equal(me.withheld.length, 1);
    assert.match(me.withheld[0]!, new RegExp(`^${WEB}: requires an admitted image: this container runs ${ADMITTED}, not admitted`));
  });

  it('gets it once the digest is admitted, without reconnecting the agent', async () => {
    const before = imagesVersionReported(server);
    server.admit(OTHER);
    // Proof the agent holds the new set before saying it changed nothing: its next sync reports a new version.
    await eventually(
      async () => imagesVersionReported(server),
      (v) => v !== before,
      'the agent applied the set with the other image',
    );
    assert.deepEqual(await node.ids(), [PLAIN], 'another image admitted changes nothing for this one');
    server.admit(ADMITTED);
    await eventually(
      () => node.ids(),
      (ids) => ids.includes(WEB),
      'the SVID after admission',
    );
    assert.deepEqual(await node.ids(), [PLAIN, WEB].sort());
    assert.deepEqual((await node.whoAmI()).withheld, []);
  });

  it('a container running another image of the same labels does not get it', async () => {
    runs = `sha256:${'d'.repeat(64)}`;
    try {
      assert.deepEqual(await node.ids(), [PLAIN]);
      assert.match((await node.whoAmI()).withheld[0]!, /this container runs sha256:d{64}, not admitted/);
    } finally {
      runs = ADMITTED;
    }
  });

  it('a plain process (no container, no image digest) never gets it, even with matching selectors', async () => {
    const uid = process.getuid!();
    server.put({ ...fakeEntry('host', HOST, [`unix:uid:${uid}`]), requireAdmittedImage: true });
    inContainer(false);
    try {
      const me = await eventually(
        () => node.whoAmI(),
        (m) => m.withheld.some((w) => w.startsWith(HOST)),
        'the host entry synced',
      );
      assert.deepEqual(me.spiffeIds, []);
      assert.match(me.withheld.find((w) => w.startsWith(HOST))!, /the caller has no image digest/);
      assert.deepEqual(await node.ids(), []);
    } finally {
      inContainer(true);
    }
    // In the admitted container the same uid selector matches, and the image is admitted.
    await eventually(
      () => node.ids(),
      (ids) => ids.includes(HOST),
      'the host entry in the admitted container',
    );
  });

  it("the server's --require-admitted-image applies to every entry", async () => {
    runs = OTHER.replace(/b/g, 'e');
    try {
      assert.ok((await node.ids()).includes(PLAIN), 'before: the plain entry is served to any image');
      server.requireAdmittedImage = true;
      server.changed();
      await eventually(
        () => node.ids(),
        (ids) => ids.length === 0,
        'every entry now needs an admitted image',
      );
      server.requireAdmittedImage = false;
      server.changed();
      await eventually(
        () => node.ids(),
        (ids) => ids.includes(PLAIN),
        'lifted again',
      );
    } finally {
      runs = ADMITTED;
    }
  });

  it('a restarted agent keeps the admitted set from its disk while the server is away', async () => {
    await eventually(
      () => node.ids(),
      (ids) => ids.includes(WEB),
      'served before the restart',
    );
    await node.close();
    server.answer.set('GET /v1/agent/sync', () => {
      throw new WritError('ERR_REQUEST_FAILED', 'connect ECONNREFUSED (the server is down)');
    });
    node = await startNode(server, join(dir, 'node-a'));
    try {
      assert.equal(node.agent.connected, false, 'the server is away');
      assert.ok((await node.ids()).includes(WEB), 'the admitted container is still served from the cached set');
      runs = OTHER.replace(/b/g, 'f');
      assert.ok(!(await node.ids()).includes(WEB), 'and another image still is not');
    } finally {
      runs = ADMITTED;
      server.answer.delete('GET /v1/agent/sync');
    }
  });
});

describe('requireAdmittedImage with the containerd and kubelet attestors', () => {
  const CCID = '6d'.repeat(32);
  const POD_UID = '2c48913c-b29f-11e7-9350-020968147796';
  const FROM_CONTAINERD = `sha256:${'0c'.repeat(32)}`;
  const FROM_KUBELET = `sha256:${'0b'.repeat(32)}`;
  const kdir = mkdtempSync(join(tmpdir(), 'writ-admitted-k8s-'));
  const kproc = join(kdir, 'proc');
  const containerd = createHttp2Server();
  containerd.on('stream', (stream, headers) =>
    acceptUnaryRequest(stream, headers, 1 << 20, (call, req) => {
      const id =
        fields(req)
          .find((f) => f.field === 1)
          ?.data.toString() ?? '';
      if (call.method === '/containerd.services.containers.v1.Containers/Get') {
        if (id !== CCID) return call.end(GRPC_STATUS.NOT_FOUND, `container "${id}" in namespace "k8s.io": not found`);
        const label = new Writer().string(1, 'team').string(2, 'web').finish();
        const c = new Writer().string(1, CCID).message(2, label).string(3, 'registry.example/shop/web:1.4').finish();
        call.send(new Writer().message(1, c).finish());
        return call.end();
      }
      if (call.method === '/containerd.services.images.v1.Images/Get') {
        const target = new Writer().string(1, 'application/vnd.oci.image.index.v1+json').string(2, FROM_CONTAINERD).finish();
        call.send(new Writer().message(1, new Writer().string(1, id).message(3, target).finish()).finish());
        return call.end();
      }
      return call.end(GRPC_STATUS.UNIMPLEMENTED, 'unknown method');
    }),
  );
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kubeletCert = issueCertificate(
    {
      subject: buildName([[OID.commonName, 'kubelet']]),
      spki: k.publicKey.export({ format: 'der', type: 'spki' }),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      ca: true,
      uris: [],
      ipAddresses: [Buffer.from([127, 0, 0, 1])],
    },
    { cert: undefined, signer: { key: k.privateKey, keyType: 'ec-p256' } },
  );
  const kubelet = createHttpsServer({ key: k.privateKey.export({ format: 'pem', type: 'pkcs8' }), cert: toPem('CERTIFICATE', kubeletCert.der) }, (req, res) => {
    if (req.url !== '/pods') return void ((res.statusCode = 404), res.end('{}'));
    res.setHeader('content-type', 'application/json');
    res.end(
      JSON.stringify({
        kind: 'PodList',
        apiVersion: 'v1',
        items: [
          {
            metadata: { name: 'web-7d9f8', namespace: 'shop', uid: POD_UID },
            spec: { serviceAccountName: 'web', nodeName: 'node-1', containers: [{ name: 'web', image: 'registry.example/shop/web:1.4' }] },
            status: {
              containerStatuses: [
                {
                  name: 'web',
                  image: 'registry.example/shop/web:1.4',
                  imageID: `registry.example/shop/web@${FROM_KUBELET}`,
                  containerID: `containerd://${CCID}`,
                },
              ],
            },
          },
        ],
      }),
    );
  });
  const server = new FakeServer();
  let node: Node;
  const K8S = 'spiffe://fake.test/k8s/shop/web';

  before(async () => {
    mkdirSync(join(kproc, String(process.pid)), { recursive: true });
    writeFileSync(
      join(kproc, String(process.pid), 'cgroup'),
      `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_UID.replace(/-/g, '_')}.slice/cri-containerd-${CCID}.scope\n`,
    );
    writeFileSync(join(kdir, 'kubelet-ca.pem'), toPem('CERTIFICATE', kubeletCert.der));
    await new Promise<void>((r) => containerd.listen(join(kdir, 'containerd.sock'), () => r()));
    await new Promise<void>((r) => kubelet.listen(0, '127.0.0.1', () => r()));
    const kubeletUrl = `https://127.0.0.1:${(kubelet.address() as AddressInfo).port}`;
    node = await startNode(server, join(kdir, 'node-k'), server.joinToken('node-k'), [
      containerdAttestor({ socketPath: join(kdir, 'containerd.sock'), proc: kproc }),
      k8sAttestor({ kubeletUrl, caFile: join(kdir, 'kubelet-ca.pem'), proc: kproc }),
    ]);
    server.put({ ...fakeEntry('k8s-web', K8S, ['k8s:ns:shop', 'k8s:sa:web', 'containerd:label:team:web']), requireAdmittedImage: true });
    await eventually(
      () => node.whoAmI(),
      (m) => m.withheld.length === 1,
      'the entry synced (withheld)',
    );
  });
  after(async () => {
    await node.close();
    containerd.close();
    kubelet.close();
    rmSync(kdir, { recursive: true, force: true });
  });

  it("the kubelet's imageID digest or containerd's image digest, once admitted, gets the SVID; neither admitted, none", async () => {
    const me = await node.whoAmI();
    assert.match(me.withheld[0]!, new RegExp(`this container runs ${FROM_CONTAINERD}, ${FROM_KUBELET}, not admitted`));
    assert.deepEqual(await node.ids(), []);
    server.setAdmitted([FROM_KUBELET]);
    await eventually(
      () => node.ids(),
      (ids) => ids.includes(K8S),
      'served: the digest the kubelet reports was admitted',
    );
    server.setAdmitted([]);
    await eventually(
      () => node.ids(),
      (ids) => ids.length === 0,
      'withdrawn when the set no longer holds it',
    );
    server.setAdmitted([FROM_CONTAINERD]);
    await eventually(
      () => node.ids(),
      (ids) => ids.includes(K8S),
      "served: containerd's image digest was admitted",
    );
  });
});

describe('an agent newer than its server', () => {
  it('syncs without images= when the server refuses the parameter, and keeps serving', async () => {
    const server = new FakeServer();
    const route = 'GET /v1/agent/sync';
    const older = (_b: unknown, call: { path: string }): Promise<unknown> => {
      if (call.path.includes('images='))
        throw new WritError('ERR_FIELD_UNKNOWN', 'unknown query parameter "images"; allowed: since, wait, bundles, policy, quarantine, lean');
      server.answer.delete(route);
      return server.call<unknown>('GET', call.path).finally(() => server.answer.set(route, older));
    };
    server.answer.set(route, older);
    const ndir = mkdtempSync(join(tmpdir(), 'writ-older-server-'));
    const node = await startNode(server, ndir, server.joinToken('node-o'), []);
    try {
      server.put(fakeEntry('u', 'spiffe://fake.test/u', [`unix:uid:${process.getuid!()}`]));
      await eventually(
        () => node.ids(),
        (ids) => ids.length === 1,
        'served by an agent that syncs with an older server',
      );
      assert.ok(node.agent.connected);
      const syncs = server.calls.filter((c) => c.path.startsWith('/v1/agent/sync'));
      assert.ok(
        syncs.slice(1).every((c) => !c.path.includes('images=')),
        'after the refusal it no longer asks',
      );
    } finally {
      await node.close();
      rmSync(ndir, { recursive: true, force: true });
    }
  });
});
