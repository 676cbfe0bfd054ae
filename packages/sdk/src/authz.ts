/**
 * In-process authorization for services: the policy governing this workload's identities, streamed
 * from the agent (writ.authz.v1.PolicyDistribution/WatchPolicy) and compiled locally, so a decision
 * is a function call. Middleware for node:http, Express and Fastify on top.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { PolicyEngine, httpAction, parsePolicies, type Decision } from '@writ/policy';
import { WritError, verifyX509Svid, type SpiffeId } from '@writ/spiffe';
import { GRPC_STATUS, GrpcClient, type GrpcError } from './grpc.ts';
import { fields } from './proto.ts';
import type { DecisionReporter, ReportedDecision } from './decision-log.ts';
import { enforce, httpRefusal, pathRefusal, requestPath } from './enforce.ts';
import type { JwtSource, X509Source } from './sources.ts';
import { peerChain, peerIdOf } from './tls.ts';

const WATCH = '/writ.authz.v1.PolicyDistribution/WatchPolicy';

/** The local policy: follows the agent's updates; denies everything until the first one arrives. */
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
      this.#engine = engine;
      for (const fn of this.#listeners) fn();
    } catch {
      // A set that does not compile keeps the last good one (the agent checked it already).
    }
  }

  get revision(): number {
    return this.#engine.revision;
  }

  /** Called after every update (new revision or quarantine). */
  onUpdate(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
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

function answer(res: ServerResponse, status: number, o: object): void {
  const body = JSON.stringify(o);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
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
  const reporter = opts.reporter;
  const e = enforce(
    { decide: (r) => opts.policy.decide(r), ...(reporter ? { record: (d: ReportedDecision) => reporter.record(d) } : {}) },
    { from: peer?.uri, to, action: httpAction(method, path, req.headers['content-type']), headers },
  );
  const info = { peer, decision: e.decision, decisionId: e.decisionId };
  opts.onDecision?.(info, req);
  const refused = httpRefusal(e);
  if (refused) return void answer(res, refused.status, refused.body);
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
