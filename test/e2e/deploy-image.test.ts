/**
 * Writ's container image and OCI hook, run for real (issue 16, section 2). deploy/build-image.sh
 * builds the image offline (umoci, no daemon); its config must be deploy/Containerfile's. Debian's
 * runc then runs it: `writ --version` on a read-only root as uid 10001; `writ server start` with its
 * data directory on a volume, which the host's CLI uses; and a container whose image knows nothing
 * of Writ, prepared by `writ oci-hook prepare`, fetches its X.509-SVID from a real agent on the host
 * through the socket the createContainer hook mounted read-only. Needs root (runc), as CI has.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, WRIT, cleanup, run, startAgentProcess, startServerProcess, writ } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'writ-e2e-image-'));
const layout = join(dir, 'oci');
const TAG = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const containers: string[] = [];
let seq = 0;

type RuntimeConfig = {
  process: { args: string[]; env: string[]; user: { uid: number; gid: number }; cwd: string; terminal: boolean };
  root: { path: string; readonly: boolean };
  mounts: Array<Record<string, unknown>>;
  linux: { namespaces: Array<{ type: string }> };
  hooks?: unknown;
};

/** A fresh bundle of the image (umoci's runtime config from the image config), edited by `edit`. */
async function bundle(edit: (c: RuntimeConfig) => void): Promise<string> {
  const b = join(dir, `bundle-${++seq}`);
  const u = await run('umoci', ['unpack', '--image', `${layout}:${TAG}`, b]);
  assert.equal(u.code, 0, u.stderr);
  const file = join(b, 'config.json');
  const c = JSON.parse(readFileSync(file, 'utf8')) as RuntimeConfig;
  c.process.terminal = false;
  c.root.readonly = true;
  edit(c);
  writeFileSync(file, JSON.stringify(c, null, 2));
  return b;
}
const containerId = (): string => {
  const id = `writ-e2e-${process.pid}-${++seq}`;
  containers.push(id);
  return id;
};
const imageArgs = (c: RuntimeConfig): string[] => c.process.args.slice(0, 2); // the ENTRYPOINT: node and writ.js

before(async () => {
  if (process.getuid?.() !== 0) throw new Error('this test runs containers with runc and needs root (CI runs as root)');
  for (const tool of ['umoci', 'runc'])
    assert.equal((await run('sh', ['-c', `command -v ${tool}`])).code, 0, `${tool} is missing: .ci/run installs it (apt-get install ${tool})`);
  const b = await run('sh', [join(ROOT, 'deploy/build-image.sh'), layout, TAG], { timeoutMs: 300_000 });
  assert.equal(b.code, 0, b.stderr);
});
after(async () => {
  for (const id of containers) await run('runc', ['delete', '--force', id]);
  cleanup(dir);
});

describe('the image deploy/build-image.sh builds', () => {
  it("has deploy/Containerfile's config: user, entrypoint, working dir, volume, env, labels", async () => {
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations: Record<string, string> }> };
    assert.equal(index.manifests.length, 1);
    assert.equal(index.manifests[0]!.annotations['org.opencontainers.image.ref.name'], TAG);
    const blob = (d: string) => JSON.parse(readFileSync(join(layout, 'blobs', ...d.split(':')), 'utf8')) as Record<string, unknown>;
    const manifest = blob(index.manifests[0]!.digest) as { config: { digest: string }; layers: unknown[] };
    assert.equal(manifest.layers.length, 1, 'one layer: the rootfs');
    const image = blob(manifest.config.digest) as { os: string; architecture: string; config: Record<string, unknown> };
    assert.equal(image.os, 'linux');
    assert.equal(image.architecture, 'amd64');

    // The final stage of the Containerfile, instruction by instruction (continuation lines joined).
    const text = readFileSync(join(ROOT, 'deploy/Containerfile'), 'utf8').replace(/\\\n\s*/g, ' ');
    const final = text.slice(text.lastIndexOf('\nFROM '));
    const instr = (name: string): string[] => [...final.matchAll(new RegExp(`^${name} (.+)$`, 'gm'))].map((m) => m[1]!.trim());
    const labels = Object.fromEntries(
      [
        ...instr('LABEL')
          .join(' ')
          .matchAll(/([\w.]+)="([^"]*)"/g),
      ].map((m) => [m[1]!, m[2]!]),
    );
    assert.deepEqual(image.config, {
      User: instr('USER')[0],
      WorkingDir: instr('WORKDIR')[0],
      Env: instr('ENV'),
      Volumes: Object.fromEntries(instr('VOLUME').map((v) => [v, {}])),
      Entrypoint: JSON.parse(instr('ENTRYPOINT')[0]!),
      Cmd: JSON.parse(instr('CMD')[0]!),
      Labels: labels,
    });
  });

  it('runs `writ --version` as uid 10001 on a read-only root, with nothing but node, writ, mount and their libraries', async () => {
    let args: string[] = [];
    const b = await bundle((c) => {
      assert.deepEqual(c.process.user, { uid: 10001, gid: 10001 });
      args = imageArgs(c);
      c.process.args = [...args, '--version'];
    });
    const r = await run('runc', ['run', '-b', b, containerId()], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), TAG);
    assert.ok(!existsSync(join(b, 'rootfs/bin/sh')), 'no shell in the image');
    assert.ok(existsSync(join(b, 'rootfs/opt/writ/packages/agent/native/build/peercred.node')), "the agent's addon is there");

    const w = await bundle((c) => {
      c.process.args = ['/usr/local/bin/node', '-e', "try { require('fs').writeFileSync('/opt/writ/x', '') } catch (e) { console.log(e.code) }"];
    });
    const rw = await run('runc', ['run', '-b', w, containerId()], { timeoutMs: 60_000 });
    assert.equal(rw.stdout.trim(), 'EROFS', rw.stderr);
  });

  it('serves `writ server start` with its data directory on a volume; the host CLI manages it', async () => {
    const data = join(dir, 'server-data');
    mkdirSync(data);
    chownSync(data, 10001, 10001);
    const b = await bundle((c) => {
      c.process.args = [...imageArgs(c), 'server', 'start', '--data-dir', '/var/lib/writ', '--trust-domain', 'image.test', '--listen', '127.0.0.1:0'];
      // The host's network, so the test reaches the port; the volume is a bind mount of `data`.
      c.linux.namespaces = c.linux.namespaces.filter((n) => n.type !== 'network');
      c.mounts.push({ destination: '/var/lib/writ', type: 'bind', source: data, options: ['rbind', 'rw', 'nosuid', 'nodev'] });
    });
    const id = containerId();
    const child = spawn('runc', ['run', '-b', b, id], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = await listening(child);
      const env = { WRIT_SERVER: url, WRIT_CA_FILE: join(data, 'bundle.pem'), WRIT_TOKEN: readFileSync(join(data, 'admin.token'), 'utf8').trim() };
      const e = await writ(
        undefined,
        ['entry', 'create', '--spiffe-id', 'spiffe://image.test/web', '--parent-id', 'spiffe://image.test/writ/agent/n1', '--selector', 'unix:uid:1'],
        { env },
      );
      assert.equal(e.code, 0, e.stderr);
      const l = await writ(undefined, ['entry', 'list', '-o', 'json'], { env });
      assert.equal(l.code, 0, l.stderr);
      assert.deepEqual(
        (JSON.parse(l.stdout) as Array<{ spiffeId: string }>).map((x) => x.spiffeId),
        ['spiffe://image.test/web'],
      );
      const st = readFileSync(`/proc/${await containerPid(id)}/status`, 'utf8');
      assert.match(st, /^Uid:\s+10001\s+10001\s+10001\s+10001$/m, 'the server runs as uid 10001');
    } finally {
      await run('runc', ['kill', id, 'TERM']);
      await new Promise((r) => child.once('close', r));
    }
  });
});

describe('writ oci-hook with runc', () => {
  it("gives a container the agent's Workload API: SPIFFE_ENDPOINT_SOCKET and the socket mounted read-only", async () => {
    const srv = await startServerProcess();
    const socketDir = join(dir, 'agent-socket');
    mkdirSync(socketDir);
    chmodSync(socketDir, 0o755);
    try {
      const e = await writ(srv, [
        'entry',
        'create',
        '--spiffe-id',
        'spiffe://e2e.test/containers/web',
        '--parent-id',
        'spiffe://e2e.test/writ/agent/host1',
        '--selector',
        'unix:uid:10001',
      ]);
      assert.equal(e.code, 0, e.stderr);
      const t = await writ(srv, ['token', 'create', '--node-name', 'host1', '-o', 'json']);
      assert.equal(t.code, 0, t.stderr);
      const agent = await startAgentProcess(srv, { joinToken: (JSON.parse(t.stdout) as { token: string }).token, socket: join(socketDir, 'api.sock') });
      try {
        // The image's own command would be anything; here the writ CLI inside it asks for its SVID.
        const b = await bundle((c) => {
          c.process.args = [...imageArgs(c), 'svid', 'fetch', '-o', 'json'];
        });
        const before = JSON.parse(readFileSync(join(b, 'config.json'), 'utf8')) as RuntimeConfig;
        assert.ok(!before.process.env.some((x) => x.startsWith('SPIFFE_ENDPOINT_SOCKET=')));
        const p = await run(process.execPath, [WRIT, 'oci-hook', 'prepare', '--bundle', b, '--socket', join(socketDir, 'api.sock')]);
        assert.equal(p.code, 0, p.stderr);
        const prepared = JSON.parse(readFileSync(join(b, 'config.json'), 'utf8')) as RuntimeConfig & { hooks: { createContainer: Array<{ args: string[] }> } };
        assert.ok(prepared.process.env.includes('SPIFFE_ENDPOINT_SOCKET=unix:///run/spiffe/workload/api.sock'));
        assert.deepEqual(prepared.hooks.createContainer[0]!.args.slice(2, 4), ['oci-hook', 'create-container']);

        const r = await run('runc', ['run', '-b', b, containerId()], { timeoutMs: 60_000 });
        assert.equal(r.code, 0, r.stderr + r.stdout);
        assert.deepEqual(
          (JSON.parse(r.stdout) as Array<{ spiffeId: string }>).map((s) => s.spiffeId),
          ['spiffe://e2e.test/containers/web'],
        );

        // Inside: the directory is a read-only mount; outside: the host's mount table is untouched.
        const w = await bundle((c) => {
          c.process.args = [
            '/usr/local/bin/node',
            '-e',
            "const fs = require('fs'); const m = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\\n').find((l) => l.includes(' /run/spiffe/workload ')); let w = 'written'; try { fs.writeFileSync('/run/spiffe/workload/x', '') } catch (e) { w = e.code } console.log(JSON.stringify({ m, w, ls: fs.readdirSync('/run/spiffe/workload') }))",
          ];
        });
        assert.equal((await run(process.execPath, [WRIT, 'oci-hook', 'prepare', '--bundle', w, '--socket', join(socketDir, 'api.sock')])).code, 0);
        const inside = await run('runc', ['run', '-b', w, containerId()], { timeoutMs: 60_000 });
        assert.equal(inside.code, 0, inside.stderr);
        const seen = JSON.parse(inside.stdout) as { m: string; w: string; ls: string[] };
        assert.match(seen.m, /\sro,nosuid,nodev,noexec[\s,]/);
        assert.equal(seen.w, 'EROFS');
        assert.deepEqual(seen.ls, ['api.sock']);
        assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(w), 'the bind mount lives in the container only');

        // Opted out by annotation: no mount, no variable.
        const o = await bundle((c) => {
          (c as unknown as { annotations: Record<string, string> }).annotations = { 'writ.dev/workload-api': 'false' };
          c.process.args = [
            '/usr/local/bin/node',
            '-e',
            "console.log(process.env.SPIFFE_ENDPOINT_SOCKET ?? 'unset', require('fs').existsSync('/run/spiffe/workload'))",
          ];
        });
        assert.equal((await run(process.execPath, [WRIT, 'oci-hook', 'prepare', '--bundle', o])).code, 0);
        const out = await run('runc', ['run', '-b', o, containerId()], { timeoutMs: 60_000 });
        assert.equal(out.stdout.trim(), 'unset false', out.stderr);
      } finally {
        await agent.stop();
        cleanup(agent.dataDir);
      }
    } finally {
      await srv.stop();
      cleanup(srv.dataDir);
    }
  });

  it('a failing hook stops the container from starting, saying why', async () => {
    const b = await bundle((c) => {
      c.process.args = ['/usr/local/bin/node', '-e', "console.log('started')"];
    });
    assert.equal((await run(process.execPath, [WRIT, 'oci-hook', 'prepare', '--bundle', b, '--socket', join(dir, 'no-agent/api.sock')])).code, 0);
    const r = await run('runc', ['run', '-b', b, containerId()], { timeoutMs: 60_000 });
    assert.notEqual(r.code, 0);
    assert.ok(!r.stdout.includes('started'));
    assert.match(r.stderr, /socket directory .*no-agent does not exist/);
  });
});

function listening(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`the server in the container did not start: ${out}${err}`)), 60_000);
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"url":"(https:\/\/127\.0\.0\.1:\d+)".*"msg":"writ server listening"/.exec(out);
      if (m) clearTimeout(timer), resolve(m[1]!);
    });
    child.once('close', (code) => (clearTimeout(timer), reject(new Error(`runc exited ${code}: ${out}${err}`))));
  });
}

async function containerPid(id: string): Promise<number> {
  const r = await run('runc', ['state', id]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { pid: number }).pid;
}
