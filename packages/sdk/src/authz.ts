/**
 * In-process authorization for services: the policy governing this workload's identities, streamed
 * from the agent (writ.authz.v1.PolicyDistribution/WatchPolicy) and compiled locally, so a decision
 * is a function call. Middleware for node:http, Express and Fastify on top, and `requireToken` for
 * routes that need a Writ access or transaction token with given scopes.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { PolicyEngine, TOKEN_MAX_DEPTH, httpAction, parsePolicies, tokenMismatch, type Decision, type TokenType } from '@writ/policy';
import { WritError, parseSpiffeId, verifyX509Svid, type JwtBundleSource, type SpiffeId } from '@writ/spiffe';
import { GRPC_STATUS, GrpcClient, type GrpcError } from './grpc.ts';
import { fields } from './proto.ts';
import type { DecisionReporter, ReportedDecision } from './decision-log.ts';
import { newDecisionId } from './decision-log.ts';
import { enforce, httpRefusal, pathRefusal, readToken, requestPath, tokenRefusal, type HttpRefusal, type ReceivedToken, type TokenRead } from './enforce.ts';
import type { JwtSource, X509Source } from './sources.ts';
import { peerChain, peerIdOf } from './tls.ts';

const WATCH = '/writ.authz.v1.PolicyDistribution/WatchPolicy';

/**
 * The local policy: follows the agent's updates; denies everything (NO_POLICY_LOADED) until the
 * first one arrives, and again once the agent withdraws this workload's identity (the stream ends
 * with PermissionDenied: quarantined, its entry deleted) until it sends a policy again. An agent
 * that is down (Unavailable) leaves the last policy in force.
 */
export class LocalPolicy {
  #engine = new PolicyEngine(undefined);
  readonly #grpc: GrpcClient;
  #stop: () => void = () => undefined;
  #closed = false;
  readonly #listeners = new Set<() => void>();

  private constructor(endpoint: string) {
    this.#grpc = new GrpcClient(endpoint);
  }

  /** Connects to the agent (SPIFFE_ENDPOINT_SOCKET by default) and waits for the first policy. */
  static async create(opts: { endpoint?: string; timeoutMs?: number } = {}): Promise<LocalPolicy> {
    const endpoint = opts.endpoint ?? process.env['SPIFFE_ENDPOINT_SOCKET'];
    if (!endpoint) throw new TypeError('no Workload API endpoint: pass one or set SPIFFE_ENDPOINT_SOCKET');
    const lp = new LocalPolicy(endpoint);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new WritError('ERR_REQUEST_FAILED', 'no policy from the agent in time')), opts.timeoutMs ?? 30_000);
      let backoff = 200;
      const start = (): void => {
        if (lp.#closed) return;
        lp.#stop = lp.#grpc.call(
          WATCH,
          Buffer.alloc(0),
          { 'workload.spiffe.io': 'true' },
          (m) => {
            lp.#apply(m);
            backoff = 200;
            clearTimeout(timer);
            resolve();
          },
          (err: GrpcError | undefined) => {
            if (lp.#closed || err?.code === GRPC_STATUS.INVALID_ARGUMENT) return;
            if (err?.code === GRPC_STATUS.PERMISSION_DENIED && lp.#engine.loaded) lp.#use(new PolicyEngine(undefined));
            setTimeout(start, backoff).unref();
            backoff = Math.min(backoff * 2, 10_000);
          },
        );
      };
      start();
    });
    return lp;
  }

  #apply(msg: Buffer): void {
    let revision = 0;
    const docs: string[] = [];
    const quarantine: string[] = [];
    const breakGlass: string[] = [];
    for (const f of fields(msg)) {
      if (f.field === 1 && f.wire === 0) revision = f.int;
      else if (f.field === 2) docs.push(f.data.toString('utf8'));
      else if (f.field === 3) quarantine.push(f.data.toString('utf8'));
      else if (f.field === 4) breakGlass.push(f.data.toString('utf8'));
    }
    try {
      const policies = revision === 0 ? undefined : docs.flatMap((d) => parsePolicies(d, { allowExpired: true }).policies);
      const engine = new PolicyEngine(policies, { revision, breakGlass });
      engine.setQuarantine(quarantine);
      this.#use(engine);
    } catch {
      // A set that does not compile keeps the last good one (the agent checked it already).
    }
  }

  #use(engine: PolicyEngine): void {
    this.#engine = engine;
    for (const fn of this.#listeners) fn();
  }

  get revision(): number {
    return this.#engine.revision;
  }

  /** Called after every update (new revision or quarantine). */
  onUpdate(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Whether `id` is in the quarantine list the agent sent. */
  isQuarantined(id: string): boolean {
    return this.#engine.quarantined.has(id);
  }

  decide(req: Parameters<PolicyEngine['decide']>[0]): Decision {
    return this.#engine.decide(req);
  }

  close(): void {
    this.#closed = true;
    this.#stop();
    this.#grpc.close();
  }
}

export interface WritRequestInfo {
  /** The verified caller, or undefined. */
  readonly peer: SpiffeId | undefined;
  readonly decision: Decision;
  readonly decisionId: string;
  /** The verified Writ token the request carried (with `tokens` set), for the handler. */
  readonly token?: ReceivedToken;
}

/** Where Writ tokens are verified: the JWT bundles (a JwtSource), and optionally whom for. */
export interface TokenOptions {
  /** The trust domains' JWT keys: a JwtSource (its `bundles` follow the agent), or any JwtBundleSource holder. */
  readonly source: { readonly bundles: JwtBundleSource };
  /** The receiver's SPIFFE ID, an access token's `aud`; default the middleware's `to`. */
  readonly audience?: string;
  /** The trust domain whose keys sign the tokens; default the audience's. */
  readonly trustDomain?: string;
}

export interface MiddlewareOptions {
  readonly policy: LocalPolicy;
  /** This service's SPIFFE ID (the `to` of every decision); default the X509Source's SVID. */
  readonly to?: string;
  /** Verifies mTLS peers (connections not made by createMtlsServer). */
  readonly x509?: X509Source;
  /** Accepts `Authorization: Bearer <JWT-SVID>` for this audience. */
  readonly jwt?: { readonly source: JwtSource; readonly audience: string };
  /** Called with every decision (for logs). */
  readonly onDecision?: (info: WritRequestInfo, req: IncomingMessage) => void;
  /** Sends every decision to the server's decision log through the agent. */
  readonly reporter?: DecisionReporter;
  /**
   * Verifies a Writ token (`Authorization: Bearer` or `Txn-Token`) for the policy's `token`
   * conditions; without it, rules with a token condition never match.
   */
  readonly tokens?: TokenOptions;
}

function readTokenFor(req: IncomingMessage, t: TokenOptions, audience: string): TokenRead {
  const txn = req.headers['txn-token'];
  return readToken(
    { authorization: req.headers.authorization, txnToken: typeof txn === 'string' ? txn : undefined },
    { bundles: t.source.bundles, audience, trustDomain: t.trustDomain ?? parseSpiffeId(audience).trustDomain },
  );
}

function peerOf(req: IncomingMessage, opts: MiddlewareOptions): SpiffeId | undefined {
  const sock = req.socket as TLSSocket;
  if (sock && 'encrypted' in sock && sock.encrypted) {
    const known = peerIdOf(sock);
    if (known) return known;
    if (opts.x509) {
      const chain = peerChain(sock);
      if (chain.length) {
        try {
          return verifyX509Svid(chain, opts.x509.bundles).spiffeId;
        } catch {
          /* not an SVID: try a token */
        }
      }
    }
  }
  const auth = req.headers.authorization;
  if (opts.jwt && auth?.startsWith('Bearer ')) {
    try {
      return opts.jwt.source.validate(auth.slice(7).trim(), opts.jwt.audience).spiffeId;
    } catch {
      /* an invalid token is no identity: the decision says UNAUTHENTICATED */
    }
  }
  return undefined;
}

function answer(res: ServerResponse, status: number, o: object, fields: Readonly<Record<string, string>> = {}): void {
  const body = JSON.stringify(o);
  res.writeHead(status, { ...fields, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * Decides one request on its path in normal form (`requestPath`); writes the answer itself when
 * refused (the enforcement core's: 403 `{code, decisionId}`, 401 without an identity, 400 for a
 * path with a "." or ".." segment or a broken escape). Returns the info, or undefined when answered.
 */
export function authorizeRequest(req: IncomingMessage, res: ServerResponse, opts: MiddlewareOptions): WritRequestInfo | undefined {
  const to = opts.to ?? opts.x509?.svid.spiffeId;
  if (!to) throw new TypeError('writ middleware needs `to` or an `x509` source');
  let path: string;
  try {
    path = requestPath(req.url ?? '/');
  } catch (err) {
    // Answered before any identity work: nothing is decided on a path two parsers could read apart.
    const r = pathRefusal(err);
    return void answer(res, r.status, r.body);
  }
  const peer = peerOf(req, opts);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'authorization') headers[k] = v;
  const method = (req.method ?? 'GET').toUpperCase();
  delete headers['txn-token'];
  const reporter = opts.reporter;
  const read = opts.tokens ? readTokenFor(req, opts.tokens, opts.tokens.audience ?? to) : undefined;
  const token = read?.token;
  const e = enforce(
    { decide: (r) => opts.policy.decide(r), ...(reporter ? { record: (d: ReportedDecision) => reporter.record(d) } : {}) },
    { from: peer?.uri, to, action: httpAction(method, path, req.headers['content-type']), headers, ...(token ? { token } : {}) },
  );
  const info = { peer, decision: e.decision, decisionId: e.decisionId, ...(token ? { token } : {}) };
  opts.onDecision?.(info, req);
  const refused = httpRefusal(e, read);
  if (refused) return void answer(res, refused.status, refused.body, refused.headers);
  return info;
}

type Next = (err?: unknown) => void;

/**
 * Middleware for node:http and Express: `(req, res, next)`. Sets `req.writ = { peer, decision }`
 * for the handler; answers 403 `{code, decisionId}` itself on a deny (401 without an identity, 400
 * `ERR_PATH_INVALID` for a path with a "." or ".." segment).
 */
export function writMiddleware(opts: MiddlewareOptions): (req: IncomingMessage, res: ServerResponse, next: Next) => void {
  return (req, res, next) => {
    let info: WritRequestInfo | undefined;
    try {
      info = authorizeRequest(req, res, opts);
    } catch (err) {
      return next(err);
    }
    if (!info) return;
    (req as IncomingMessage & { writ?: WritRequestInfo }).writ = info;
    next();
  };
}

/**
 * A Fastify plugin: `fastify.register(writFastify, opts)`. Runs on every request of the instance
 * it is registered on and its children; `request.writ` holds `{ peer, decision }`.
 */
export function writFastify(
  fastify: {
    decorateRequest(name: string, value: unknown): void;
    addHook(
      name: 'onRequest',
      fn: (request: { raw: IncomingMessage; writ?: WritRequestInfo }, reply: { raw: ServerResponse; hijack(): void }, done: (err?: Error) => void) => void,
    ): void;
  },
  opts: MiddlewareOptions,
  done: (err?: Error) => void,
): void {
  fastify.decorateRequest('writ', null);
  fastify.addHook('onRequest', (request, reply, hookDone) => {
    let info: WritRequestInfo | undefined;
    try {
      info = authorizeRequest(request.raw, reply.raw, opts);
    } catch (err) {
      return hookDone(err as Error);
    }
    if (!info) {
      reply.hijack(); // the 403 is already written
      return;
    }
    request.writ = info;
    hookDone();
  });
  done();
}
// Like fastify-plugin: the hook applies to the instance that registers it, not only a child scope.
(writFastify as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;

export interface RequireTokenOptions extends TokenOptions {
  /** Scopes the token must hold, all of them. */
  readonly scope: string | readonly string[];
  /** Only this token type: `jwt` (an access token) or `txn_token`; default either. */
  readonly type?: TokenType;
  /** At most this many actors in the token's `act` chain (default 5). */
  readonly maxDepth?: number;
  /** The receiver's SPIFFE ID (an access token's `aud`): this or `x509`'s SVID. */
  readonly x509?: { readonly svid: { readonly spiffeId: string } };
  /** Told of every refusal (no token in it), for the process's log. */
  readonly onRefusal?: (refusal: HttpRefusal, req: IncomingMessage) => void;
}

type RawReq = IncomingMessage & { writToken?: ReceivedToken };
interface FastifyLike {
  readonly raw: RawReq;
  writToken?: ReceivedToken;
}

/**
 * Middleware for a route that needs a Writ token with `scope`, verified like `writ proxy` does
 * (signature by the trust domain's JWT keys, `aud` = this service, not expired, depth) and refused
 * the same way: 401 `ERR_TOKEN_REQUIRED` / `ERR_TOKEN_INVALID`, 403 `ERR_TOKEN_SCOPE_INSUFFICIENT`
 * / `ERR_TOKEN_DEPTH_EXCEEDED` / `ERR_TOKEN_NOT_ACCEPTED`, each `{code, decisionId, reason}` with a
 * `WWW-Authenticate: Bearer` challenge. The token is in `req.writToken` for the handler.
 * Express / node:http: `app.get('/orders', requireToken({ scope: 'orders:read', source }), handler)`;
 * Fastify: `{ preHandler: requireToken({ scope: 'orders:read', source }) }` (`request.writToken`).
 */
export function requireToken(
  opts: RequireTokenOptions,
): (req: IncomingMessage | FastifyLike, res: ServerResponse | { readonly raw: ServerResponse; hijack(): void }, next: (err?: Error) => void) => void {
  const scopes = typeof opts.scope === 'string' ? [opts.scope] : [...opts.scope];
  if (scopes.length === 0) throw new TypeError('requireToken needs at least one scope');
  const depth = opts.maxDepth;
  if (depth !== undefined && (!Number.isInteger(depth) || depth < 0 || depth > TOKEN_MAX_DEPTH))
    throw new TypeError(`maxDepth must be 0 to ${TOKEN_MAX_DEPTH}`);
  const condition = { scopes, ...(opts.type ? { type: opts.type } : {}), ...(depth !== undefined ? { maxDepth: depth } : {}) };
  return (r, s, next) => {
    const fastify = 'raw' in r && !('socket' in r);
    const req = fastify ? (r as FastifyLike).raw : (r as RawReq);
    const res = 'raw' in s && !('writeHead' in s) ? s.raw : (s as ServerResponse);
    let refusal: HttpRefusal | undefined;
    let token: ReceivedToken | undefined;
    try {
      const audience = opts.audience ?? opts.x509?.svid.spiffeId;
      if (!audience) throw new TypeError('requireToken needs `audience` or an `x509` source');
      const read = readTokenFor(req, opts, audience);
      token = read.token;
      const why = tokenMismatch(condition, token);
      if (why) refusal = tokenRefusal(why, read, newDecisionId());
    } catch (err) {
      return next(err as Error);
    }
    if (refusal) {
      opts.onRefusal?.(refusal, req);
      answer(res, refusal.status, refusal.body, refusal.headers);
      if (fastify) (s as { hijack(): void }).hijack();
      return;
    }
    if (token) {
      req.writToken = token;
      if (fastify) (r as FastifyLike).writToken = token;
    }
    next();
  };
}
