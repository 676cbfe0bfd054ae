/**
 * A client of the SPIFFE Workload API (SPIFFE_Workload_API.md, client rules): the security header on
 * every call, retries with backoff on Unavailable and PermissionDenied but not InvalidArgument,
 * reconnection when a stream ends, messages with empty mandatory fields discarded.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { parseBundleJson, parseCertificate, parseTrustDomain, type Certificate, type TrustBundle } from '@writ/spiffe';
import { GRPC_STATUS, GrpcClient, GrpcError } from './grpc.ts';
import {
  decodeJwtBundlesResponse,
  decodeJwtSvidResponse,
  decodeValidateJwtSvidResponse,
  decodeX509BundlesResponse,
  decodeX509SvidResponse,
  encodeJwtSvidRequest,
  encodeValidateJwtSvidRequest,
  type JwtSvid,
} from './proto.ts';
import { TOKEN_BROKER_EXCHANGE, TokenExchangeError, decodeExchangeResponse, encodeExchangeRequest, type ExchangeTokenType } from './token-exchange.ts';

const HEADER = { 'workload.spiffe.io': 'true' };
const M = '/SpiffeWorkloadAPI/';

export interface X509SvidItem {
  readonly spiffeId: string;
  /** Leaf first. */
  readonly chain: readonly Certificate[];
  readonly key: KeyObject;
  readonly hint: string;
}

export interface X509Context {
  /** The first is the default SVID. */
  readonly svids: readonly X509SvidItem[];
  /** Own and federated trust domains' X.509 bundles, keyed by trust domain name. */
  readonly bundles: ReadonlyMap<string, TrustBundle>;
}

/** Splits concatenated DER certificates. */
export function splitDer(buf: Buffer): Certificate[] {
  const out: Certificate[] = [];
  let p = 0;
  while (p < buf.length) {
    if (buf[p] !== 0x30 || p + 2 > buf.length) throw new GrpcError(GRPC_STATUS.INTERNAL, 'malformed certificate list');
    let len = buf[p + 1]!;
    let head = 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + buf[p + 2 + i]!;
      head += n;
    }
    out.push(parseCertificate(buf.subarray(p, p + head + len)));
    p += head + len;
  }
  return out;
}

function tdOf(key: string): string {
  return parseTrustDomain(key.startsWith('spiffe://') ? key.slice(9) : key);
}

function x509Bundle(td: string, der: Buffer): TrustBundle {
  return { trustDomain: td, x509Authorities: splitDer(der), jwtAuthorities: new Map() };
}

/** Decodes an X509SVIDResponse into an X509Context; undefined when mandatory fields are empty. */
export function toX509Context(msg: Buffer): X509Context | undefined {
  const r = decodeX509SvidResponse(msg);
  if (r.svids.length === 0) return undefined;
  const svids: X509SvidItem[] = [];
  const bundles = new Map<string, TrustBundle>();
  for (const s of r.svids) {
    if (!s.spiffeId || s.x509Svid.length === 0 || s.x509SvidKey.length === 0 || s.bundle.length === 0) return undefined;
    svids.push({
      spiffeId: s.spiffeId,
      chain: splitDer(s.x509Svid),
      key: createPrivateKey({ key: s.x509SvidKey, format: 'der', type: 'pkcs8' }),
      hint: s.hint,
    });
    const td = tdOf(s.spiffeId.slice(9).split('/')[0]!);
    if (!bundles.has(td)) bundles.set(td, x509Bundle(td, s.bundle));
  }
  for (const [k, der] of r.federatedBundles) bundles.set(tdOf(k), x509Bundle(tdOf(k), der));
  return { svids, bundles };
}

/** Codes a client retries (SPIFFE_Workload_API.md): the agent may be starting, or the identity not yet issued. */
const RETRYABLE: ReadonlySet<number> = new Set([GRPC_STATUS.UNAVAILABLE, GRPC_STATUS.PERMISSION_DENIED]);

export interface RetryOptions {
  /** Attempts in all (default 5: 0.2, 0.4, 0.8, 1.6 s between them). 1 disables retries. */
  readonly attempts?: number;
}

export interface ExchangeTokenOptions {
  /** The target's SPIFFE ID (for a transaction token: the trust domain ID). */
  readonly audience: string;
  /** One scope per item, or a space-separated string. */
  readonly scope: string | readonly string[];
  /** Default `jwt` (an access token for `audience`). */
  readonly tokenType?: ExchangeTokenType;
  /** A token this workload received, to act on behalf of its subject; default: the workload's own identity. */
  readonly subjectToken?: string;
  /** A JWT-SVID of this workload for the trust domain, passed on as actor_token. */
  readonly actorToken?: string;
  /** Transaction tokens: become the token's `rctx` and `tctx`. */
  readonly requestContext?: Readonly<Record<string, unknown>>;
  readonly requestDetails?: Readonly<Record<string, unknown>>;
  /** Which of this workload's SPIFFE IDs asks (default: the first it gets). */
  readonly spiffeId?: string;
}

export interface ExchangedToken {
  readonly token: string;
  readonly expiresAt: Date;
  readonly scope: readonly string[];
  readonly tokenType: ExchangeTokenType;
  /** The agent answered from its cache. */
  readonly cached: boolean;
}

export class WorkloadClient {
  readonly #grpc: GrpcClient;
  readonly #attempts: number;

  async #retry<T>(fn: () => Promise<T>): Promise<T> {
    let delay = 200;
    for (let i = 1; ; i++) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof GrpcError) || !RETRYABLE.has(err.code) || i >= this.#attempts) throw err;
        await new Promise((r) => setTimeout(r, delay));
        delay *= 2;
      }
    }
  }

  /** `endpoint` defaults to SPIFFE_ENDPOINT_SOCKET (`unix:///path` or `tcp://ip:port`). */
  constructor(endpoint: string | undefined = process.env['SPIFFE_ENDPOINT_SOCKET'], opts: RetryOptions = {}) {
    if (!endpoint) throw new TypeError('no Workload API endpoint: pass one or set SPIFFE_ENDPOINT_SOCKET');
    this.#grpc = new GrpcClient(endpoint);
    this.#attempts = Math.max(1, opts.attempts ?? 5);
  }

  /** The first X509SVIDResponse of the stream (retried on Unavailable and PermissionDenied). */
  fetchX509Context(): Promise<X509Context> {
    return this.#retry(() => this.#fetchX509Context());
  }

  #fetchX509Context(): Promise<X509Context> {
    return new Promise((resolve, reject) => {
      let done = false;
      const cancel = this.#grpc.call(
        `${M}FetchX509SVID`,
        Buffer.alloc(0),
        HEADER,
        (m) => {
          const ctx = toX509Context(m);
          if (ctx && !done) {
            done = true;
            resolve(ctx);
            cancel();
          }
        },
        (err) => {
          if (!done) (done = true), reject(err ?? new GrpcError(GRPC_STATUS.UNAVAILABLE, 'stream ended before an SVID arrived'));
        },
      );
    });
  }

  /**
   * Streams X.509 contexts; reconnects with backoff when the stream ends or fails with Unavailable
   * or PermissionDenied, stops on InvalidArgument. Returns a function that stops watching.
   */
  watchX509Context(onUpdate: (ctx: X509Context) => void, onError: (err: GrpcError) => void = () => undefined): () => void {
    let stopped = false;
    let cancel: () => void = () => undefined;
    let backoff = 200;
    const start = (): void => {
      if (stopped) return;
      cancel = this.#grpc.call(
        `${M}FetchX509SVID`,
        Buffer.alloc(0),
        HEADER,
        (m) => {
          const ctx = toX509Context(m);
          if (ctx) {
            backoff = 200;
            onUpdate(ctx);
          }
        },
        (err) => {
          if (stopped) return;
          if (err) onError(err);
          if (err?.code === GRPC_STATUS.INVALID_ARGUMENT) return;
          setTimeout(start, backoff).unref();
          backoff = Math.min(backoff * 2, 10_000);
        },
      );
    };
    start();
    return () => {
      stopped = true;
      cancel();
    };
  }

  async fetchX509Bundles(): Promise<Map<string, TrustBundle>> {
    const msg = await this.#retry(() => this.#firstOfStream(`${M}FetchX509Bundles`));
    const r = decodeX509BundlesResponse(msg);
    return new Map([...r.bundles].map(([k, der]) => [tdOf(k), x509Bundle(tdOf(k), der)]));
  }

  async fetchJwtBundles(): Promise<Map<string, TrustBundle>> {
    const msg = await this.#retry(() => this.#firstOfStream(`${M}FetchJWTBundles`));
    const r = decodeJwtBundlesResponse(msg);
    return new Map([...r.bundles].map(([k, json]) => [tdOf(k), parseBundleJson(tdOf(k), json.toString('utf8'))]));
  }

  async fetchJwtSvids(audience: readonly string[], spiffeId = ''): Promise<JwtSvid[]> {
    const res = await this.#retry(() => this.#grpc.unary(`${M}FetchJWTSVID`, encodeJwtSvidRequest({ audience: [...audience], spiffeId }), HEADER));
    return decodeJwtSvidResponse(res).filter((s) => s.spiffeId && s.svid);
  }

  async validateJwtSvid(token: string, audience: string): Promise<{ spiffeId: string; claims: Record<string, unknown> }> {
    return decodeValidateJwtSvidResponse(
      await this.#retry(() => this.#grpc.unary(`${M}ValidateJWTSVID`, encodeValidateJwtSvidRequest({ audience, svid: token }), HEADER)),
    );
  }

  /**
   * Token exchange through the agent (writ.broker.v1.TokenBroker/Exchange): the agent asks the
   * server's POST /v1/token as this workload and caches the answer. Rejects with a
   * `TokenExchangeError` (a `GrpcError` with the OAuth `error` and Writ `writCode` of a refusal);
   * retried only while the agent is unavailable or the workload has no identity yet.
   */
  async exchangeToken(opts: ExchangeTokenOptions): Promise<ExchangedToken> {
    const scope = typeof opts.scope === 'string' ? [opts.scope] : [...opts.scope];
    const req = encodeExchangeRequest({
      audience: opts.audience,
      scope,
      requestedTokenType: opts.tokenType ?? 'jwt',
      subjectToken: opts.subjectToken ?? '',
      actorToken: opts.actorToken ?? '',
      requestContext: opts.requestContext ? JSON.stringify(opts.requestContext) : '',
      requestDetails: opts.requestDetails ? JSON.stringify(opts.requestDetails) : '',
      spiffeId: opts.spiffeId ?? '',
    });
    let delay = 200;
    for (let i = 1; ; i++) {
      try {
        const r = decodeExchangeResponse(await this.#grpc.unary(TOKEN_BROKER_EXCHANGE, req, HEADER));
        if (!r.token) throw new TokenExchangeError(GRPC_STATUS.INTERNAL, 'the agent answered without a token');
        return {
          token: r.token,
          expiresAt: new Date(r.expiresAt * 1000),
          scope: r.scope,
          tokenType: r.tokenType === 'txn_token' ? 'txn_token' : 'jwt',
          cached: r.cached,
        };
      } catch (err) {
        const e = TokenExchangeError.from(err);
        // A refusal the server decided is not retried; an agent starting or an identity not issued yet is.
        const retry =
          e instanceof TokenExchangeError &&
          (e.code === GRPC_STATUS.UNAVAILABLE || (e.code === GRPC_STATUS.PERMISSION_DENIED && e.error === '' && /no identity issued/.test(e.details)));
        if (!retry || i >= this.#attempts) throw e;
        await new Promise((r) => setTimeout(r, delay));
        delay *= 2;
      }
    }
  }

  #firstOfStream(method: string): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      let done = false;
      const cancel = this.#grpc.call(
        method,
        Buffer.alloc(0),
        HEADER,
        (m) => {
          if (!done) (done = true), resolve(m), cancel();
        },
        (err) => {
          if (!done) (done = true), reject(err ?? new GrpcError(GRPC_STATUS.UNAVAILABLE, 'stream ended without a message'));
        },
      );
    });
  }

  close(): void {
    this.#grpc.close();
  }
}
