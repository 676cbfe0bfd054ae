/**
 * `writ proxy`: a sidecar beside a workload, no code change in it.
 * - inbound LISTEN=UPSTREAM: terminates mTLS with the workload's SVID, requires a valid peer SVID
 *   (own trust domain or a federated one, each checked against its own bundle), authorizes per
 *   connection (tcp) or per request (http: HTTP/1.1 and HTTP/2 via ALPN), forwards plaintext to the
 *   local app with `x-writ-peer-id`; a denied request gets 403 `{code, decisionId}`, a denied
 *   connection is closed.
 * - outbound LISTEN=spiffe://ID@HOST:PORT: accepts plaintext from the local app and originates
 *   mTLS, refusing a server whose SPIFFE ID is not ID (a reused IP cannot fool it).
 * Decisions come from the policy the agent streams (in-process); SVIDs rotate without dropping
 * connections; live connections from or to a quarantined identity are closed.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import { connect as netConnect, createServer as netCreateServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as tlsCreateServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { WritError, parseSpiffeId, verifyX509Svid, type SpiffeId } from '@writ/spiffe';
import { normalizePath } from '@writ/policy';
import { DecisionReporter, LocalPolicy, newDecisionId, X509Source, authorizeId, mtlsConnect, peerChain } from '@writ/sdk';
import { UpstreamPool, connectTcp, relayHttp1, type OnData } from './http1.ts';


export interface Inbound {
  readonly listen: { host: string; port: number };
  readonly upstream: { host: string; port: number };
  readonly mode: 'http' | 'tcp';
}
export interface Outbound {
  readonly listen: { host: string; port: number };
  readonly spiffeId: string;
  readonly target: { host: string; port: number };
  /** http: requests over a pool of kept-alive mTLS connections; tcp: one mTLS connection per client connection. */
  readonly mode: 'http' | 'tcp';
}

export function parseHostPort(s: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  if (!m || Number(m[3]) > 65535) throw new WritError('ERR_CONFIG_INVALID', `${what}: ${JSON.stringify(s)} is not HOST:PORT`);
  return { host: (m[1] ?? m[2])!, port: Number(m[3]) };
}

/** `LISTEN=UPSTREAM` */
export function parseInbound(s: string, mode: 'http' | 'tcp'): Inbound {
  const [l, u] = s.split('=');
  if (!l || !u) throw new WritError('ERR_CONFIG_INVALID', `--inbound ${JSON.stringify(s)}: expected LISTEN=UPSTREAM, e.g. 0.0.0.0:8443=127.0.0.1:8080`);
  return { listen: parseHostPort(l, '--inbound'), upstream: parseHostPort(u, '--inbound'), mode };
}

/** `LISTEN=spiffe://ID@HOST:PORT` */
export function parseOutbound(s: string, mode: 'http' | 'tcp' = 'http'): Outbound {
  const eq = s.indexOf('=');
  const at = s.lastIndexOf('@');
  if (eq < 0 || at < eq) throw new WritError('ERR_CONFIG_INVALID', `--outbound ${JSON.stringify(s)}: expected LISTEN=spiffe://ID@HOST:PORT`);
  const spiffeId = parseSpiffeId(s.slice(eq + 1, at)).uri;
  return { listen: parseHostPort(s.slice(0, eq), '--outbound'), spiffeId, target: parseHostPort(s.slice(at + 1), '--outbound'), mode };
}

export interface ProxyOptions {
  readonly endpoint: string;
  readonly spiffeId?: string;
  readonly inbound: readonly Inbound[];
  readonly outbound: readonly Outbound[];
  readonly log: Logger;
}

interface Live {
  readonly peer: string | undefined;
  readonly to: string;
  readonly socket: Socket;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'http2-settings', 'host', 'x-writ-peer-id']);

export class WritProxy {
  readonly #o: ProxyOptions;
  #source!: X509Source;
  #policy!: LocalPolicy;
  readonly #servers: Array<NetServer | TlsServer> = [];
  readonly #live = new Set<Live>();
  #reporter!: DecisionReporter;

  constructor(opts: ProxyOptions) {
    this.#o = opts;
  }

  get spiffeId(): string {
    return this.#source.svid.spiffeId;
  }

  async start(): Promise<Array<{ kind: string; port: number }>> {
    const want = this.#o.spiffeId;
    this.#source = await X509Source.create({ endpoint: this.#o.endpoint, ...(want ? { pick: (s) => s.find((x) => x.spiffeId === want) } : {}) });
    this.#policy = await LocalPolicy.create({ endpoint: this.#o.endpoint });
    this.#reporter = new DecisionReporter(this.#o.endpoint);
    // Quarantine (or any policy change) re-checks live connections; the denied ones are closed.
    this.#policy.onUpdate(() => this.#recheck());
    const ports: Array<{ kind: string; port: number }> = [];
    for (const ib of this.#o.inbound) ports.push({ kind: `inbound-${ib.mode}`, port: await this.#listen(ib.mode === 'http' ? this.#httpInbound(ib) : this.#tcpInbound(ib), ib.listen) });
    for (const ob of this.#o.outbound) ports.push({ kind: 'outbound', port: await this.#listen(this.#outbound(ob), ob.listen) });
    return ports;
  }

  async #listen(server: NetServer | TlsServer, at: { host: string; port: number }): Promise<number> {
    this.#servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(at.port, at.host, () => resolve());
    });
    const a = server.address();
    return typeof a === 'object' && a ? a.port : at.port;
  }

  #creds(): { key: string; cert: string } {
    return this.#source.tlsCredentials();
  }

  /** The peer's SPIFFE ID if it presented a valid SVID of a trust domain we hold a bundle for. */
  #peer(socket: TLSSocket): SpiffeId | undefined {
    const chain = peerChain(socket);
    if (chain.length === 0) return undefined;
    try {
      return verifyX509Svid(chain, this.#source.bundles).spiffeId;
    } catch {
      return undefined;
    }
  }

  #decide(peer: string | undefined, action: Parameters<LocalPolicy['decide']>[0]['action'], headers?: Record<string, string>): { allowed: boolean; reason: string; decisionId: string } {
    const to = this.spiffeId;
    const t0 = process.hrtime.bigint();
    const d = this.#policy.decide({ from: peer, to, action, ...(headers ? { headers } : {}) });
    const latencyNs = Number(process.hrtime.bigint() - t0);
    const at = Date.now();
    const decisionId = newDecisionId(at);
    this.#reporter.record({
      id: decisionId, at, from: peer ?? '', to,
      action: action.kind === 'tcp' ? `tcp ${action.port}` : action.kind === 'http' ? `${action.method} ${action.path}` : `grpc ${action.method}`,
      decision: d.decision, reason: d.reason, rule: d.rule?.name ?? '', policyRevision: d.revision, latencyNs,
    });
    if (d.decision !== 'allow') this.#o.log.info({ decisionId, from: peer ?? null, to, action, decision: d.decision, reason: d.reason, rule: d.rule?.name }, 'decision');
    return { allowed: d.allowed, reason: d.reason, decisionId };
  }

  #track(peer: string | undefined, socket: Socket): void {
    const l = { peer, to: this.spiffeId, socket };
    this.#live.add(l);
    socket.once('close', () => this.#live.delete(l));
  }

  #recheck(): void {
    for (const l of this.#live) {
      const d = this.#policy.decide({ from: l.peer, to: l.to, action: { kind: 'tcp', port: 0 } });
      if (d.reason === 'QUARANTINED') {
        this.#o.log.warn({ peer: l.peer, to: l.to }, 'closing a live connection: quarantined');
        l.socket.destroy();
      }
    }
  }

  #tlsOptions() {
    // noDelay on the accepted TCP socket itself (setNoDelay on the TLS layer above it may not reach it).
    return { ...this.#creds(), requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' as const, noDelay: true };
  }

  #rotate(server: TlsServer): void {
    this.#source.on('update', () => server.setSecureContext({ ...this.#creds(), minVersion: 'TLSv1.2' }));
  }

  #tcpInbound(ib: Inbound): TlsServer {
    const server = tlsCreateServer(this.#tlsOptions(), (socket) => {
      socket.on('error', () => undefined);
      socket.setNoDelay(true);
      const peer = this.#peer(socket);
      const d = this.#decide(peer?.uri, { kind: 'tcp', port: ib.listen.port });
      if (!d.allowed) return void socket.destroy();
      this.#track(peer?.uri, socket);
      const up = netConnect({ port: ib.upstream.port, host: ib.upstream.host, noDelay: true });
      up.on('error', () => socket.destroy());
      socket.on('close', () => up.destroy());
      socket.pipe(up).pipe(socket);
    });
    server.on('tlsClientError', (_e, s) => s.destroy());
    this.#rotate(server);
    return server;
  }

  #httpInbound(ib: Inbound): TlsServer {
    // One TLS server; ALPN picks the protocol (h2 first, then http/1.1; a client offering neither
    // or no ALPN at all is spoken to in HTTP/1.1). HTTP/2 connections are handed to an http2
    // server that never listens itself; HTTP/1.1 goes through the relay in http1.ts over kept-alive
    // upstream connections (Node's http.Server plus one http.request per request measured at half
    // nginx's throughput). An http2 secure server listening itself would refuse, with a
    // no_application_protocol alert, every client that offers only http/1.1 (curl --http1.1,
    // Python's urllib3, most HTTP/1.1 libraries) unless it also took over HTTP/1.1 itself.
    const h2 = createSecureServer({ allowHTTP1: false, settings: { maxConcurrentStreams: 256 } }, (req, res) => this.#forward(req, res, ib));
    h2.on('sessionError', () => undefined);
    const pool = new UpstreamPool((onData) => connectTcp(ib.upstream.host, ib.upstream.port, onData));
    this.#pools.push(pool);
    const server = tlsCreateServer({ ...this.#tlsOptions(), ALPNProtocols: ['h2', 'http/1.1'] }, (socket: TLSSocket & { writPeer?: string | undefined }) => {
      socket.on('error', () => undefined);
      socket.setNoDelay(true);
      const peer = (socket.writPeer = this.#peer(socket)?.uri);
      this.#track(peer, socket);
      if (socket.alpnProtocol === 'h2') return void h2.emit('secureConnection', socket);
      relayHttp1(socket, {
        pool,
        // The app learns the caller from this field only; a client-sent one never passes.
        addFields: peer ? [['x-writ-peer-id', peer]] : [],
        dropFields: ['x-writ-peer-id'],
        authorize: (r) => {
          // Read only when a rule has header conditions: no per-request copy of every field.
          const headers = new Proxy<Record<string, string>>({}, { get: (_t, name) => (typeof name === 'string' ? r.fields.all(name).join(', ') || undefined : undefined) });
          const d = this.#decide(peer, { kind: 'http', method: r.method.toUpperCase(), path: r.path, port: ib.listen.port }, headers);
          return d.allowed ? undefined : { status: 403, body: { code: d.reason, decisionId: d.decisionId } };
        },
        onUpstreamError: (err) => this.#o.log.warn({ upstream: `${ib.upstream.host}:${ib.upstream.port}`, err: err.message }, 'upstream unavailable'),
      });
    });
    server.on('tlsClientError', (_e, s) => s.destroy());
    this.#rotate(server);
    return server;
  }

  #forward(req: Http2ServerRequest | IncomingMessage, res: Http2ServerResponse | ServerResponse, ib: Inbound): void {
    const socket = (req.socket ?? (req as Http2ServerRequest).stream?.session?.socket) as TLSSocket & { writPeer?: string };
    const peer = socket?.writPeer;
    const method = (req.method ?? 'GET').toUpperCase();
    const url = req.url ?? '/';
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers as IncomingHttpHeaders)) if (typeof v === 'string' && !k.startsWith(':')) headers[k] = v;
    const answer = (status: number, o: object): void => {
      const body = JSON.stringify(o);
      (res as ServerResponse).writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    let path: string;
    try {
      path = normalizePath(url.split('?')[0]!);
    } catch (err) {
      return answer(400, { code: (err as WritError).code, message: (err as Error).message });
    }
    const d = this.#decide(peer, { kind: 'http', method, path, port: ib.listen.port }, headers);
    if (!d.allowed) return answer(403, { code: d.reason, decisionId: d.decisionId });
    const out: OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headers as IncomingHttpHeaders)) if (!k.startsWith(':') && !HOP_BY_HOP.has(k) && v !== undefined) out[k] = v;
    out['host'] = String((req.headers as IncomingHttpHeaders)[':authority'] ?? (req.headers as IncomingHttpHeaders)['host'] ?? `${ib.upstream.host}:${ib.upstream.port}`);
    if (peer) out['x-writ-peer-id'] = peer;
    const up = httpRequest({ host: ib.upstream.host, port: ib.upstream.port, method, path: url, headers: out, agent: this.#agent }, (ur) => {
      const h: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(ur.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) h[k] = v;
      (res as ServerResponse).writeHead(ur.statusCode ?? 502, h);
      ur.pipe(res as NodeJS.WritableStream);
    });
    up.on('error', (err) => {
      if (!res.headersSent) {
        answer(502, { code: 'ERR_UPSTREAM', message: `upstream unavailable: ${(err as NodeJS.ErrnoException).code ?? err.message}` });
      } else res.destroy?.();
    });
    (req as NodeJS.ReadableStream).pipe(up);
  }

  readonly #agent = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  readonly #pools: UpstreamPool[] = [];

  #outbound(ob: Outbound): NetServer {
    const open = async (onData?: OnData): Promise<Socket> => {
      try {
        const remote = await mtlsConnect({ source: this.#source, authorize: authorizeId(ob.spiffeId), host: ob.target.host, port: ob.target.port, ...(onData ? { onData } : {}) });
        remote.setNoDelay(true);
        this.#track(ob.spiffeId, remote);
        return remote;
      } catch (err) {
        this.#o.log.warn({ target: `${ob.target.host}:${ob.target.port}`, expected: ob.spiffeId, err: (err as Error).message }, 'outbound connection refused: the server is not who it should be');
        throw err;
      }
    };
    if (ob.mode === 'http') {
      // Requests go over kept-alive mTLS connections: a new client connection costs no handshake.
      // Idle mTLS connections are kept a minute (a writ inbound keeps them two): re-opening one
      // costs a handshake on both sides, which is what a latency tail is made of.
      const pool = new UpstreamPool(open, { idleMs: 60_000 });
      this.#pools.push(pool);
      // allowHalfOpen: a client that half-closes after its request still gets the answer.
      return netCreateServer({ noDelay: true, allowHalfOpen: true }, (local) => {
        this.#track(ob.spiffeId, local);
        relayHttp1(local, { pool });
      });
    }
    // Nagle off everywhere: a proxy that batches small writes turns into 40 ms delayed-ACK stalls.
    return netCreateServer({ noDelay: true }, (local) => {
      local.on('error', () => undefined);
      local.pause();
      open().then((remote) => {
        remote.on('error', () => local.destroy());
        local.on('close', () => remote.destroy());
        remote.on('close', () => local.destroy());
        local.pipe(remote).pipe(local);
        local.resume();
      }, () => local.destroy());
    });
  }

  async close(): Promise<void> {
    for (const l of this.#live) l.socket.destroy();
    await Promise.all(this.#servers.map((s) => new Promise((r) => s.close(() => r(undefined)))));
    await this.#reporter?.close();
    this.#policy?.close();
    this.#source?.close();
    this.#agent.destroy();
    for (const p of this.#pools) p.close();
  }
}
