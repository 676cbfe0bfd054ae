/**
 * The containerd workload attestor: container ID from the caller's cgroup, then labels and image
 * from containerd's own gRPC API on its socket (containers.v1 Containers/Get and images.v1
 * Images/Get, in the configured namespace). Selectors: containerd:namespace:NS,
 * containerd:label:K:V, containerd:image:REF, containerd:image_digest:sha256:….
 */
import { WritError } from '@writ/spiffe';
import { GRPC_STATUS, GrpcClient, GrpcError, Writer, fields } from '@writ/sdk/internal';
import type { PeerCred } from '../peercred.ts';
import type { Attestation } from './attestation.ts';
import { readCgroup } from './cgroup.ts';

export interface ContainerdAttestorOptions {
  readonly socketPath?: string;
  /** containerd namespace; Kubernetes uses k8s.io. */
  readonly namespace?: string;
  readonly proc?: string;
}

const GET_CONTAINER = '/containerd.services.containers.v1.Containers/Get';
const GET_IMAGE = '/containerd.services.images.v1.Images/Get';

interface ContainerMsg {
  id: string;
  labels: Map<string, string>;
  image: string;
}

function decodeMap(buf: Buffer): [string, string] {
  let k = '';
  let v = '';
  for (const f of fields(buf)) {
    if (f.field === 1) k = f.data.toString('utf8');
    else if (f.field === 2) v = f.data.toString('utf8');
  }
  return [k, v];
}

/** GetContainerResponse{container = 1}; Container{id = 1, labels = 2, image = 3}. */
export function decodeGetContainerResponse(buf: Buffer): ContainerMsg | undefined {
  const c = fields(buf).find((f) => f.field === 1 && f.wire === 2);
  if (!c) return undefined;
  const out: ContainerMsg = { id: '', labels: new Map(), image: '' };
  for (const f of fields(c.data)) {
    if (f.wire !== 2) continue;
    if (f.field === 1) out.id = f.data.toString('utf8');
    else if (f.field === 2) out.labels.set(...decodeMap(f.data));
    else if (f.field === 3) out.image = f.data.toString('utf8');
  }
  return out;
}

/** GetImageResponse{image = 1}; Image{name = 1, labels = 2, target = 3}; Descriptor{media_type = 1, digest = 2}. */
export function decodeGetImageDigest(buf: Buffer): string | undefined {
  const img = fields(buf).find((f) => f.field === 1 && f.wire === 2);
  const target = img && fields(img.data).find((f) => f.field === 3 && f.wire === 2);
  const digest = target && fields(target.data).find((f) => f.field === 2 && f.wire === 2);
  return digest?.data.toString('utf8');
}

export function containerdAttestor(opts: ContainerdAttestorOptions = {}): (cred: PeerCred) => Promise<Attestation> {
  const socketPath = opts.socketPath ?? '/run/containerd/containerd.sock';
  const namespace = opts.namespace ?? 'k8s.io';
  const md = { 'containerd-namespace': namespace };
  return async (cred) => {
    const { containerId } = readCgroup(cred.pid, opts.proc);
    if (!containerId) return { selectors: [] };
    const client = new GrpcClient(`unix://${socketPath}`);
    try {
      let res: Buffer;
      try {
        res = await client.unary(GET_CONTAINER, new Writer().string(1, containerId).finish(), md);
      } catch (err) {
        if (err instanceof GrpcError && err.code === GRPC_STATUS.NOT_FOUND) return { selectors: [] };
        throw new WritError('ERR_REQUEST_FAILED', `containerd: ${(err as Error).message}`);
      }
      const c = decodeGetContainerResponse(res);
      if (!c) return { selectors: [] };
      const out = [`containerd:namespace:${namespace}`, ...[...c.labels].map(([k, v]) => `containerd:label:${k}:${v}`)];
      if (c.image) {
        out.push(`containerd:image:${c.image}`);
        const digest = decodeGetImageDigest(await client.unary(GET_IMAGE, new Writer().string(1, c.image).finish(), md).catch(() => Buffer.alloc(0)));
        if (digest) out.push(`containerd:image_digest:${digest}`);
      }
      return { selectors: out, containerId };
    } finally {
      client.close();
    }
  };
}
