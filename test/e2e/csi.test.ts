/**
 * `writ csi`, the CSI node plugin (issue 16, section 2), as a real process on a Unix socket:
 * the Kubernetes CSI project's own csi-sanity (csi-test v5.4.0, pinned in test/go/csi-sanity)
 * passes its Identity and Node suites; and a volume published the way the kubelet does it is the
 * agent's socket directory, mounted read-only, gone again after unpublish. Needs root (mount).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GRPC_STATUS, GrpcClient, GrpcError, Writer } from '@writ/sdk/internal';
import { ROOT, WRIT, cleanup, run } from './helpers.ts';

const SANITY = join(ROOT, 'test/go/bin/csi-sanity');
const dir = mkdtempSync(join(tmpdir(), 'writ-e2e-csi-'));
const endpoint = join(dir, 'csi.sock');
const agentDir = join(dir, 'agent');
let plugin: ChildProcess;

before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the CSI plugin bind-mounts and needs root (CI runs as root)');
  if (!existsSync(SANITY))
    throw new Error(
      `${SANITY} is missing: build it as .ci/run does (cd test/go/csi-sanity && go build -o ../bin/csi-sanity github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity)`,
    );
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, 'api.sock'), ''); // stands for the agent's socket: what a pod must see
  plugin = spawn(process.execPath, [WRIT, 'csi', '--endpoint', endpoint, '--workload-api-dir', agentDir, '--node-id', 'node-1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`writ csi did not start: ${out}`)), 60_000);
    plugin.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"msg":"writ csi serving"')) clearTimeout(timer), resolve();
    });
    plugin.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    plugin.once('exit', (code) => (clearTimeout(timer), reject(new Error(`writ csi exited ${code}: ${out}`))));
  });
});
after(async () => {
  if (plugin?.exitCode === null) {
    plugin.kill('SIGTERM');
    await new Promise((r) => plugin.once('exit', r));
  }
  cleanup(dir);
});

describe('writ csi', () => {
  it("passes csi-sanity's Identity and Node suites", async () => {
    const r = await run(
      SANITY,
      [
        '-csi.endpoint',
        `unix://${endpoint}`,
        '-csi.mountdir',
        join(dir, 'sanity-mount'),
        '-csi.stagingdir',
        join(dir, 'sanity-stage'),
        // The plugin advertises no controller service (nothing to provision), so the controller
        // suites do not apply; "should remove target path" calls CreateVolume without checking that.
        '-ginkgo.skip',
        'Controller Server|Controller Service|NodeUnpublishVolume should remove target path',
        '-ginkgo.no-color',
      ],
      { timeoutMs: 120_000 },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const m = /^SUCCESS! -- (\d+) Passed \| (\d+) Failed/m.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.equal(m[2], '0');
    assert.ok(Number(m[1]) >= 10, `${m[1]} specs passed`);
  });

  it('publishes the agent socket directory read-only at the target path, idempotently, and unpublishes it', async () => {
    const c = new GrpcClient(`unix://${endpoint}`);
    try {
      const target = join(dir, 'pods/uid-1/volumes/kubernetes.io~csi/spiffe/mount');
      // NodePublishVolumeRequest: volume_id 1, target_path 4, volume_capability 5 { mount 2, access_mode 3 { mode 1 } }, readonly 6.
      const cap = new Writer().message(2, Buffer.alloc(0)).message(3, new Writer().enumValue(1, 1).finish()).finish();
      const publish = new Writer().string(1, 'csi-inline-uid-1').string(4, target).message(5, cap).bool(6, true).finish();
      for (let i = 0; i < 2; i++) await c.unary('/csi.v1.Node/NodePublishVolume', publish, {});
      const line = readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .filter((l) => l.split(' ')[4] === target);
      assert.equal(line.length, 1, 'mounted once, though published twice');
      assert.match(line[0]!, /\sro,nosuid,nodev,noexec[\s,]/);
      assert.ok(existsSync(join(target, 'api.sock')), 'the agent socket is there');
      assert.throws(() => writeFileSync(join(target, 'x'), ''), /EROFS/);

      const unpublish = new Writer().string(1, 'csi-inline-uid-1').string(2, target).finish();
      for (let i = 0; i < 2; i++) await c.unary('/csi.v1.Node/NodeUnpublishVolume', unpublish, {});
      assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(target));
      assert.ok(!existsSync(target), 'the target directory is removed');

      // A relative or climbing target path is refused, not mounted.
      const bad = new Writer().string(1, 'v').string(4, `${dir}/../etc`).message(5, cap).finish();
      await assert.rejects(
        c.unary('/csi.v1.Node/NodePublishVolume', bad, {}),
        (e: unknown) => e instanceof GrpcError && e.code === GRPC_STATUS.INVALID_ARGUMENT,
      );
      const block = new Writer()
        .string(1, 'v')
        .string(4, target)
        .message(5, new Writer().message(1, Buffer.alloc(0)).finish())
        .finish();
      await assert.rejects(c.unary('/csi.v1.Node/NodePublishVolume', block, {}), (e: unknown) => e instanceof GrpcError && /block/.test(e.details));
    } finally {
      c.close();
    }
  });
});
