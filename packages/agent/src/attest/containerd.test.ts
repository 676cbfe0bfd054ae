/** The containerd attestor against a fake containerd speaking its gRPC API on a Unix socket. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GRPC_STATUS, Writer, acceptUnaryRequest, fields } from '@writ/sdk/internal';
import { containerdAttestor } from './containerd.ts';

const CID = 'f'.repeat(16) + '0123456789abcdef'.repeat(3);
const mapEntry = (k: string, v: string): Buffer => new Writer().string(1, k).string(2, v).finish();

describe('containerd attestor against a fake containerd (gRPC on a Unix socket)', () => {
  let dir: string;
  const namespaces: string[] = [];
  const server = createServer();
  server.on('stream', (stream, headers) =>
    acceptUnaryRequest(stream, headers, 1 << 20, (call, req) => {
      namespaces.push(String(headers['containerd-namespace']));
      const id =
        fields(req)
          .find((f) => f.field === 1)
          ?.data.toString() ?? '';
      if (call.method === '/containerd.services.containers.v1.Containers/Get') {
        if (id !== CID) return call.end(GRPC_STATUS.NOT_FOUND, `container "${id}" in namespace "k8s.io": not found`);
        const container = new Writer()
          .string(1, CID)
          .message(2, mapEntry('io.kubernetes.pod.namespace', 'shop'))
          .message(2, mapEntry('team', 'web'))
          .string(3, 'registry.example/shop/web:1.4')
          .string(6, 'overlayfs')
          .finish();
        call.send(new Writer().message(1, container).finish());
        return call.end();
      }
      if (call.method === '/containerd.services.images.v1.Images/Get') {
        const target = new Writer()
          .string(1, 'application/vnd.oci.image.index.v1+json')
          .string(2, `sha256:${'d'.repeat(64)}`)
          .finish();
        call.send(new Writer().message(1, new Writer().string(1, id).message(3, target).finish()).finish());
        return call.end();
      }
      return call.end(GRPC_STATUS.UNIMPLEMENTED, 'unknown method');
    }),
  );
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-containerd-'));
    await new Promise<void>((r) => server.listen(join(dir, 'containerd.sock'), () => r()));
    for (const [pid, id] of [
      [7, CID],
      [8, 'e'.repeat(64)],
    ] as const) {
      mkdirSync(join(dir, String(pid)));
      writeFileSync(join(dir, String(pid), 'cgroup'), `0::/kubepods.slice/kubepods-pod11111111_2222_3333_4444_555555555555.slice/cri-containerd-${id}.scope\n`);
    }
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads labels, image and image digest in the k8s.io namespace', async () => {
    const { selectors: sel, containerId } = await containerdAttestor({ socketPath: join(dir, 'containerd.sock'), proc: dir })({ pid: 7, uid: 0, gid: 0 });
    assert.match(containerId ?? '', /^[0-9a-f]{64}$/);
    assert.deepEqual(sel, [
      'containerd:namespace:k8s.io',
      'containerd:label:io.kubernetes.pod.namespace:shop',
      'containerd:label:team:web',
      'containerd:image:registry.example/shop/web:1.4',
      `containerd:image_digest:sha256:${'d'.repeat(64)}`,
    ]);
    assert.ok(namespaces.every((n) => n === 'k8s.io'));
  });

  it('an unknown container adds nothing', async () => {
    assert.deepEqual(await containerdAttestor({ socketPath: join(dir, 'containerd.sock'), proc: dir })({ pid: 8, uid: 0, gid: 0 }), { selectors: [] });
  });
});
