/**
 * A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8, /usr/bin/docker-registry)
 * as a child process on loopback, TLS from a test CA made with openssl, storage in a temp dir, basic
 * auth through its own htpasswd support (bcrypt from `htpasswd -B`, apache2-utils).
 *
 * Distribution 2.8 has no standalone token server and no OCI 1.1 referrers API, so for
 * `auth: 'bearer'` and `referrers: true` the fixture puts a small HTTPS front of its own in front of
 * the real registry: it forwards every request unchanged, and only (a) asks for and checks bearer
 * tokens from its `/token` endpoint (Docker token protocol: WWW-Authenticate challenge, basic
 * credentials at the realm, `{token, expires_in}`), and (b) remembers the `subject` of each manifest
 * pushed through it, answers `GET /v2/<name>/referrers/<digest>` from that, and returns `OCI-Subject`
 * on such pushes (so cosign and go-containerregistry use the API instead of the tag fallback).
 * Everything else — storage, manifests, blobs, digests, htpasswd — is the real registry's.
 *
 * Also `startHostileRegistry(kind)`: small HTTPS fakes that answer badly (slow, garbage, redirect
 * loops, huge or mis-digested manifests) for the client's bad-input tests.
 *
 * The front and the fakes run in the test's own process: drive outside clients (cosign, skopeo)
 * with async child processes (`execFile`, `spawn`), never `execFileSync`, or nothing answers them.
 * For cosign: `--registry-cacert=<caFile>` (or SSL_CERT_FILE), and `DOCKER_CONFIG=<dockerConfigDir()>`
 * when there is auth.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, request as httpsRequest, Agent, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export const REGISTRY_BINARY = '/usr/bin/docker-registry';

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

export interface TestCa {
  readonly dir: string;
  readonly caPem: string;
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/** A test CA and a server certificate for 127.0.0.1, ::1 and localhost, written into dir. */
export function makeTestCa(dir: string): TestCa {
  const f = (n: string): string => join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const openssl = (...args: string[]): void => void execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  openssl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=writ test registry CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  );
  openssl('req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1');
  writeFileSync(
    f('server.ext'),
    'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n',
  );
  openssl(
    'x509',
    '-req',
    '-in',
    f('server.csr'),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-out',
    f('server.pem'),
    '-days',
    '2',
    '-extfile',
    f('server.ext'),
  );
  const read = (n: string): string => readFileSync(f(n), 'utf8');
  return {
    dir,
    caPem: read('ca.pem'),
    caFile: f('ca.pem'),
    certFile: f('server.pem'),
    keyFile: f('server.key'),
    certPem: read('server.pem'),
    keyPem: read('server.key'),
  };
}

export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** A pushed manifest or index. */
export interface PushedManifest {
  readonly digest: string;
  readonly mediaType: string;
  readonly size: number;
  readonly bytes: Buffer;
}

export interface PushedImage extends PushedManifest {
  readonly repository: string;
  readonly tag: string | undefined;
  /** `host/repository@digest`. */
  readonly ref: string;
  /** For an index or manifest list: its children, in order. */
  readonly children: readonly PushedManifest[];
}

export interface PushImageOptions {
  /** Number of layers (1 or more; default 1). */
  readonly layers?: number;
  /** Changes the image's bytes, so two pushes make two digests (default: random). */
  readonly seed?: string;
  /** Docker v2 schema 2 instead of OCI (default OCI). */
  readonly docker?: boolean;
  readonly platform?: { readonly os: string; readonly architecture: string; readonly variant?: string };
  /** Extra top-level fields for the manifest (`subject`, `artifactType`, `annotations`). */
  readonly extra?: Record<string, unknown>;
}

export type RegistryAuth = 'none' | 'basic' | 'bearer';

export interface StartRegistryOptions {
  readonly auth?: RegistryAuth;
  /** Serve the OCI 1.1 referrers API (through the front). Default false: like distribution 2.8, a 404. */
  readonly referrers?: boolean;
  /** Listen on [::1] instead of 127.0.0.1. */
  readonly ipv6?: boolean;
  /** Bearer token lifetime the token endpoint announces (seconds, default 300). */
  readonly tokenTtlSeconds?: number;
  /** The token endpoint waits this long before answering (default 0): a slow auth server. */
  readonly tokenDelayMs?: number;
  /** With bearer auth: a token request without credentials gets pull access, as on Docker Hub (default false). */
  readonly anonymousPull?: boolean;
}

export interface TestRegistry {
  /** `127.0.0.1:PORT` (or `[::1]:PORT`): what clients talk to (the front, when there is one). */
  readonly host: string;
  readonly caPem: string;
  readonly caFile: string;
  readonly auth: RegistryAuth;
  readonly username: string;
  readonly password: string;
  /** Counters the front keeps (zero without a front): requests seen and token requests answered. */
  readonly stats: { requests: number; tokenRequests: number };
  /** `host/repository[:tag]`. */
  ref(repository: string, tagOrDigest?: string): string;
  pushBlob(repository: string, bytes: Uint8Array): Promise<string>;
  /** Pushes raw manifest bytes under a tag or by digest; returns their digest. */
  pushManifest(repository: string, reference: string | undefined, bytes: Uint8Array, mediaType: string): Promise<PushedManifest>;
  /** A small single-platform image (config + layers), tagged when a tag is given. */
  pushImage(repository: string, tag?: string, opts?: PushImageOptions): Promise<PushedImage>;
  /** A multi-arch OCI image index (default linux/amd64 + linux/arm64). */
  pushIndex(repository: string, tag?: string, platforms?: readonly string[]): Promise<PushedImage>;
  /** A Docker v2 manifest list of Docker v2 manifests (default linux/amd64 + linux/arm64). */
  pushDockerList(repository: string, tag?: string, platforms?: readonly string[]): Promise<PushedImage>;
  /** A folder with a Docker `config.json` holding this registry's credentials: `DOCKER_CONFIG` for cosign, skopeo, crane. */
  dockerConfigDir(): string;
  stop(): Promise<void>;
}

/** A free TCP port on the given loopback address. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a !== null ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** A minimal ustar archive with one file: an honest layer. */
function tarWith(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 100, 'utf8');
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(`${content.length.toString(8).padStart(11, '0')}\0`, 124);
  header.write('00000000000\0', 136);
  header.write('        ', 148);
  header.write('0', 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  const pad = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([header, content, pad, Buffer.alloc(1024)]);
}

/** The HTTP side of pushing, shared by the fixture's helpers (through the front when there is one). */
class Pusher {
  readonly #base: string;
  readonly #agent: Agent;
  readonly #authorization: (repository: string) => string | undefined;

  constructor(host: string, caPem: string, authorization: (repository: string) => string | undefined) {
    this.#base = `https://${host}`;
    this.#agent = new Agent({ ca: caPem, keepAlive: true });
    this.#authorization = authorization;
  }

  request(
    method: string,
    url: string,
    repository: string,
    body?: Uint8Array,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
    const target = new URL(url, this.#base);
    const auth = this.#authorization(repository);
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        target,
        {
          method,
          agent: this.#agent,
          headers: { ...headers, ...(auth === undefined ? {} : { authorization: auth }), 'content-length': String(body?.length ?? 0) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  async blob(repository: string, bytes: Uint8Array): Promise<string> {
    const digest = sha256Digest(bytes);
    const head = await this.request('HEAD', `/v2/${repository}/blobs/${digest}`, repository);
    if (head.status === 200) return digest;
    const start = await this.request('POST', `/v2/${repository}/blobs/uploads/`, repository);
    const location = start.headers.location;
    if (start.status !== 202 || location === undefined) throw new Error(`blob upload start: ${start.status} ${start.body.toString()}`);
    const put = `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;
    const done = await this.request('PUT', put, repository, bytes, { 'content-type': 'application/octet-stream' });
    if (done.status !== 201) throw new Error(`blob upload: ${done.status} ${done.body.toString()}`);
    return digest;
  }

  async manifest(repository: string, reference: string, bytes: Uint8Array, mediaType: string): Promise<void> {
    const r = await this.request('PUT', `/v2/${repository}/manifests/${reference}`, repository, bytes, { 'content-type': mediaType });
    if (r.status !== 201) throw new Error(`manifest push ${repository}:${reference}: ${r.status} ${r.body.toString()}`);
  }

  close(): void {
    this.#agent.destroy();
  }
}

function parsePlatform(p: string): { os: string; architecture: string; variant?: string } {
  const [os = 'linux', architecture = 'amd64', variant] = p.split('/');
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

/** The push helpers over a Pusher (the same for every auth mode). */
function pushHelpers(host: string, pusher: Pusher): Pick<TestRegistry, 'pushBlob' | 'pushManifest' | 'pushImage' | 'pushIndex' | 'pushDockerList' | 'ref'> {
  const ref = (repository: string, tagOrDigest?: string): string =>
    tagOrDigest === undefined ? `${host}/${repository}` : `${host}/${repository}${tagOrDigest.includes(':') ? '@' : ':'}${tagOrDigest}`;
  const pushManifest = async (repository: string, reference: string | undefined, bytes: Uint8Array, mediaType: string): Promise<PushedManifest> => {
    const digest = sha256Digest(bytes);
    await pusher.manifest(repository, reference ?? digest, bytes, mediaType);
    return { digest, mediaType, size: bytes.length, bytes: Buffer.from(bytes) };
  };
  const pushImage = async (repository: string, tag?: string, opts: PushImageOptions = {}): Promise<PushedImage> => {
    const seed = opts.seed ?? randomBytes(8).toString('hex');
    const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
    const layers: { digest: string; size: number; diffId: string }[] = [];
    for (let i = 0; i < (opts.layers ?? 1); i++) {
      const tar = tarWith(`writ-test/layer-${i}.txt`, Buffer.from(`writ test image ${seed}, layer ${i}\n`));
      const gz = gzipSync(tar);
      layers.push({ digest: await pusher.blob(repository, gz), size: gz.length, diffId: sha256Digest(tar) });
    }
    const config = Buffer.from(
      JSON.stringify({
        ...platform,
        created: '2026-01-01T00:00:00Z',
        config: { Cmd: ['/bin/true'], Labels: { 'dev.writ.test.seed': seed } },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      }),
    );
    const configDigest = await pusher.blob(repository, config);
    const docker = opts.docker === true;
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: docker ? MEDIA_TYPES.dockerManifest : MEDIA_TYPES.ociManifest,
        config: { mediaType: docker ? MEDIA_TYPES.dockerConfig : MEDIA_TYPES.ociConfig, digest: configDigest, size: config.length },
        layers: layers.map((l) => ({ mediaType: docker ? MEDIA_TYPES.dockerLayer : MEDIA_TYPES.ociLayer, digest: l.digest, size: l.size })),
        ...opts.extra,
      }),
    );
    const pushed = await pushManifest(repository, tag, manifest, docker ? MEDIA_TYPES.dockerManifest : MEDIA_TYPES.ociManifest);
    return { ...pushed, repository, tag, ref: ref(repository, pushed.digest), children: [] };
  };
  const pushList = async (repository: string, tag: string | undefined, platforms: readonly string[], docker: boolean): Promise<PushedImage> => {
    const children: PushedManifest[] = [];
    const entries: unknown[] = [];
    for (const p of platforms) {
      const platform = parsePlatform(p);
      const child = await pushImage(repository, undefined, { platform, docker });
      children.push(child);
      entries.push({ mediaType: child.mediaType, digest: child.digest, size: child.size, platform });
    }
    const mediaType = docker ? MEDIA_TYPES.dockerList : MEDIA_TYPES.ociIndex;
    const pushed = await pushManifest(repository, tag, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, manifests: entries })), mediaType);
    return { ...pushed, repository, tag, ref: ref(repository, pushed.digest), children };
  };
  return {
    ref,
    pushBlob: (repository, bytes) => pusher.blob(repository, bytes),
    pushManifest,
    pushImage,
    pushIndex: (repository, tag, platforms = ['linux/amd64', 'linux/arm64']) => pushList(repository, tag, platforms, false),
    pushDockerList: (repository, tag, platforms = ['linux/amd64', 'linux/arm64']) => pushList(repository, tag, platforms, true),
  };
}

async function waitReady(host: string, caPem: string, child: ChildProcess, log: () => string): Promise<void> {
  const agent = new Agent({ ca: caPem });
  try {
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}: ${log()}`);
      const ok = await new Promise<boolean>((resolve) => {
        const req = httpsRequest(`https://${host}/v2/`, { agent, timeout: 1000 }, (res) => {
          res.resume();
          resolve(res.statusCode === 200 || res.statusCode === 401);
        });
        req.on('error', () => resolve(false));
        req.on('timeout', () => req.destroy());
        req.end();
      });
      if (ok) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`docker-registry did not answer on ${host}: ${log()}`);
  } finally {
    agent.destroy();
  }
}

/** Scopes a bearer token grants, as `repository:name:action`. */
interface Grant {
  readonly scopes: ReadonlySet<string>;
  readonly expiresAt: number;
}

interface Front {
  readonly port: number;
  stop(): Promise<void>;
}

const SERVICE = 'writ-test-registry';

/**
 * The fixture's HTTPS front (bearer tokens and/or referrers) before the real registry on backendHost.
 * It forwards the Host header unchanged, so the registry's upload Locations point at the front.
 */
async function startFront(opts: {
  listen: string;
  ca: TestCa;
  backendHost: string;
  bearer: boolean;
  referrers: boolean;
  username: string;
  password: string;
  tokenTtlSeconds: number;
  tokenDelayMs: number;
  anonymousPull: boolean;
  stats: { requests: number; tokenRequests: number };
  grants: Map<string, Grant>;
}): Promise<Front> {
  const backend = new Agent({ ca: opts.ca.caPem, keepAlive: true });
  /** referrers[repository][subject digest] = descriptors of manifests naming it. */
  const referrers = new Map<string, Map<string, Record<string, unknown>[]>>();
  let port = 0;
  const realm = (): string => `https://${opts.listen.includes(':') ? `[${opts.listen}]` : opts.listen}:${port}/token`;

  const token = (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    opts.stats.tokenRequests++;
    const expected = `Basic ${Buffer.from(`${opts.username}:${opts.password}`).toString('base64')}`;
    const anonymous = req.headers.authorization === undefined && opts.anonymousPull;
    if (req.headers.authorization !== expected && !anonymous) {
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': `Basic realm="${SERVICE}"` });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'wrong credentials' }] }));
      return;
    }
    const scopes = new Set<string>();
    for (const scope of url.searchParams.getAll('scope')) {
      const [type, name, actions] = scope.split(':');
      if (type === 'repository' && name !== undefined && actions !== undefined)
        for (const a of actions.split(',')) if (!anonymous || a === 'pull') scopes.add(`repository:${name}:${a}`);
    }
    const t = randomBytes(24).toString('base64url');
    opts.grants.set(t, { scopes, expiresAt: Date.now() + opts.tokenTtlSeconds * 1000 });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token: t, access_token: t, expires_in: opts.tokenTtlSeconds, issued_at: new Date().toISOString() }));
  };

  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    body: Buffer | undefined,
    after?: (status: number, headers: Record<string, string>) => void,
  ): void => {
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !(opts.bearer && k === 'authorization')) headers[k] = v;
    if (body !== undefined) {
      headers['content-length'] = String(body.length);
      delete headers['transfer-encoding'];
    }
    const up = httpsRequest(`https://${opts.backendHost}${req.url ?? '/'}`, { method: req.method ?? 'GET', headers, agent: backend }, (upRes) => {
      const extra: Record<string, string> = {};
      after?.(upRes.statusCode ?? 502, extra);
      res.writeHead(upRes.statusCode ?? 502, { ...upRes.headers, ...extra });
      upRes.on('error', () => res.destroy());
      upRes.pipe(res);
    });
    // A client or the registry going away mid-request must not take the test process down.
    req.on('error', () => up.destroy());
    res.on('error', () => up.destroy());
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    if (body !== undefined) up.end(body);
    else req.pipe(up);
  };

  const server = createHttpsServer({ cert: opts.ca.certPem, key: opts.ca.keyPem }, (req, res) => {
    opts.stats.requests++;
    const url = new URL(req.url ?? '/', 'https://front');
    if (opts.bearer && url.pathname === '/token') return void setTimeout(() => token(req, res, url), opts.tokenDelayMs);
    const m = /^\/v2\/(.+?)\/(manifests|blobs|tags|referrers)\/(.*)$/.exec(url.pathname);
    const repository = m?.[1];
    if (opts.bearer && url.pathname.startsWith('/v2/')) {
      const action = req.method === 'GET' || req.method === 'HEAD' ? 'pull' : 'push';
      const scope = repository === undefined ? undefined : `repository:${repository}:${action}`;
      const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      const grant = given === undefined ? undefined : opts.grants.get(given);
      const valid = grant !== undefined && grant.expiresAt > Date.now() && (scope === undefined || grant.scopes.has(scope));
      if (!valid) {
        const scopeParam = repository === undefined ? '' : `,scope="repository:${repository}:${action === 'pull' ? 'pull' : 'pull,push'}"`;
        res.writeHead(401, {
          'content-type': 'application/json',
          'docker-distribution-api-version': 'registry/2.0',
          'www-authenticate': `Bearer realm="${realm()}",service="${SERVICE}"${scopeParam}`,
        });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        return;
      }
    }
    if (opts.referrers && m?.[2] === 'referrers' && repository !== undefined && (req.method === 'GET' || req.method === 'HEAD')) {
      const artifactType = url.searchParams.get('artifactType');
      let list = referrers.get(repository)?.get(m[3] ?? '') ?? [];
      if (artifactType !== null) list = list.filter((d) => d.artifactType === artifactType);
      const body = JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: list });
      res.writeHead(200, { 'content-type': MEDIA_TYPES.ociIndex, ...(artifactType === null ? {} : { 'oci-filters-applied': 'artifactType' }) });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    if (opts.referrers && m?.[2] === 'manifests' && repository !== undefined && req.method === 'PUT') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        let parsed: Record<string, unknown> | undefined;
        try {
          parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
        } catch {
          parsed = undefined;
        }
        const subject = (parsed?.subject as { digest?: unknown } | undefined)?.digest;
        forward(req, res, body, (status, extra) => {
          if (status !== 201 || typeof subject !== 'string' || parsed === undefined) return;
          const config = parsed.config as { mediaType?: unknown } | undefined;
          const artifactType =
            typeof parsed.artifactType === 'string' ? parsed.artifactType : typeof config?.mediaType === 'string' ? config.mediaType : undefined;
          const descriptor: Record<string, unknown> = {
            mediaType: typeof parsed.mediaType === 'string' ? parsed.mediaType : (req.headers['content-type'] ?? MEDIA_TYPES.ociManifest),
            digest: sha256Digest(body),
            size: body.length,
            ...(artifactType === undefined ? {} : { artifactType }),
            ...(typeof parsed.annotations === 'object' && parsed.annotations !== null ? { annotations: parsed.annotations } : {}),
          };
          const byRepo = referrers.get(repository) ?? new Map<string, Record<string, unknown>[]>();
          referrers.set(repository, byRepo);
          const list = (byRepo.get(subject) ?? []).filter((d) => d.digest !== descriptor.digest);
          list.push(descriptor);
          byRepo.set(subject, list);
          extra['oci-subject'] = subject;
        });
      });
      return;
    }
    forward(req, res, undefined);
  });
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, opts.listen, () => resolve());
  });
  const a = server.address();
  port = typeof a === 'object' && a !== null ? a.port : 0;
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        backend.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Registries still running: killed when the test process exits, even if a test never called stop(). */
const running = new Map<ChildProcess, string>();
let exitHook = false;
function track(child: ChildProcess, dir: string): void {
  running.set(child, dir);
  child.once('exit', () => running.delete(child));
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const [c, d] of running) {
        c.kill('SIGKILL');
        rmSync(d, { recursive: true, force: true });
      }
    });
  }
}

interface Backend {
  readonly child: ChildProcess;
  readonly backendHost: string;
  readonly exited: Promise<void>;
}

/** The real registry on a free loopback port; a port taken between the probe and the bind is retried. */
async function spawnRegistry(dir: string, listen: string, ca: TestCa, htpasswd: boolean): Promise<Backend> {
  if (!existsSync(REGISTRY_BINARY)) throw new Error(`${REGISTRY_BINARY} is missing (Debian package docker-registry)`);
  for (let attempt = 1; ; attempt++) {
    const backendHost = `${listen.includes(':') ? `[${listen}]` : listen}:${await freePort(listen)}`;
    writeFileSync(
      join(dir, 'config.yml'),
      [
        'version: 0.1',
        'log: { level: error, accesslog: { disabled: true } }',
        `storage: { filesystem: { rootdirectory: ${JSON.stringify(join(dir, 'data'))} }, delete: { enabled: true } }`,
        `http: { addr: ${JSON.stringify(backendHost)}, secret: ${JSON.stringify(randomBytes(16).toString('hex'))}, tls: { certificate: ${JSON.stringify(ca.certFile)}, key: ${JSON.stringify(ca.keyFile)} } }`,
        ...(htpasswd ? [`auth: { htpasswd: { realm: ${SERVICE}, path: ${JSON.stringify(join(dir, 'htpasswd'))} } }`] : []),
        '',
      ].join('\n'),
    );
    const child = spawn(REGISTRY_BINARY, ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child, dir);
    let output = '';
    const keep = (c: Buffer): void => {
      output = (output + c.toString()).slice(-4000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await waitReady(backendHost, ca.caPem, child, () => output);
      return { child, backendHost, exited };
    } catch (err) {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      if (attempt >= 3 || !/address already in use/.test(output)) throw err;
    }
  }
}

/**
 * Starts the real registry (and the front when bearer or referrers is asked for).
 *
 * @example
 *   const reg = await startRegistry({ auth: 'basic' });
 *   const img = await reg.pushImage('team/app', 'v1');   // img.digest, img.ref
 *   ...
 *   await reg.stop();
 */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  const auth = opts.auth ?? 'none';
  const referrersApi = opts.referrers ?? false;
  const listen = opts.ipv6 === true ? '::1' : '127.0.0.1';
  const bracket = (h: string, port: number): string => `${h.includes(':') ? `[${h}]` : h}:${port}`;
  const dir = mkdtempSync(join(tmpdir(), 'writ-registry-'));
  const ca = makeTestCa(dir);
  const username = 'writ-test';
  const password = randomBytes(12).toString('base64url');
  const htpasswd = auth === 'basic';
  if (htpasswd) {
    try {
      execFileSync('htpasswd', ['-Bbc', join(dir, 'htpasswd'), username, password], { stdio: 'ignore' });
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`htpasswd -B failed (Debian package apache2-utils): ${(err as Error).message}`);
    }
  }
  let backend: Backend;
  try {
    backend = await spawnRegistry(dir, listen, ca, htpasswd);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const { child, backendHost, exited } = backend;
  const stats = { requests: 0, tokenRequests: 0 };
  const grants = new Map<string, Grant>();
  let front: Front | undefined;
  const stopAll = async (): Promise<void> => {
    await front?.stop();
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (auth === 'bearer' || referrersApi) {
      front = await startFront({
        listen,
        ca,
        backendHost,
        bearer: auth === 'bearer',
        referrers: referrersApi,
        username,
        password,
        tokenTtlSeconds: opts.tokenTtlSeconds ?? 300,
        tokenDelayMs: opts.tokenDelayMs ?? 0,
        anonymousPull: opts.anonymousPull ?? false,
        stats,
        grants,
      });
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  const host = front === undefined ? backendHost : bracket(listen, front.port);
  const basic = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  const pushTokens = new Map<string, string>();
  const pusher = new Pusher(host, ca.caPem, (repository) => {
    if (auth === 'basic') return basic;
    if (auth !== 'bearer') return undefined;
    // The fixture mints its own (random) push token rather than walking the token protocol for every push.
    let t = pushTokens.get(repository);
    if (t === undefined) {
      t = randomBytes(24).toString('base64url');
      pushTokens.set(repository, t);
      grants.set(t, { scopes: new Set([`repository:${repository}:pull`, `repository:${repository}:push`]), expiresAt: Number.MAX_SAFE_INTEGER });
    }
    return `Bearer ${t}`;
  });
  return {
    host,
    caPem: ca.caPem,
    caFile: ca.caFile,
    auth,
    username,
    password,
    stats,
    ...pushHelpers(host, pusher),
    dockerConfigDir: () => {
      const d = join(dir, 'docker-config');
      mkdirSync(d, { recursive: true });
      const auths = auth === 'none' ? {} : { [host]: { auth: Buffer.from(`${username}:${password}`).toString('base64') } };
      writeFileSync(join(d, 'config.json'), JSON.stringify({ auths }), { mode: 0o600 });
      return d;
    },
    stop: async () => {
      pusher.close();
      await stopAll();
    },
  };
}

export type HostileKind =
  /** Accepts the connection and the request, never answers. */
  | 'slow'
  /** Answers headers at once, then one byte of the body per second. */
  | 'slow-body'
  /** 200 with an OCI manifest media type and a body that is not JSON. */
  | 'garbage'
  /** 200 with a JSON body that is not a manifest (no config/layers). */
  | 'not-a-manifest'
  /** 200 with Content-Type text/html. */
  | 'wrong-media-type'
  /** Redirects /a → /b → /a ... */
  | 'redirect-loop'
  /** Redirects to a new path every time, forever. */
  | 'redirect-chain'
  /** A manifest announced as 64 MiB (Content-Length) and streamed. */
  | 'huge-manifest'
  /** A manifest streamed without Content-Length, forever (chunked). */
  | 'endless-manifest'
  /** A valid manifest whose Docker-Content-Digest (and digest reference) do not match its bytes. */
  | 'wrong-digest'
  /** 503 to everything. */
  | 'unavailable'
  /** A bearer challenge whose token is accepted by the token endpoint but refused by the registry. */
  | 'auth-loop'
  /** Bytes that are not HTTP at all. */
  | 'not-http'
  /** A manifest announced longer than what is sent before the connection drops. */
  | 'truncated'
  /** A 404 whose body never ends. */
  | 'endless-error'
  /** A bearer challenge whose token endpoint answers 200 with HTML. */
  | 'bad-token';

export interface HostileRegistry {
  readonly host: string;
  readonly caPem: string;
  readonly caFile: string;
  /** Requests received so far. */
  readonly stats: { requests: number };
  stop(): Promise<void>;
}

const GOOD_MANIFEST = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: `sha256:${'a'.repeat(64)}`, size: 2 },
    layers: [],
  }),
);

/** A fake HTTPS registry that misbehaves in one way (see HostileKind); /v2/ answers 200 except where the kind is about everything. */
export async function startHostileRegistry(kind: HostileKind): Promise<HostileRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-hostile-'));
  const ca = makeTestCa(dir);
  const stats = { requests: 0 };
  const timers = new Set<NodeJS.Timeout>();
  let port = 0;
  const server: Server = createHttpsServer({ cert: ca.certPem, key: ca.keyPem }, (req, res) => {
    stats.requests++;
    const path = new URL(req.url ?? '/', 'https://h').pathname;
    const manifestHeaders = { 'content-type': MEDIA_TYPES.ociManifest };
    if (kind === 'unavailable') return void res.writeHead(503).end('down for maintenance');
    if (kind === 'redirect-loop') return void res.writeHead(307, { location: path === '/a' ? '/b' : '/a' }).end();
    if (kind === 'redirect-chain') return void res.writeHead(302, { location: `/r/${stats.requests}` }).end();
    if (kind === 'slow') return; // never answers; stop() destroys the socket
    if (kind === 'not-http') return void res.socket?.end('SSH-2.0-OpenSSH_9.2\r\n\r\n');
    if (kind === 'truncated' && path !== '/v2/') {
      res.writeHead(200, { ...manifestHeaders, 'content-length': String(GOOD_MANIFEST.length) });
      res.write(GOOD_MANIFEST.subarray(0, 10));
      return void setTimeout(() => res.destroy(), 20);
    }
    if (kind === 'endless-error') {
      res.writeHead(404, { 'content-type': 'application/json' });
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write(Buffer.alloc(16 * 1024, 0x20))), 1);
      return void timers.add(t);
    }
    if (kind === 'bad-token') {
      if (path === '/token') return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html>sign in</html>');
      return void res.writeHead(401, { 'www-authenticate': `Bearer realm="https://127.0.0.1:${port}/token",service="hostile"` }).end();
    }
    if (kind === 'auth-loop') {
      if (path === '/token') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'useless', expires_in: 300 }));
      return void res.writeHead(401, { 'www-authenticate': `Bearer realm="https://127.0.0.1:${port}/token",service="hostile"` }).end();
    }
    if (path === '/v2/' || path === '/v2') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    switch (kind) {
      case 'garbage':
        return void res.writeHead(200, manifestHeaders).end('<<<this is not json>>>{{{');
      case 'not-a-manifest':
        return void res.writeHead(200, manifestHeaders).end(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, hello: 'world' }));
      case 'wrong-media-type':
        return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html>login page</html>');
      case 'wrong-digest':
        return void res.writeHead(200, { ...manifestHeaders, 'docker-content-digest': `sha256:${'b'.repeat(64)}` }).end(GOOD_MANIFEST);
      case 'huge-manifest':
      case 'endless-manifest':
      case 'slow-body': {
        if (kind === 'huge-manifest') res.writeHead(200, { ...manifestHeaders, 'content-length': String(64 * 1024 * 1024) });
        else if (kind === 'slow-body') res.writeHead(200, { ...manifestHeaders, 'content-length': String(GOOD_MANIFEST.length) });
        else res.writeHead(200, manifestHeaders);
        const chunk = kind === 'slow-body' ? Buffer.from(' ') : Buffer.alloc(64 * 1024, 0x20);
        const t = setInterval(
          () => {
            if (res.destroyed) return void clearInterval(t);
            res.write(chunk);
          },
          kind === 'slow-body' ? 1000 : 1,
        );
        timers.add(t);
        return;
      }
    }
  });
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const a = server.address();
  port = typeof a === 'object' && a !== null ? a.port : 0;
  return {
    host: `127.0.0.1:${port}`,
    caPem: ca.caPem,
    caFile: ca.caFile,
    stats,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearInterval(t);
        for (const s of sockets) s.destroy();
        server.close(() => {
          rmSync(dir, { recursive: true, force: true });
          resolve();
        });
      }),
  };
}
