/**
 * A client of the OCI distribution API (registry HTTP API v2) over node:https: manifests and
 * indexes, blobs, OCI 1.1 referrers, tag → digest resolution. Auth: anonymous, basic, and bearer
 * tokens (the Docker token protocol: a `WWW-Authenticate: Bearer realm=...,service=...,scope=...`
 * challenge, a token fetched from the realm with basic credentials when configured, cached per
 * scope until it expires). Every digest is computed from the bytes received and checked against
 * the digest asked for and the registry's `Docker-Content-Digest`. Every call runs under the
 * caller's AbortSignal (the decision budget) and a per-request timeout; bodies are limited before
 * they are read (manifests 4 MiB); redirects at most 5, loops refused. One keep-alive agent per
 * registry: the webhook calls this on every first-seen image.
 */
import { createHash } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { WritError } from '@writ/spiffe';
import { isRegistryHost, isRepositoryPath, parseDigest, parseImageRef } from './reference.ts';
import { RegistryConfig, type RegistrySettings } from './registry-config.ts';
import type { Descriptor, ImageRef, Manifest, RegistryReader } from './types.ts';

export const MANIFEST_MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;
const INDEX_TYPES: ReadonlySet<string> = new Set([MANIFEST_MEDIA_TYPES.ociIndex, MANIFEST_MEDIA_TYPES.dockerList]);
const MANIFEST_TYPES: ReadonlySet<string> = new Set(Object.values(MANIFEST_MEDIA_TYPES));
const ACCEPT = Object.values(MANIFEST_MEDIA_TYPES).join(', ');

/** Manifests, indexes and referrers lists larger than this are refused unread. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_REDIRECTS = 5;
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const MAX_TOKEN_BYTES = 64 * 1024;
const MAX_ERROR_BODY_BYTES = 16 * 1024;
const MAX_REFERRER_PAGES = 10;
/** The Docker token spec's default lifetime when `expires_in` is absent. */
const DEFAULT_TOKEN_SECONDS = 60;
const TAG = /^[\w][\w.-]{0,127}$/;

type Repo = Pick<ImageRef, 'registry' | 'repository'>;

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export interface ResolveOptions {
  /** For an index: also pick the child manifest of this platform (the pinned digest stays the index's). */
  readonly platform?: Platform;
  readonly signal?: AbortSignal;
}

/** A reference resolved: the top-level manifest (index or manifest list included) that a pod pinned to it would pull. */
export interface ResolvedImage {
  readonly digest: string;
  readonly mediaType: string;
  readonly size: number;
  /** The platform's manifest inside an index, when a platform was asked for. */
  readonly platformManifest?: Descriptor;
}

export interface RegistryClientOptions {
  readonly config?: RegistryConfig;
  /** Per HTTP exchange, body included (default 10 s); the caller's signal bounds the whole call. */
  readonly requestTimeoutMs?: number;
  readonly userAgent?: string;
  /** Connections kept per registry (default 32). */
  readonly maxSockets?: number;
  /** Injected clock for token expiry (tests). */
  readonly now?: () => number;
}

interface Response {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  readonly url: URL;
}

interface Exchange {
  readonly host: string;
  readonly repo: string | undefined;
  readonly path: string;
  readonly accept: string;
  /** Bodies past this are refused (code given by tooLarge). */
  readonly limit: number;
  readonly tooLarge: 'ERR_MANIFEST_TOO_LARGE' | 'ERR_BLOB_TOO_LARGE' | 'ERR_REGISTRY_RESPONSE_INVALID';
  readonly signal: AbortSignal | undefined;
}

interface CachedToken {
  readonly authorization: string;
  readonly expiresAt: number;
}

function fail(code: string, message: string, cause?: unknown): WritError {
  return new WritError(code, message, cause === undefined ? undefined : { cause });
}

/** The API host of a registry name (Docker Hub's name is not its API host). */
function apiHost(registry: string): string {
  return registry === 'docker.io' ? 'registry-1.docker.io' : registry;
}

function digestOf(bytes: Buffer, algorithm: string): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

function algorithmOf(digest: string): string {
  return digest.slice(0, digest.indexOf(':'));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses a challenge list: `Bearer realm="...",service="...", Basic realm="..."`. */
export function parseWwwAuthenticate(header: string): { scheme: string; params: Record<string, string> }[] {
  const out: { scheme: string; params: Record<string, string> }[] = [];
  const re = /\s*([A-Za-z][\w-]*)(?:\s+((?:[\w-]+\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^\s,"]*)\s*,?\s*)*))?\s*,?/y;
  let m: RegExpExecArray | null;
  while (re.lastIndex < header.length && (m = re.exec(header)) !== null && m[0] !== '') {
    const params: Record<string, string> = {};
    for (const p of (m[2] ?? '').matchAll(/([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))/g)) {
      params[p[1]!.toLowerCase()] = p[2] === undefined ? (p[3] ?? '') : p[2].replace(/\\(.)/g, '$1');
    }
    out.push({ scheme: m[1]!.toLowerCase(), params });
  }
  return out;
}

function checkDescriptor(d: unknown, where: string): Descriptor {
  if (!isObject(d)) throw new Error(`${where} is not an object`);
  if (typeof d.mediaType !== 'string' || d.mediaType === '') throw new Error(`${where}.mediaType is missing`);
  if (typeof d.digest !== 'string') throw new Error(`${where}.digest is missing`);
  try {
    parseDigest(d.digest);
  } catch {
    throw new Error(`${where}.digest is not a valid digest`);
  }
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw new Error(`${where}.size is not a non-negative integer`);
  if (d.artifactType !== undefined && typeof d.artifactType !== 'string') throw new Error(`${where}.artifactType is not a string`);
  return d as unknown as Descriptor;
}

/** Checks the shape a manifest or index of that media type must have. */
function checkManifestShape(json: Record<string, unknown>, mediaType: string): void {
  if (json.schemaVersion !== 2) throw new Error(json.schemaVersion === 1 ? 'Docker schema 1 manifests are not supported' : 'schemaVersion is not 2');
  if (INDEX_TYPES.has(mediaType)) {
    if (!Array.isArray(json.manifests)) throw new Error('an index without a manifests list');
    for (const [i, d] of json.manifests.entries()) checkDescriptor(d, `manifests[${i}]`);
  } else {
    checkDescriptor(json.config, 'config');
    if (!Array.isArray(json.layers)) throw new Error('a manifest without a layers list');
    for (const [i, d] of json.layers.entries()) checkDescriptor(d, `layers[${i}]`);
  }
  if (json.subject !== undefined) checkDescriptor(json.subject, 'subject');
}

function matchesPlatform(d: Descriptor, p: Platform): boolean {
  return d.platform?.os === p.os && d.platform.architecture === p.architecture && (p.variant === undefined || d.platform.variant === p.variant);
}

/**
 * The registry client. Safe to share: one instance per process keeps the connections and tokens.
 *
 * @example
 *   const client = new RegistryClient({ config: loadRegistryConfig('/etc/writ/registries.yaml') });
 *   const { digest } = await client.resolve('registry.example.com/team/app:v1', { signal: AbortSignal.timeout(2000) });
 */
export class RegistryClient implements RegistryReader {
  readonly #config: RegistryConfig;
  readonly #timeoutMs: number;
  readonly #userAgent: string;
  readonly #maxSockets: number;
  readonly #now: () => number;
  readonly #agents = new Map<string, HttpsAgent | HttpAgent>();
  /** Bearer tokens by `host scope`; concurrent fetches of one share the promise. */
  readonly #tokens = new Map<string, CachedToken>();
  readonly #tokenFetches = new Map<string, Promise<CachedToken>>();
  /** Hosts that asked for basic auth once: later requests send it at once. */
  readonly #basicHosts = new Set<string>();

  constructor(opts: RegistryClientOptions = {}) {
    this.#config = opts.config ?? new RegistryConfig();
    this.#timeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#userAgent = opts.userAgent ?? 'writ/0.1';
    this.#maxSockets = opts.maxSockets ?? 32;
    this.#now = opts.now ?? Date.now;
  }

  /**
   * Resolves a reference to the digest of its top-level manifest. A tag is looked up; a digest
   * reference is checked to exist (and its bytes to hash to it). `name:tag@digest` uses the digest.
   * @throws WritError ERR_IMAGE_NOT_FOUND, ERR_REGISTRY_*, ERR_DIGEST_MISMATCH, ERR_MANIFEST_TOO_LARGE
   */
  async resolve(ref: ImageRef | string, opts: ResolveOptions = {}): Promise<ResolvedImage> {
    const r = typeof ref === 'string' ? parseImageRef(ref) : ref;
    const reference = r.digest ?? r.tag ?? 'latest';
    const m = await this.manifest(r, reference, opts.signal);
    const name = `${r.registry}/${r.repository}${reference.includes(':') ? '@' : ':'}${reference}`;
    if (m === null) throw fail('ERR_IMAGE_NOT_FOUND', `${name} not found`);
    const resolved = { digest: m.digest, mediaType: m.mediaType, size: m.bytes.length };
    const platform = opts.platform;
    if (platform === undefined || !INDEX_TYPES.has(m.mediaType)) return resolved;
    const child = (m.json.manifests as Descriptor[]).find((d) => matchesPlatform(d, platform));
    const wanted = `${platform.os}/${platform.architecture}${platform.variant === undefined ? '' : `/${platform.variant}`}`;
    if (child === undefined) throw fail('ERR_IMAGE_NOT_FOUND', `${name} has no manifest for ${wanted}`);
    return { ...resolved, platformManifest: child };
  }

  /** A manifest or index by tag or digest; null on 404. Its digest is computed from the bytes and checked. */
  async manifest(repo: Repo, reference: string, signal?: AbortSignal): Promise<Manifest | null> {
    const byDigest = reference.includes(':');
    if (byDigest) parseDigest(reference);
    else if (!TAG.test(reference)) throw fail('ERR_IMAGE_REF_INVALID', `invalid tag ${JSON.stringify(reference.slice(0, 140))}`);
    const host = repo.registry;
    const res = await this.#exchange({
      host,
      repo: repo.repository,
      path: `/v2/${repo.repository}/manifests/${reference}`,
      accept: ACCEPT,
      limit: MAX_MANIFEST_BYTES,
      tooLarge: 'ERR_MANIFEST_TOO_LARGE',
      signal,
    });
    if (res.status === 404) return null;
    this.#expectOk(res, host, 'manifest');
    const what = `${host}/${repo.repository}${byDigest ? '@' : ':'}${reference}`;
    const invalid = (why: string): WritError => fail('ERR_REGISTRY_RESPONSE_INVALID', `${host} answered ${what} with ${why}`);
    const contentType = (res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const generic = contentType === '' || contentType === 'application/json';
    if (!generic && !MANIFEST_TYPES.has(contentType))
      throw invalid(`Content-Type ${JSON.stringify(contentType.slice(0, 100))}, not a manifest or index media type`);
    let json: unknown;
    try {
      json = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw invalid('a body that is not JSON');
    }
    if (!isObject(json)) throw invalid('JSON that is not an object');
    const declared = typeof json.mediaType === 'string' ? json.mediaType : undefined;
    let mediaType: string;
    if (MANIFEST_TYPES.has(contentType)) mediaType = contentType;
    else if (declared !== undefined && MANIFEST_TYPES.has(declared)) mediaType = declared;
    else throw invalid(`a generic Content-Type and no known mediaType in the body`);
    if (declared !== undefined && declared !== mediaType) throw invalid(`mediaType ${JSON.stringify(declared.slice(0, 100))} in a ${mediaType} answer`);
    try {
      checkManifestShape(json, mediaType);
    } catch (err) {
      throw invalid(`a malformed ${mediaType}: ${(err as Error).message}`);
    }
    const digest = this.#checkDigest(res, byDigest ? reference : undefined, host, what);
    return { digest, mediaType, bytes: res.body, json };
  }

  /** A blob, refused past maxBytes, its digest checked. */
  async blob(repo: Repo, digest: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
    parseDigest(digest);
    const host = repo.registry;
    const res = await this.#exchange({
      host,
      repo: repo.repository,
      path: `/v2/${repo.repository}/blobs/${digest}`,
      accept: '*/*',
      limit: maxBytes,
      tooLarge: 'ERR_BLOB_TOO_LARGE',
      signal,
    });
    const what = `${host}/${repo.repository}@${digest}`;
    if (res.status === 404) throw fail('ERR_IMAGE_NOT_FOUND', `blob ${what} not found`);
    this.#expectOk(res, host, 'blob');
    const actual = digestOf(res.body, algorithmOf(digest));
    if (actual !== digest) throw fail('ERR_DIGEST_MISMATCH', `${host} sent blob bytes for ${what} that hash to ${actual}`);
    return res.body;
  }

  /**
   * The OCI 1.1 referrers of a digest (GET /v2/<name>/referrers/<digest>), filtered by artifactType
   * (by the registry when it says so in OCI-Filters-Applied, else here). null when the registry
   * has no referrers API (404): then the `sha256-<hex>` tag fallback applies.
   */
  async referrers(repo: Repo, digest: string, artifactType?: string, signal?: AbortSignal): Promise<Descriptor[] | null> {
    parseDigest(digest);
    const host = repo.registry;
    const out: Descriptor[] = [];
    let path = `/v2/${repo.repository}/referrers/${digest}${artifactType === undefined ? '' : `?artifactType=${encodeURIComponent(artifactType)}`}`;
    for (let page = 0; page < MAX_REFERRER_PAGES; page++) {
      const res = await this.#exchange({
        host,
        repo: repo.repository,
        path,
        accept: MANIFEST_MEDIA_TYPES.ociIndex,
        limit: MAX_MANIFEST_BYTES,
        tooLarge: 'ERR_MANIFEST_TOO_LARGE',
        signal,
      });
      if (res.status === 404 && page === 0) return null;
      this.#expectOk(res, host, 'referrers list');
      const invalid = (why: string): WritError => fail('ERR_REGISTRY_RESPONSE_INVALID', `${host} answered the referrers of ${digest} with ${why}`);
      let json: unknown;
      try {
        json = JSON.parse(res.body.toString('utf8'));
      } catch {
        throw invalid('a body that is not JSON');
      }
      if (!isObject(json) || !Array.isArray(json.manifests)) throw invalid('something that is not an image index');
      if (json.mediaType !== undefined && json.mediaType !== MANIFEST_MEDIA_TYPES.ociIndex)
        throw invalid(`mediaType ${JSON.stringify(String(json.mediaType).slice(0, 100))}`);
      const manifests = json.manifests;
      try {
        for (const [i, d] of manifests.entries()) out.push(checkDescriptor(d, `manifests[${i}]`));
      } catch (err) {
        throw invalid((err as Error).message);
      }
      const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(String(res.headers.link ?? ''))?.[1];
      if (next === undefined) break;
      const nextUrl = new URL(next, res.url);
      if (nextUrl.host !== res.url.host) throw invalid('a next page on another host');
      path = nextUrl.pathname + nextUrl.search;
    }
    // Filtering here too is harmless when the registry already did, and needed when it did not.
    return artifactType === undefined ? out : out.filter((d) => d.artifactType === artifactType);
  }

  /** Closes the kept-alive connections. */
  close(): void {
    for (const a of this.#agents.values()) a.destroy();
    this.#agents.clear();
  }

  #checkDigest(res: Response, requested: string | undefined, host: string, what: string): string {
    const header = res.headers['docker-content-digest'];
    const announced = typeof header === 'string' && header !== '' ? header.trim() : undefined;
    if (announced !== undefined) {
      try {
        parseDigest(announced);
      } catch {
        throw fail('ERR_REGISTRY_RESPONSE_INVALID', `${host} answered ${what} with a malformed Docker-Content-Digest`);
      }
    }
    const algorithm = requested === undefined ? 'sha256' : algorithmOf(requested);
    const actual = digestOf(res.body, algorithm);
    if (requested !== undefined && actual !== requested) throw fail('ERR_DIGEST_MISMATCH', `${host} answered ${what} with bytes that hash to ${actual}`);
    if (announced !== undefined && digestOf(res.body, algorithmOf(announced)) !== announced) {
      throw fail('ERR_DIGEST_MISMATCH', `${host} announced Docker-Content-Digest ${announced} for ${what}, but the bytes hash to ${actual}`);
    }
    return requested ?? actual;
  }

  #expectOk(res: Response, host: string, what: string): void {
    if (res.status === 200) return;
    const detail = this.#errorDetail(res);
    if (res.status === 401 || res.status === 403) throw fail('ERR_REGISTRY_AUTH', `${host} refused access to the ${what} (${res.status}${detail})`);
    if (res.status === 429 || res.status >= 500) throw fail('ERR_REGISTRY_UNREACHABLE', `${host} answered ${res.status} for the ${what}${detail}`);
    throw fail('ERR_REGISTRY_RESPONSE_INVALID', `${host} answered ${res.status} for the ${what}${detail}`);
  }

  /** The registry's own error code (`MANIFEST_UNKNOWN`), never its free text (which could echo anything). */
  #errorDetail(res: Response): string {
    try {
      const j = JSON.parse(res.body.toString('utf8')) as { errors?: { code?: unknown }[] };
      const code = j.errors?.[0]?.code;
      return typeof code === 'string' && /^[A-Z_]{1,40}$/.test(code) ? `: ${code}` : '';
    } catch {
      return '';
    }
  }

  #settings(host: string): RegistrySettings {
    return this.#config.settingsFor(host);
  }

  #agent(host: string, settings: RegistrySettings): HttpsAgent | HttpAgent {
    let a = this.#agents.get(host);
    if (a === undefined) {
      const common = { keepAlive: true, maxSockets: this.#maxSockets, maxFreeSockets: 8, scheduling: 'lifo' as const };
      a = settings.insecureHttp ? new HttpAgent(common) : new HttpsAgent({ ...common, ...(settings.ca === undefined ? {} : { ca: settings.ca }) });
      this.#agents.set(host, a);
    }
    return a;
  }

  /** One logical request: auth challenges answered, redirects followed, under the caller's signal. */
  async #exchange(x: Exchange): Promise<Response> {
    // Callers may build the repository by hand: nothing but a valid name reaches a URL.
    if (!isRegistryHost(x.host)) throw fail('ERR_IMAGE_REF_INVALID', `invalid registry ${JSON.stringify(x.host.slice(0, 100))}`);
    if (x.repo !== undefined && !isRepositoryPath(x.repo)) throw fail('ERR_IMAGE_REF_INVALID', `invalid repository ${JSON.stringify(x.repo.slice(0, 100))}`);
    if (x.signal?.aborted) throw fail('ERR_REGISTRY_TIMEOUT', `no time left to ask ${x.host}`);
    const settings = this.#settings(x.host);
    const scope = x.repo === undefined ? undefined : `repository:${x.repo}:pull`;
    const base = `${settings.insecureHttp ? 'http' : 'https'}://${apiHost(x.host)}`;
    let authorization = this.#knownAuthorization(x.host, scope, settings);
    let res = await this.#follow(new URL(x.path, base), x, settings, authorization);
    if (res.status !== 401) return res;
    const challenges = parseWwwAuthenticate(String(res.headers['www-authenticate'] ?? ''));
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer !== undefined && settings.tokenAuthorization() === undefined) {
      // A token we sent and the registry no longer takes is dropped before asking for a new one.
      if (authorization !== undefined && scope !== undefined) this.#tokens.delete(`${x.host} ${scope}`);
      if (authorization !== undefined && bearer.params.scope !== undefined) this.#tokens.delete(`${x.host} ${bearer.params.scope}`);
      authorization = (await this.#token(x, settings, bearer.params, scope)).authorization;
    } else if (basic !== undefined && settings.basicAuthorization() !== undefined && authorization === undefined) {
      this.#basicHosts.add(x.host);
      authorization = settings.basicAuthorization();
    } else if (authorization === undefined) {
      throw fail('ERR_REGISTRY_AUTH', `${x.host} asks for credentials (${challenges[0]?.scheme ?? 'no challenge'}) and none are configured for it`);
    } else {
      throw fail('ERR_REGISTRY_AUTH', `${x.host} refused the configured credentials`);
    }
    res = await this.#follow(new URL(x.path, base), x, settings, authorization);
    if (res.status === 401) {
      if (scope !== undefined) this.#tokens.delete(`${x.host} ${scope}`);
      throw fail('ERR_REGISTRY_AUTH', `${x.host} refused the credentials${bearer === undefined ? '' : ' (bearer token)'}`);
    }
    return res;
  }

  #knownAuthorization(host: string, scope: string | undefined, settings: RegistrySettings): string | undefined {
    const token = settings.tokenAuthorization();
    if (token !== undefined) return token;
    if (scope !== undefined) {
      const cached = this.#tokens.get(`${host} ${scope}`);
      if (cached !== undefined && cached.expiresAt > this.#now()) return cached.authorization;
    }
    return this.#basicHosts.has(host) ? settings.basicAuthorization() : undefined;
  }

  /** A bearer token for the challenge's scope (or ours), from the cache or the realm; concurrent callers share one fetch. */
  async #token(x: Exchange, settings: RegistrySettings, params: Record<string, string>, ourScope: string | undefined): Promise<CachedToken> {
    const realm = params.realm;
    if (realm === undefined || realm === '') throw fail('ERR_REGISTRY_AUTH', `${x.host} asks for a bearer token without naming a realm`);
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
    } catch {
      throw fail('ERR_REGISTRY_AUTH', `${x.host} names a token realm that is not a URL`);
    }
    if (realmUrl.protocol !== 'https:' && !(realmUrl.protocol === 'http:' && settings.insecureHttp)) {
      throw fail('ERR_REGISTRY_AUTH', `${x.host} names a token realm that is not https (${realmUrl.protocol})`);
    }
    const scope = params.scope ?? ourScope;
    const key = `${x.host} ${scope ?? ''}`;
    const cached = this.#tokens.get(key);
    if (cached !== undefined && cached.expiresAt > this.#now()) return cached;
    let pending = this.#tokenFetches.get(key);
    if (pending === undefined) {
      // The shared fetch is bounded by the request timeout, not by the first caller's budget:
      // each caller waits for it under its own signal.
      pending = this.#fetchToken({ ...x, signal: undefined }, settings, realmUrl, params.service, scope).finally(() => this.#tokenFetches.delete(key));
      pending.catch(() => {});
      this.#tokenFetches.set(key, pending);
    }
    const token = await withSignal(pending, x.signal, x.host);
    // Cached under our own scope too, so the next request sends it without a challenge.
    if (ourScope !== undefined) this.#tokens.set(`${x.host} ${ourScope}`, token);
    this.#tokens.set(key, token);
    return token;
  }

  async #fetchToken(x: Exchange, settings: RegistrySettings, realm: URL, service: string | undefined, scope: string | undefined): Promise<CachedToken> {
    const url = new URL(realm);
    if (service !== undefined) url.searchParams.set('service', service);
    if (scope !== undefined) for (const s of scope.split(' ')) if (s !== '') url.searchParams.append('scope', s);
    if (settings.username !== undefined) url.searchParams.set('account', settings.username);
    // The realm may be another host: its own settings when it has some, else the registry's (its CA).
    const realmHost = url.host;
    const realmSettings = this.#config.hosts().includes(realmHost.toLowerCase()) ? this.#settings(realmHost) : settings;
    const started = this.#now();
    const res = await this.#follow(
      url,
      { ...x, host: realmHost, limit: MAX_TOKEN_BYTES, tooLarge: 'ERR_REGISTRY_RESPONSE_INVALID' },
      realmSettings,
      settings.basicAuthorization(),
      'application/json',
    );
    if (res.status === 401 || res.status === 403) throw fail('ERR_REGISTRY_AUTH', `the token endpoint of ${x.host} refused the credentials (${res.status})`);
    if (res.status !== 200)
      throw fail(res.status >= 500 ? 'ERR_REGISTRY_UNREACHABLE' : 'ERR_REGISTRY_AUTH', `the token endpoint of ${x.host} answered ${res.status}`);
    let json: unknown;
    try {
      json = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw fail('ERR_REGISTRY_AUTH', `the token endpoint of ${x.host} answered something that is not JSON`);
    }
    const token = isObject(json) ? (typeof json.token === 'string' && json.token !== '' ? json.token : json.access_token) : undefined;
    if (typeof token !== 'string' || token === '' || /[\s\0]/.test(token))
      throw fail('ERR_REGISTRY_AUTH', `the token endpoint of ${x.host} answered without a token`);
    const expiresIn = isObject(json) && typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : DEFAULT_TOKEN_SECONDS;
    // A few seconds early, so a token never expires between the check and the registry.
    return { authorization: `Bearer ${token}`, expiresAt: started + Math.max(1, expiresIn - 5) * 1000 };
  }

  /** GET with redirects (at most 5, no loops, no https → http, credentials only to the same host). */
  async #follow(start: URL, x: Exchange, settings: RegistrySettings, authorization: string | undefined, accept = x.accept): Promise<Response> {
    const seen = new Set<string>();
    let url = start;
    for (let hop = 0; ; hop++) {
      seen.add(url.href);
      const sameHost = url.host === start.host;
      const hopSettings = sameHost ? settings : this.#settings(url.host);
      const res = await this.#get(url, x, hopSettings, sameHost ? authorization : undefined, accept);
      if (![301, 302, 303, 307, 308].includes(res.status)) return res;
      const location = res.headers.location;
      if (location === undefined) throw fail('ERR_REGISTRY_RESPONSE_INVALID', `${x.host} answered ${res.status} without a Location`);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw fail('ERR_REGISTRY_RESPONSE_INVALID', `${x.host} redirected to something that is not a URL`);
      }
      if (seen.has(next.href)) throw fail('ERR_REGISTRY_RESPONSE_INVALID', `${x.host} redirects in a loop`);
      if (hop + 1 > MAX_REDIRECTS) throw fail('ERR_REGISTRY_RESPONSE_INVALID', `${x.host} redirected more than ${MAX_REDIRECTS} times`);
      if (next.protocol !== 'https:' && !(next.protocol === 'http:' && settings.insecureHttp)) {
        throw fail('ERR_REGISTRY_RESPONSE_INVALID', `${x.host} redirected to a ${next.protocol} URL`);
      }
      url = next;
    }
  }

  /** One HTTP GET, body limited, under the per-request timeout and the caller's signal; a stale kept-alive socket is retried once. */
  async #get(url: URL, x: Exchange, settings: RegistrySettings, authorization: string | undefined, accept: string): Promise<Response> {
    try {
      return await this.#getOnce(url, x, settings, authorization, accept);
    } catch (err) {
      if ((err as { reusedSocket?: boolean }).reusedSocket !== true) throw err;
      return await this.#getOnce(url, x, settings, authorization, accept);
    }
  }

  #getOnce(url: URL, x: Exchange, settings: RegistrySettings, authorization: string | undefined, accept: string): Promise<Response> {
    const host = x.host;
    const timeoutMs = this.#timeoutMs;
    const signal = x.signal;
    return new Promise<Response>((resolve, reject) => {
      let settled = false;
      const done = (err: WritError | undefined, res?: Response): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err !== undefined) {
          req.destroy();
          reject(err);
        } else resolve(res!);
      };
      const onAbort = (): void => done(fail('ERR_REGISTRY_TIMEOUT', `${host} did not answer within the time allowed`));
      const timer = setTimeout(() => done(fail('ERR_REGISTRY_TIMEOUT', `${host} did not answer within ${timeoutMs} ms`)), timeoutMs);
      const headers: Record<string, string> = { accept, 'user-agent': this.#userAgent };
      if (authorization !== undefined) headers.authorization = authorization;
      const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
      const req = send(url, { method: 'GET', headers, agent: this.#agent(url.host, settings) }, (res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        // Error and redirect bodies are read only a little: they are never the answer.
        const ok = status === 200;
        const limit = ok ? x.limit : MAX_ERROR_BODY_BYTES;
        const length = Number(res.headers['content-length']);
        if (ok && Number.isFinite(length) && length > limit) {
          return done(fail(x.tooLarge, `${host} announced ${length} bytes for ${url.pathname.slice(0, 200)}, more than the ${limit} allowed`));
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > limit) {
            if (ok) return done(fail(x.tooLarge, `${host} sent more than the ${limit} bytes allowed for ${url.pathname.slice(0, 200)}`));
            // Enough of an error body: keep what came, drop the connection rather than read on.
            done(undefined, { status, headers: res.headers, body: Buffer.concat(chunks), url });
            return req.destroy();
          }
          chunks.push(c);
        });
        res.on('end', () => done(undefined, { status, headers: res.headers, body: Buffer.concat(chunks), url }));
        res.on('close', () => {
          if (!res.complete) done(fail('ERR_REGISTRY_UNREACHABLE', `${host} closed the connection in the middle of its answer`));
        });
        res.on('error', (err) =>
          done(fail('ERR_REGISTRY_UNREACHABLE', `${host} broke off the answer (${(err as NodeJS.ErrnoException).code ?? err.message})`, err)),
        );
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (settled) return;
        // An answer that is not HTTP is the registry's fault, not the network's.
        if (err.code?.startsWith('HPE_') === true)
          return done(fail('ERR_REGISTRY_RESPONSE_INVALID', `${host} answered with malformed HTTP (${err.code})`, err));
        const e = fail('ERR_REGISTRY_UNREACHABLE', `cannot reach ${host}: ${describeNetError(err)}`, err);
        if (req.reusedSocket && err.code === 'ECONNRESET') Object.assign(e, { reusedSocket: true });
        done(e);
      });
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      req.end();
    });
  }
}

/** p, or ERR_REGISTRY_TIMEOUT as soon as signal aborts (p goes on for whoever else waits on it). */
function withSignal<T>(p: Promise<T>, signal: AbortSignal | undefined, host: string): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) return Promise.reject(fail('ERR_REGISTRY_TIMEOUT', `${host} did not answer within the time allowed`));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(fail('ERR_REGISTRY_TIMEOUT', `${host} did not answer within the time allowed`));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** A network error in words, with the hint an operator needs for TLS trust problems. */
function describeNetError(err: NodeJS.ErrnoException): string {
  const code = err.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test(code)) return `TLS certificate not trusted (${code}); set the registry's ca in the registry config`;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host name not found';
  if (code === 'ECONNRESET') return 'connection reset';
  return code === '' ? err.message.slice(0, 200) : code;
}
