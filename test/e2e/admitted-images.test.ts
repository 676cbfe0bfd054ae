/**
 * Identity follows image trust, end to end: a real server process (its store written by a second
 * store client, as the webhook of another replica would), a real agent over HTTPS with its
 * Workload API on a Unix socket, and the CLI. The container is this test process as the docker
 * attestor sees it (a cgroup file naming a container, a fake Docker Engine on a Unix socket);
 * `writ doctor`, a child process, is a plain process with no image digest.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { GRPC_STATUS, GrpcError, WorkloadClient } from '@writ/sdk';
import { Agent, WorkloadApiServer, dockerAttestor } from '../../packages/agent/src/index.ts';
import { openStore } from '../../packages/server/src/store/open.ts';
import type { Store } from '../../packages/server/src/store/types.ts';
import { CuttableProxy, type ServerProcess, cleanup, startServerProcess, writ } from './helpers.ts';

const CID = '5e'.repeat(32);
const CONFIG = `sha256:${'c'.repeat(64)}`;
const DIGEST = `sha256:${'7a'.repeat(32)}`;
const WEB = 'spiffe://e2e.test/shop/web';
const TOOL = 'spiffe://e2e.test/host/tool';
const PLAIN = 'spiffe://e2e.test/shop/any';
const NODE = 'img-node';
const uid = process.getuid!();

describe('requireAdmittedImage: a real server, agent and CLI', () => {
  const dir = mkdtempSync(join(tmpdir(), 'writ-e2e-images-'));
  const proc = join(dir, 'proc');
  const front = new CuttableProxy(0);
  const docker = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === `/v1.41/containers/${CID}/json`)
      return res.end(JSON.stringify({ Id: CID, Name: '/web-1', Image: CONFIG, Config: { Image: 'registry.example/shop/web:1.4', Labels: { app: 'web' } } }));
    if (req.url === `/v1.41/images/${encodeURIComponent(CONFIG)}/json`)
      return res.end(JSON.stringify({ Id: CONFIG, RepoDigests: [`registry.example/shop/web@${DIGEST}`] }));
    res.statusCode = 404;
    return res.end('{"message":"No such object"}');
  });
  let srv: ServerProcess;
  let store: Store;
  let agent: Agent;
  let api: WorkloadApiServer;
  const socket = join(dir, 'api.sock');

  const ids = async (): Promise<string[]> => {
    const wl = new WorkloadClient(`unix://${socket}`, { attempts: 1 });
    try {
      return (await wl.fetchX509Context()).svids.map((s) => s.spiffeId).sort();
    } catch (err) {
      if (err instanceof GrpcError && err.code === GRPC_STATUS.PERMISSION_DENIED) return [];
      throw err;
    } finally {
      wl.close();
    }
  };
  const until = async <T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string, ms = 15_000): Promise<T> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = await read();
      if (ok(v)) return v;
      if (Date.now() > deadline) assert.fail(`${what}: still ${JSON.stringify(v)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  before(async () => {
    mkdirSync(join(proc, String(process.pid)), { recursive: true });
    writeFileSync(join(proc, String(process.pid), 'cgroup'), `0::/system.slice/docker-${CID}.scope\n`);
    await new Promise<void>((r) => docker.listen(join(dir, 'docker.sock'), () => r()));
    srv = await startServerProcess({ restartable: true }, front);
    store = await openStore({ db: 'sqlite', dataDir: srv.dataDir });
    const token = await writ(srv, ['token', 'create', '--node-name', NODE, '-o', 'json']);
    assert.equal(token.code, 0, token.stderr);
    agent = new Agent({
      serverUrl: srv.url,
      caPem: readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8'),
      joinToken: (JSON.parse(token.stdout) as { token: string }).token,
      dataDir: join(dir, 'agent'),
      log: pino({ level: 'silent' }),
      syncWaitSeconds: 10,
    });
    api = new WorkloadApiServer({
      agent,
      socketPath: socket,
      log: pino({ level: 'silent' }),
      attestors: [dockerAttestor({ socketPath: join(dir, 'docker.sock'), proc })],
    });
    await agent.start();
    await api.listen();
  });
  after(async () => {
    agent?.stop();
    await api?.close();
    await store?.close();
    await srv?.stop();
    await front.close();
    docker.close();
    if (srv) cleanup(srv.dataDir);
    cleanup(dir);
  });

  it('writ entry create --require-admitted-image stores it and the table says so', async () => {
    const parent = `spiffe://e2e.test/writ/agent/${NODE}`;
    const web = await writ(srv, [
      'entry',
      'create',
      '--spiffe-id',
      WEB,
      '--parent-id',
      parent,
      '--selector',
      'docker:label:app:web',
      '--require-admitted-image',
    ]);
    assert.equal(web.code, 0, web.stderr);
    assert.match(web.stdout, /IMAGE/);
    assert.match(web.stdout, /admitted only/);
    const tool = await writ(srv, [
      'entry',
      'create',
      '--spiffe-id',
      TOOL,
      '--parent-id',
      parent,
      '--selector',
      `unix:uid:${uid}`,
      '--require-admitted-image',
      '-o',
      'json',
    ]);
    assert.equal(tool.code, 0, tool.stderr);
    assert.equal((JSON.parse(tool.stdout) as { requireAdmittedImage?: boolean }).requireAdmittedImage, true);
    const plain = await writ(srv, ['entry', 'create', '--spiffe-id', PLAIN, '--parent-id', parent, '--selector', 'docker:label:app:web', '-o', 'json']);
    assert.equal(plain.code, 0, plain.stderr);
    assert.ok(!('requireAdmittedImage' in (JSON.parse(plain.stdout) as object)), 'absent when not set');
    // PATCH keeps it unless told otherwise; --no-require-admitted-image turns it off.
    const id = (JSON.parse(tool.stdout) as { id: string }).id;
    const hinted = await writ(srv, ['entry', 'update', id, '--hint', 'tool', '-o', 'json']);
    assert.equal((JSON.parse(hinted.stdout) as { requireAdmittedImage?: boolean }).requireAdmittedImage, true);
    const off = await writ(srv, ['entry', 'update', id, '--no-require-admitted-image', '-o', 'json']);
    assert.ok(!('requireAdmittedImage' in (JSON.parse(off.stdout) as object)));
    const on = await writ(srv, ['entry', 'update', id, '--require-admitted-image', '-o', 'json']);
    assert.equal((JSON.parse(on.stdout) as { requireAdmittedImage?: boolean }).requireAdmittedImage, true);
    const listed = await writ(srv, ['entry', 'list']);
    assert.match(listed.stdout, new RegExp(`${PLAIN}.*\\bany$`, 'm'), 'the table tells the two kinds apart');
  });

  it("the container gets only the unrestricted identity until its digest is admitted, then the other, through another replica's write", async () => {
    await until(ids, (v) => v.includes(PLAIN), 'the unrestricted entry reached the agent');
    assert.deepEqual(await ids(), [PLAIN]);
    const images = await writ(srv, ['admission', 'images', '-o', 'json']);
    assert.equal(images.code, 0, images.stderr);
    assert.deepEqual(JSON.parse(images.stdout), { images: [], requireAdmittedImage: false });
    const t0 = Date.now();
    await store.recordAdmittedImages([DIGEST], t0);
    const got = await until(ids, (v) => v.includes(WEB), 'the SVID after admission');
    const ms = Date.now() - t0;
    assert.deepEqual(got, [TOOL, PLAIN, WEB].sort(), 'the admitted container also gets the uid entry that requires an admitted image');
    // Written by another store client: the server notices through its change stamp (once a second). Printed, not judged.
    process.stdout.write(`# admitted digest to SVID served, through another replica's write: ${ms} ms\n`);
    const listed = await writ(srv, ['admission', 'images', '-o', 'json']);
    const body = JSON.parse(listed.stdout) as { images: Array<{ digest: string; firstSeen: string }> };
    assert.deepEqual(
      body.images.map((i) => i.digest),
      [DIGEST],
    );
    assert.equal(Date.parse(body.images[0]!.firstSeen), t0);
    const one = await writ(srv, ['admission', 'images', '--digest', DIGEST]);
    assert.match(one.stdout, new RegExp(`${DIGEST}\\s+\\d{4}-`));
    const badDigest = await writ(srv, ['admission', 'images', '--digest', 'sha256:ABC']);
    assert.equal(badDigest.code, 1);
    assert.match(badDigest.stderr, /ERR_FIELD_INVALID|not sha256/);
  });

  it('a plain process with the same uid never gets the identity that requires an admitted image; writ doctor says why', async () => {
    const d = await writ(srv, ['doctor', '--socket', socket]);
    assert.equal(d.code, 1, d.stdout);
    assert.match(d.stdout, new RegExp(`${TOOL}: requires an admitted image: the caller has no image digest`));
    assert.match(d.stdout, /deploy the image through the admission webhook/);
  });

  it('a server restarted with --require-admitted-image withholds every entry from containers whose image was not admitted', async () => {
    await srv.stop();
    srv = await startServerProcess({ restartable: true, dataDir: srv.dataDir, args: ['--require-admitted-image'] }, front);
    assert.deepEqual(await ids(), [TOOL, PLAIN, WEB].sort(), 'the admitted container keeps all three');
    const images = await writ(srv, ['admission', 'images', '-o', 'json']);
    assert.equal((JSON.parse(images.stdout) as { requireAdmittedImage: boolean }).requireAdmittedImage, true);
    // Another image in the same container labels: now even the unrestricted entry needs admission.
    await store.pruneAdmittedImages(Date.now() + 1);
    await until(ids, (v) => v.length === 0, 'nothing once the digest is forgotten and every entry requires one');
    await store.recordAdmittedImages([DIGEST], Date.now() + 2);
    await until(ids, (v) => v.length === 3, 'all three again after it is admitted again');
  });
});
