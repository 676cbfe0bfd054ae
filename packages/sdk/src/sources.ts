/**
 * Auto-updating sources over the Workload API: the current X.509-SVID and bundles, and JWT-SVIDs
 * with JWT bundles. Each keeps one stream open and follows every update.
 */
import { EventEmitter } from 'node:events';
import { JwtSvidValidator, WritError, toPem, type TrustBundle, type ValidatedJwtSvid } from '@writ/spiffe';
import type { GrpcError } from './grpc.ts';
import type { JwtSvid } from './proto.ts';
import { WorkloadClient, type X509Context, type X509SvidItem } from './workload-client.ts';

/**
 * Bundles by trust domain name; satisfies the validators' bundle sources so each ID is checked
 * against its own trust domain's bundle only.
 */
export class BundleSet {
  readonly #m: Map<string, TrustBundle>;
  constructor(bundles: Iterable<[string, TrustBundle]> = []) {
    this.#m = new Map(bundles);
  }
  get(trustDomain: string): TrustBundle | undefined {
    return this.#m.get(trustDomain);
  }
  get trustDomains(): string[] {
    return [...this.#m.keys()];
  }
}

export interface SourceOptions {
  /** Workload API endpoint; default SPIFFE_ENDPOINT_SOCKET. */
  readonly endpoint?: string;
  /** How long `create` waits for the first update. */
  readonly timeoutMs?: number;
  /** Picks the SVID to use when the workload has several (default: the first, per the standard). */
  readonly pick?: (svids: readonly X509SvidItem[]) => X509SvidItem | undefined;
  /**
   * Told why `create` is still waiting, each time that changes: the Workload API's error (no such
   * socket, no identity issued), or the identities it did send, none of which `pick` took.
   */
  readonly onWaiting?: (why: SourceWait) => void;
}

/** Why an X509Source is not ready yet. */
export type SourceWait = { readonly error: GrpcError } | { readonly spiffeIds: readonly string[] };

const pemCache = new WeakMap<X509SvidItem, { key: string; cert: string }>();

/** The workload's current X.509-SVID and X.509 bundles; emits 'update' on every rotation. */
export class X509Source extends EventEmitter {
  readonly #client: WorkloadClient;
  readonly #pick: NonNullable<SourceOptions['pick']>;
  #ctx: X509Context | undefined;
  #bundles = new BundleSet();
  #stop: () => void = () => undefined;

  private constructor(client: WorkloadClient, pick: SourceOptions['pick']) {
    super();
    this.#client = client;
    this.#pick = pick ?? ((s) => s[0]);
  }

  static async create(opts: SourceOptions = {}): Promise<X509Source> {
    const src = new X509Source(new WorkloadClient(opts.endpoint), opts.pick);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        src.close();
        reject(
          new WritError(
            'ERR_REQUEST_FAILED',
            `no X.509-SVID from the Workload API within ${opts.timeoutMs ?? 30_000} ms${lastError ? ` (last error: ${lastError})` : ''}`,
          ),
        );
      }, opts.timeoutMs ?? 30_000);
      let lastError = '';
      src.#stop = src.#client.watchX509Context(
        (ctx) => {
          if (!src.#pick(ctx.svids)) return void (src.#ctx || opts.onWaiting?.({ spiffeIds: ctx.svids.map((x) => x.spiffeId) }));
          src.#ctx = ctx;
          src.#bundles = new BundleSet(ctx.bundles);
          clearTimeout(timer);
          resolve();
          src.emit('update', ctx);
        },
        (err: GrpcError) => {
          lastError = err.message;
          if (!src.#ctx) opts.onWaiting?.({ error: err });
          src.emit('error', err);
        },
      );
    });
    return src;
  }

  /** The SVID to present now. */
  get svid(): X509SvidItem {
    const s = this.#ctx && this.#pick(this.#ctx.svids);
    if (!s) throw new WritError('ERR_REQUEST_FAILED', 'the X509Source has no SVID');
    return s;
  }
  get svids(): readonly X509SvidItem[] {
    return this.#ctx?.svids ?? [];
  }
  get bundles(): BundleSet {
    return this.#bundles;
  }
  /** PEM key and chain of the current SVID, as node:tls wants them. */
  tlsCredentials(): { key: string; cert: string } {
    const s = this.svid;
    let c = pemCache.get(s);
    if (!c) {
      c = { key: s.key.export({ format: 'pem', type: 'pkcs8' }) as string, cert: s.chain.map((x) => toPem('CERTIFICATE', x.der)).join('') };
      pemCache.set(s, c);
    }
    return c;
  }
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    // An 'error' nobody listens to must not crash a workload: the source keeps retrying.
    if (event === 'error' && this.listenerCount('error') === 0) return false;
    return super.emit(event, ...args);
  }
  close(): void {
    this.#stop();
    this.#client.close();
  }
}

/** JWT-SVIDs on demand and JWT bundles kept current; validates tokens against them. */
export class JwtSource {
  readonly #client: WorkloadClient;
  #bundles = new BundleSet();
  #validator = new JwtSvidValidator(this.#bundles);
  #stopped = false;

  private constructor(client: WorkloadClient) {
    this.#client = client;
  }

  static async create(opts: SourceOptions = {}): Promise<JwtSource> {
    const src = new JwtSource(new WorkloadClient(opts.endpoint));
    await src.#refresh();
    const loop = async (): Promise<void> => {
      while (!src.#stopped) {
        await new Promise((r) => setTimeout(r, 5000).unref());
        await src.#refresh().catch(() => undefined);
      }
    };
    void loop();
    return src;
  }

  async #refresh(): Promise<void> {
    const b = await this.#client.fetchJwtBundles();
    this.#bundles = new BundleSet(b);
    this.#validator = new JwtSvidValidator(this.#bundles);
  }

  fetchJwtSvid(audience: string | readonly string[], spiffeId?: string): Promise<JwtSvid> {
    return this.#client.fetchJwtSvids(typeof audience === 'string' ? [audience] : audience, spiffeId).then((s) => {
      if (!s[0]) throw new WritError('ERR_REQUEST_FAILED', 'the Workload API returned no JWT-SVID');
      return s[0];
    });
  }

  get bundles(): BundleSet {
    return this.#bundles;
  }

  /** Validates a JWT-SVID locally against the JWT bundles (each token against its own trust domain). */
  validate(token: string, audience: string): ValidatedJwtSvid {
    return this.#validator.validate(token, audience);
  }

  close(): void {
    this.#stopped = true;
    this.#client.close();
  }
}

let defaultJwtSource: Promise<JwtSource> | undefined;

/**
 * Validates a JWT-SVID for `audience` against the JWT bundles from the Workload API (a shared
 * JwtSource on SPIFFE_ENDPOINT_SOCKET unless one is given), each token against its own trust
 * domain's keys.
 *
 * @example const { spiffeId } = await validateJwtSvid(req.headers.authorization.slice(7), 'spiffe://example.org/api');
 */
export async function validateJwtSvid(token: string, audience: string, source?: JwtSource): Promise<ValidatedJwtSvid> {
  const src =
    source ??
    (await (defaultJwtSource ??= JwtSource.create().catch((err: unknown) => {
      defaultJwtSource = undefined;
      throw err;
    })));
  return src.validate(token, audience);
}
