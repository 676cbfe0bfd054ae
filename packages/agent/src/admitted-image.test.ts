/**
 * Identity follows image trust: an entry with requireAdmittedImage is served, through the real
 * Workload API socket, only to a container whose image digest was admitted. The container is this
 * test process as the docker attestor sees it: a cgroup file naming a container, and a fake Docker
 * Engine on a Unix socket speaking the Engine API's JSON.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { WritError } from '@writ/spiffe';
import { GRPC_STATUS, GrpcError, WorkloadClient } from '@writ/sdk';
import { GrpcClient, fields } from '@writ/sdk/internal';
import { Agent } from './agent.ts';
import { dockerAttestor } from './attest/docker.ts';
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

async function startNode(server: FakeServer, dataDir: string, joinToken?: string): Promise<Node> {
  const agent = new Agent({ serverUrl: 'https://fake.invalid', caPem: server.ca.pem, joinToken, dataDir, log, client: server, syncWaitSeconds: 5 });
  const socket = join(dataDir, 'api.sock');
  const api = new WorkloadApiServer({ agent, socketPath: socket, log, attestors: [dockerAttestor({ socketPath: join(dir, 'docker.sock'), proc })] });
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
    server.admit(OTHER);
    await new Promise((r) => setTimeout(r, 200));
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
      await new Promise((r) => setTimeout(r, 200));
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
