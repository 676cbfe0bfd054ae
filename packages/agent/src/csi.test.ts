/**
 * The CSI node plugin's answers, message by message (csi.proto field numbers), with a fake
 * Mounter that records what would be mounted. The real plugin under csi-sanity, with real mounts,
 * is test/e2e/csi.test.ts.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { GRPC_STATUS, GrpcError, Writer, fields } from '@writ/sdk/internal';
import { CSI_DRIVER_NAME, CsiNodePlugin, type Mounter } from './csi.ts';

const tmp = mkdtempSync(join(tmpdir(), 'writ-csi-unit-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

class FakeMounter implements Mounter {
  readonly mounts = new Map<string, string>();
  isMountPoint(path: string): boolean {
    return this.mounts.has(path);
  }
  bindReadOnly(source: string, target: string): void {
    this.mounts.set(target, source);
  }
  unmount(target: string): void {
    this.mounts.delete(target);
  }
}

const plugin = (m: Mounter) =>
  new CsiNodePlugin({ endpoint: join(tmp, 'unused.sock'), workloadApiDir: '/run/writ/agent', nodeId: 'node-1', version: '0.1.0', mounter: m });
const cap = new Writer().message(2, Buffer.alloc(0)).finish();
const publish = (volumeId: string, target: string, capability: Buffer | null = cap) => {
  const w = new Writer().string(1, volumeId).string(4, target);
  if (capability) w.message(5, capability);
  return w.finish();
};
const code = (fn: () => unknown, c: number) => assert.throws(fn, (e: unknown) => e instanceof GrpcError && e.code === c);

describe('CsiNodePlugin', () => {
  it('names itself, reports no capabilities but the one csi-sanity needs, and the node', () => {
    const p = plugin(new FakeMounter());
    const info = fields(p.handle('/csi.v1.Identity/GetPluginInfo', Buffer.alloc(0)));
    assert.deepEqual(
      info.map((f) => [f.field, f.data.toString()]),
      [
        [1, CSI_DRIVER_NAME],
        [2, '0.1.0'],
      ],
    );
    assert.equal(p.handle('/csi.v1.Identity/GetPluginCapabilities', Buffer.alloc(0)).length, 0, 'no CONTROLLER_SERVICE');
    assert.equal(p.handle('/csi.v1.Node/NodeGetCapabilities', Buffer.alloc(0)).length, 0, 'no staging');
    const ctl = fields(p.handle('/csi.v1.Controller/ControllerGetCapabilities', Buffer.alloc(0)));
    assert.equal(ctl.length, 1);
    assert.deepEqual(fields(fields(ctl[0]!.data)[0]!.data), [], 'rpc { type: UNKNOWN }');
    assert.equal(fields(p.handle('/csi.v1.Node/NodeGetInfo', Buffer.alloc(0)))[0]!.data.toString(), 'node-1');
    code(() => p.handle('/csi.v1.Controller/CreateVolume', Buffer.alloc(0)), GRPC_STATUS.UNIMPLEMENTED);
    code(() => p.handle('/csi.v1.Node/NodeStageVolume', Buffer.alloc(0)), GRPC_STATUS.UNIMPLEMENTED);
  });

  it('publishes the agent directory once at the target, and unpublishes it', () => {
    const m = new FakeMounter();
    const p = plugin(m);
    const target = join(tmp, 'pods/uid-1/mount');
    p.handle('/csi.v1.Node/NodePublishVolume', publish('v1', target));
    p.handle('/csi.v1.Node/NodePublishVolume', publish('v1', target));
    assert.deepEqual([...m.mounts], [[target, '/run/writ/agent']]);
    assert.ok(existsSync(target), 'the plugin creates the target directory');
    const unpublish = new Writer().string(1, 'v1').string(2, target).finish();
    p.handle('/csi.v1.Node/NodeUnpublishVolume', unpublish);
    p.handle('/csi.v1.Node/NodeUnpublishVolume', unpublish);
    assert.equal(m.mounts.size, 0);
    assert.ok(!existsSync(target));
  });

  it('refuses a request without volume id, target path or capability, a block volume, a climbing path', () => {
    const m = new FakeMounter();
    const p = plugin(m);
    const t = join(tmp, 'x');
    code(() => p.handle('/csi.v1.Node/NodePublishVolume', publish('', t)), GRPC_STATUS.INVALID_ARGUMENT);
    code(() => p.handle('/csi.v1.Node/NodePublishVolume', publish('v', '')), GRPC_STATUS.INVALID_ARGUMENT);
    code(() => p.handle('/csi.v1.Node/NodePublishVolume', publish('v', t, null)), GRPC_STATUS.INVALID_ARGUMENT);
    code(() => p.handle('/csi.v1.Node/NodePublishVolume', publish('v', t, new Writer().message(1, Buffer.alloc(0)).finish())), GRPC_STATUS.INVALID_ARGUMENT);
    code(() => p.handle('/csi.v1.Node/NodePublishVolume', publish('v', `${tmp}/../etc`)), GRPC_STATUS.INVALID_ARGUMENT);
    code(() => p.handle('/csi.v1.Node/NodeUnpublishVolume', new Writer().string(2, t).finish()), GRPC_STATUS.INVALID_ARGUMENT);
    assert.equal(m.mounts.size, 0, 'nothing was mounted');
  });
});
