/**
 * `writ csi`: a node plugin of the Kubernetes Container Storage Interface (CSI v1, gRPC package
 * `csi.v1` on a Unix socket) whose one volume is the agent's Workload API socket directory,
 * bind-mounted read-only into a pod, as the SPIFFE CSI driver does. A pod asks for it with an
 * inline ephemeral volume (`csi: { driver: csi.writ.dev, readOnly: true }`), so workload namespaces
 * need no hostPath. There is nothing to provision: no controller capabilities, no staging.
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, rmdirSync, unlinkSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createServer, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { isAbsolute, normalize } from 'node:path';
import { GRPC_STATUS, GrpcError, ProtoError, Writer, acceptUnaryRequest, fields } from '@writ/sdk/internal';

export const CSI_DRIVER_NAME = 'csi.writ.dev';
const MAX_REQUEST_BYTES = 64 * 1024;

/** How the plugin mounts; the real one runs mount(8), tests may pass a fake. */
export interface Mounter {
  isMountPoint(path: string): boolean;
  bindReadOnly(source: string, target: string): void;
  unmount(target: string): void;
}

export interface CsiPluginOptions {
  /** The CSI endpoint: a Unix socket path the kubelet (or csi-sanity) connects to. */
  readonly endpoint: string;
  /** The agent's socket directory: what every volume shows. */
  readonly workloadApiDir: string;
  /** This node's name (NodeGetInfo). */
  readonly nodeId: string;
  readonly version: string;
  readonly mounter?: Mounter;
}

/** mount(8) and umount(8) from util-linux, and /proc/self/mountinfo. */
export function systemMounter(): Mounter {
  const bin = (name: string): string => [`/usr/bin/${name}`, `/bin/${name}`].find((p) => existsSync(p)) ?? name;
  const run = (cmd: string, args: string[]): void => {
    try {
      execFileSync(bin(cmd), args, { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      throw new GrpcError(GRPC_STATUS.INTERNAL, `${cmd} ${args.join(' ')}: ${String((err as { stderr?: Buffer }).stderr ?? '').trim()}`);
    }
  };
  return {
    isMountPoint(path) {
      // Field 5 of each line is the mount point, with spaces and the like escaped as \ooo.
      const esc = path.replace(/[\s\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
      return readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .some((l) => l.split(' ')[4] === esc);
    },
    bindReadOnly(source, target) {
      run('mount', ['--bind', source, target]);
      run('mount', ['-o', 'remount,bind,ro,nosuid,nodev,noexec', target]);
    },
    unmount(target) {
      run('umount', [target]);
    },
  };
}

// ------------------------------------------------------------------ messages (csi.proto field numbers)

interface PublishRequest {
  volumeId: string;
  targetPath: string;
  hasCapability: boolean;
  block: boolean;
  readonly: boolean;
}

function str(data: Buffer): string {
  return data.toString('utf8');
}

function decodePublish(buf: Buffer): PublishRequest {
  const r: PublishRequest = { volumeId: '', targetPath: '', hasCapability: false, block: false, readonly: false };
  for (const f of fields(buf)) {
    if (f.field === 1 && f.wire === 2) r.volumeId = str(f.data);
    else if (f.field === 4 && f.wire === 2) r.targetPath = str(f.data);
    else if (f.field === 5 && f.wire === 2) {
      r.hasCapability = true;
      for (const c of fields(f.data)) if (c.field === 1 && c.wire === 2) r.block = true; // VolumeCapability.block
    } else if (f.field === 6 && f.wire === 0) r.readonly = f.int !== 0;
  }
  return r;
}

function decodeUnpublish(buf: Buffer): { volumeId: string; targetPath: string } {
  const r = { volumeId: '', targetPath: '' };
  for (const f of fields(buf)) {
    if (f.field === 1 && f.wire === 2) r.volumeId = str(f.data);
    else if (f.field === 2 && f.wire === 2) r.targetPath = str(f.data);
  }
  return r;
}

const EMPTY = Buffer.alloc(0);
/** ControllerGetCapabilitiesResponse { capabilities: [{ rpc: { type: UNKNOWN } }] }. */
const CONTROLLER_NOTHING = new Writer().message(1, new Writer().message(1, EMPTY).finish()).finish();
const invalid = (msg: string): GrpcError => new GrpcError(GRPC_STATUS.INVALID_ARGUMENT, msg);

function checkTarget(p: string): void {
  if (!p) throw invalid('target_path is required');
  if (!isAbsolute(p) || normalize(p) !== p || p.split('/').includes('..')) throw invalid('target_path must be an absolute, normalized path');
}

/** The plugin: Identity, Node and the one Controller call a CO asks every plugin (capabilities: none). */
export class CsiNodePlugin {
  readonly #o: CsiPluginOptions;
  readonly #mounter: Mounter;
  readonly #server: Http2Server;
  readonly #sockets = new Set<Socket>();

  constructor(opts: CsiPluginOptions) {
    this.#o = opts;
    this.#mounter = opts.mounter ?? systemMounter();
    this.#server = createServer({ settings: { maxConcurrentStreams: 100 } });
    this.#server.on('sessionError', () => undefined);
    this.#server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    this.#server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) =>
      acceptUnaryRequest(stream, headers, MAX_REQUEST_BYTES, (call, request) => {
        try {
          call.send(this.handle(call.method, request));
          call.end();
        } catch (err) {
          if (err instanceof ProtoError) call.end(GRPC_STATUS.INVALID_ARGUMENT, `malformed request: ${err.message}`);
          else call.fail(err);
        }
      }),
    );
  }

  async listen(): Promise<void> {
    const p = this.#o.endpoint;
    if (existsSync(p)) {
      if (!lstatSync(p).isSocket()) throw new Error(`${p} exists and is not a socket; refusing to replace it`);
      unlinkSync(p);
    }
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(p, () => resolve());
    });
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((r) => this.#server.close(() => r()));
  }

  /** One call: the method's full name and the request message; the response message or a GrpcError. */
  handle(method: string, request: Buffer): Buffer {
    switch (method) {
      case '/csi.v1.Identity/GetPluginInfo':
        return new Writer().string(1, CSI_DRIVER_NAME).string(2, this.#o.version).finish();
      case '/csi.v1.Identity/GetPluginCapabilities':
      case '/csi.v1.Identity/Probe':
      case '/csi.v1.Node/NodeGetCapabilities':
        return EMPTY; // none: no controller service, no staging, no stats; and always ready
      case '/csi.v1.Controller/ControllerGetCapabilities':
        // No controller service is advertised, so a CO never asks; csi-sanity's node suite does and
        // wants a list: one capability of type UNKNOWN (0), i.e. nothing.
        return CONTROLLER_NOTHING;
      case '/csi.v1.Node/NodeGetInfo':
        return new Writer().string(1, this.#o.nodeId).finish();
      case '/csi.v1.Node/NodePublishVolume':
        this.#publish(decodePublish(request));
        return EMPTY;
      case '/csi.v1.Node/NodeUnpublishVolume':
        this.#unpublish(decodeUnpublish(request));
        return EMPTY;
      default:
        throw new GrpcError(GRPC_STATUS.UNIMPLEMENTED, `${method.slice(0, 120)} is not implemented by ${CSI_DRIVER_NAME}`);
    }
  }

  #publish(r: PublishRequest): void {
    if (!r.volumeId) throw invalid('volume_id is required');
    checkTarget(r.targetPath);
    if (!r.hasCapability) throw invalid('volume_capability is required');
    if (r.block) throw invalid(`${CSI_DRIVER_NAME} volumes are directories: a block volume_capability is not supported`);
    if (this.#mounter.isMountPoint(r.targetPath)) return; // published already: the same answer again
    mkdirSync(r.targetPath, { recursive: true, mode: 0o755 });
    this.#mounter.bindReadOnly(this.#o.workloadApiDir, r.targetPath);
  }

  #unpublish(r: { volumeId: string; targetPath: string }): void {
    if (!r.volumeId) throw invalid('volume_id is required');
    checkTarget(r.targetPath);
    if (this.#mounter.isMountPoint(r.targetPath)) this.#mounter.unmount(r.targetPath);
    if (existsSync(r.targetPath)) rmdirSync(r.targetPath);
  }
}
