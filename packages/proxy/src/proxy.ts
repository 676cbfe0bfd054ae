/**
 * `writ proxy`: a sidecar beside a workload, no code change in it.
 * - inbound LISTEN=UPSTREAM: terminates mTLS with the workload's SVID, requires a valid peer SVID
 *   (own trust domain or a federated one, each checked against its own bundle), authorizes per
 *   connection (tcp) or per request (http: HTTP/1.1 and HTTP/2 via ALPN; gRPC calls as gRPC
 *   actions), forwards plaintext to the local app (HTTP/1.1, or HTTP/2 for an h2c:// upstream) with
 *   `x-writ-peer-id`; a denied request gets 403 `{code, decisionId}` (a gRPC call the gRPC status
 *   PERMISSION_DENIED), a denied connection is closed. A Writ token the request carries
 *   (`Authorization: Bearer` or `Txn-Token`) is verified against the trust domain's JWT bundle
 *   from the Workload API and decided by the policy's `token` conditions (401/403
 *   `{code, decisionId, reason}` with `WWW-Authenticate: Bearer` when one refuses).
 * - outbound LISTEN=spiffe://ID@HOST:PORT: accepts plaintext from the local app and originates
 *   mTLS, refusing a server whose SPIFFE ID is not ID (a reused IP cannot fool it).
 * Decisions come from the policy the agent streams (in-process); SVIDs rotate without dropping
 * connections; connections from or to a quarantined identity are refused, live ones closed. When
 * the proxy's own identity is withdrawn (its SVID stream ends with PermissionDenied, or the
 * quarantine list names it), it closes every connection it carries and refuses new ones until the
 * agent issues the identity again: the app learns of it by a close, whatever the remote side does.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import {
  connect as http2Connect,
  constants as h2constants,
  createSecureServer,
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Stream,
} from 'node:http2';
import { connect as netConnect, createServer as netCreateServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as tlsCreateServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { WritError, formatDuration, isWritError, parseSpiffeId, verifyX509Svid, type SpiffeId } from '@writ/spiffe';
import { httpAction, type ActionRequest } from '@writ/policy';
import { DecisionReporter, GRPC_STATUS, JwtSource, LocalPolicy, X509Source, authorizeId, mtlsConnect, type SourceWait } from '@writ/sdk';
import {
  enforce,
  grpcRefusal,
  httpRefusal,
  pathRefusal,
  peerChain,
  readToken,
  requestPath,
  type Enforced,
  type EnforcerOptions,
  type TokenRead,
} from '@writ/sdk/internal';
import { UpstreamPool, VIA, connectTcp, finalHop, parseMaxForwards, relayHttp1, response, type OnData } from './http1.ts';

export interface Inbound {
  readonly listen: { host: string; port: number };
  readonly upstream: { host: string; port: number };
  readonly mode: 'http' | 'tcp';
  /** What the app speaks: HTTP/1.1 (`HOST:PORT` or `http://HOST:PORT`) or HTTP/2 without TLS (`h2c://HOST:PORT`, e.g. a gRPC server). */
  readonly upstreamProtocol: 'http1' | 'h2c';
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

/** `LISTEN=UPSTREAM`, UPSTREAM being `HOST:PORT`, `http://HOST:PORT` or `h2c://HOST:PORT`. */
export function parseInbound(s: string, mode: 'http' | 'tcp'): Inbound {
  const [l, u, extra] = s.split('=');
  if (!l || !u || extra !== undefined)
    throw new WritError(
      'ERR_CONFIG_INVALID',
      `--inbound ${JSON.stringify(s)}: expected LISTEN=UPSTREAM, e.g. 0.0.0.0:8443=127.0.0.1:8080 (or =h2c://127.0.0.1:50051 for an app that speaks HTTP/2, such as a gRPC server)`,
    );
  const scheme = /^([a-z0-9]+):\/\//i.exec(u);
  const upstreamProtocol = scheme?.[1]?.toLowerCase() === 'h2c' ? 'h2c' : 'http1';
  if (scheme && !['http', 'h2c'].includes(scheme[1]!.toLowerCase()))
    throw new WritError('ERR_CONFIG_INVALID', `--inbound ${JSON.stringify(s)}: the upstream is HOST:PORT, http://HOST:PORT or h2c://HOST:PORT`);
  if (upstreamProtocol === 'h2c' && mode === 'tcp')
    throw new WritError('ERR_CONFIG_INVALID', `--inbound ${JSON.stringify(s)}: an h2c:// upstream needs --inbound-mode http`);
  return { listen: parseHostPort(l, '--inbound'), upstream: parseHostPort(scheme ? u.slice(scheme[0].length) : u, '--inbound'), mode, upstreamProtocol };
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
  /** How long `start` waits for the workload's SVID and policy before it gives up (default 60 s). */
  readonly waitTimeoutMs?: number;
}

/** How often a proxy still waiting for its identity says why; and when it says so if the agent has not answered at all. */
const WAIT_REPEAT_MS = 5000;
const WAIT_FIRST_MS = 800;

/** Why the Workload API has not given the proxy its SVID, in words that say what to fix. */
export function waitReason(why: SourceWait, want: string | undefined): string {
  if ('spiffeIds' in why) return `identities present but not ${want}: this process has ${why.spiffeIds.join(', ') || 'none'}`;
  const e = why.error;
  if (e.code === GRPC_STATUS.PERMISSION_DENIED)
    return `no identity issued for this process (uid ${process.getuid?.() ?? '?'}): no registration entry of this agent matches it${e.details === 'no identity issued' ? '' : ` (${e.details})`}`;
  const m = /\b(ENOENT|ECONNREFUSED|EACCES|ENOTSOCK)\b/.exec(e.message);
  if (m?.[1] === 'ENOENT') return 'no such socket';
  if (m?.[1] === 'ECONNREFUSED') return 'connection refused (no agent listens on the socket)';
  if (m?.[1] === 'EACCES') return 'permission denied on the socket';
  if (m?.[1] === 'ENOTSOCK') return 'not a socket';
  return e.message;
}

/** A connection the proxy carries, with the identities at its two ends (for inbound, the caller is `from`). */
interface Live {
  readonly from: string | undefined;
  readonly to: string;
  readonly socket: Socket;
}

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/**
 * Whether a plaintext client opens with the HTTP/2 connection preface (RFC 9113 3.4: prior
 * knowledge, as gRPC clients do over h2c), judged on its first bytes, which are put back. Decided
 * only once the bytes differ from the preface or hold all of it: a first read of "P" may be "POST".
 * A client that ends before that, or is still undecided after 30 s, sent no complete request of
 * either kind, and is closed.
 */
export function sniffH2(local: Socket, then: (h2: boolean) => void, timeoutMs = 30_000): void {
  let seen: Buffer = Buffer.alloc(0);
  const onData = (d: Buffer): void => {
    seen = seen.length ? Buffer.concat([seen, d]) : d;
    const n = Math.min(seen.length, H2_PREFACE.length);
    const same = seen.compare(H2_PREFACE, 0, n, 0, n) === 0;
    if (same && n < H2_PREFACE.length) return;
    clearTimeout(slow);
    local.off('data', onData);
    local.off('end', onEnd);
    local.pause();
    local.unshift(seen);
    then(same);
  };
  const onEnd = (): void => void local.destroy();
  // A client that stops inside the preface's first bytes holds nothing for long (as the relay
  // gives a request head 30 s).
  const slow = setTimeout(() => local.destroy(), timeoutMs);
  slow.unref();
  local.once('close', () => clearTimeout(slow));
  local.on('error', () => undefined);
  local.on('data', onData);
  local.once('end', onEnd);
}

/** A JSON answer on an HTTP/2 stream (unless the client is gone). */
function answerStream(stream: ServerHttp2Stream, status: number, o: object, fields: OutgoingHttpHeaders = {}): void {
  if (stream.destroyed || stream.headersSent) return;
  const body = JSON.stringify(o);
  stream.respond({ ':status': status, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...fields });
  stream.end(body);
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'http2-settings',
  'host',
  'x-writ-peer-id',
]);

/** A request's Via field with this hop added (RFC 9110 7.6.3), received over HTTP/2. */
function via(h: IncomingHttpHeaders): string {
  const v = h['via'];
  return `${v ? `${Array.isArray(v) ? v.join(', ') : v}, ` : ''}2 ${VIA}`;
}

/** The end-to-end fields of a message: no pseudo-header (but `:status` when `status`), nothing hop-by-hop. */
function endToEnd(h: IncomingHttpHeaders, status = false): OutgoingHttpHeaders {
  const o: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if ((!k.startsWith(':') || (status && k === ':status')) && !HOP_BY_HOP.has(k) && v !== undefined) o[k] = v;
  return o;
}

export class WritProxy {
  readonly #o: ProxyOptions;
  #source!: X509Source;
  #jwt: JwtSource | undefined;
  #policy!: LocalPolicy;
  readonly #servers: Array<NetServer | TlsServer> = [];
  readonly #live = new Set<Live>();
  #reporter!: DecisionReporter;
  #enforcer!: EnforcerOptions;
  /** Why the proxy's own identity is withdrawn, while it is; then it carries nothing. */
  #withdrawn: string | undefined;

  constructor(opts: ProxyOptions) {
    this.#o = opts;
  }

  get spiffeId(): string {
    return this.#source.svid.spiffeId;
  }

  async start(): Promise<Array<{ kind: string; port: number }>> {
    const timeoutMs = this.#o.waitTimeoutMs ?? 60_000;
    this.#source = await this.#waitForSvid(timeoutMs);
    this.#policy = await LocalPolicy.create({ endpoint: this.#o.endpoint, timeoutMs });
    // The JWT bundles verify the Writ tokens requests carry (HTTP inbound only).
    if (this.#o.inbound.some((ib) => ib.mode === 'http')) this.#jwt = await JwtSource.create({ endpoint: this.#o.endpoint, timeoutMs });
    this.#reporter = new DecisionReporter(this.#o.endpoint);
    const reporter = this.#reporter;
    this.#enforcer = {
      decide: (r) => this.#policy.decide(r),
      record: (d) => reporter.record(d),
      log: (entry) => this.#o.log.info(entry, 'decision'),
    };
    // Quarantine (or any policy change) re-checks live connections; the denied ones are closed.
    this.#policy.onUpdate(() => (this.#checkIdentity(), this.#recheck()));
    this.#source.on('withdrawn', () => this.#checkIdentity());
    this.#source.on('update', () => this.#checkIdentity());
    const ports: Array<{ kind: string; port: number }> = [];
    for (const ib of this.#o.inbound)
      ports.push({ kind: `inbound-${ib.mode}`, port: await this.#listen(ib.mode === 'http' ? this.#httpInbound(ib) : this.#tcpInbound(ib), ib.listen) });
    for (const ob of this.#o.outbound) ports.push({ kind: 'outbound', port: await this.#listen(this.#outbound(ob), ob.listen) });
    return ports;
  }

  /**
   * The workload's X.509 source, once the agent gives it the SVID asked for. Meanwhile it says,
   * within a second and then every few seconds, what it is waiting for and why; after `timeoutMs`
   * it gives up with that reason.
   */
  async #waitForSvid(timeoutMs: number): Promise<X509Source> {
    const want = this.#o.spiffeId;
    const socket = this.#o.endpoint;
    const what = want ?? 'an X.509-SVID';
    let why = 'the agent has not answered yet';
    let said = false;
    const say = (): void => {
      said = true;
      this.#o.log.warn({ socket, waitingFor: what, reason: why }, `waiting for ${what} from the Workload API at ${socket}: ${why}`);
    };
    // A new reason is said at once (retries back off, so that is no flood); a slow agent after a moment.
    const first = setTimeout(() => said || say(), WAIT_FIRST_MS);
    const every = setInterval(say, WAIT_REPEAT_MS);
    try {
      return await X509Source.create({
        endpoint: socket,
        timeoutMs,
        onWaiting: (w) => {
          const next = waitReason(w, want);
          if (next !== why) (why = next), say();
        },
        ...(want ? { pick: (s) => s.find((x) => x.spiffeId === want) } : {}),
      });
    } catch (err) {
      if (!isWritError(err, 'ERR_REQUEST_FAILED')) throw err;
      throw new WritError('ERR_REQUEST_FAILED', `gave up after ${formatDuration(timeoutMs)} waiting for ${what} from the Workload API at ${socket}: ${why}`);
    } finally {
      clearTimeout(first);
      clearInterval(every);
    }
  }

  async #listen(server: NetServer | TlsServer, at: { host: string; port: number }): Promise<number> {
    this.#servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'EADDRINUSE'
            ? 'the address is in use (EADDRINUSE: another process listens there)'
            : err.code === 'EACCES'
              ? 'permission denied (EACCES: ports below 1024 need privileges)'
              : err.code === 'EADDRNOTAVAIL'
                ? 'no such local address (EADDRNOTAVAIL)'
                : err.message;
        reject(new WritError('ERR_CONFIG_INVALID', `cannot listen on ${at.host.includes(':') ? `[${at.host}]` : at.host}:${at.port}: ${why}`));
      });
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

  /** Decides through the enforcement core: id, report to the agent, a log line for each deny. */
  #decide(peer: string | undefined, action: ActionRequest, headers?: Record<string, string>, read?: TokenRead): Enforced {
    const token = read?.token;
    return enforce(this.#enforcer, { from: peer, to: this.spiffeId, action, ...(headers ? { headers } : {}), ...(token ? { token } : {}) });
  }

  /** The Writ token of a request (Txn-Token or Authorization: Bearer), verified for this proxy's identity; `{}` without one. */
  #token(authorization: string | undefined, txnToken: string | undefined): TokenRead {
    if ((authorization === undefined && txnToken === undefined) || !this.#jwt) return {};
    const to = this.spiffeId;
    return readToken({ authorization, txnToken }, { bundles: this.#jwt.bundles, trustDomain: parseSpiffeId(to).trustDomain, audience: to });
  }

  #track(from: string | undefined, to: string, socket: Socket): void {
    const l = { from, to, socket };
    this.#live.add(l);
    socket.once('close', () => this.#live.delete(l));
  }

  #quarantined(from: string | undefined, to: string): boolean {
    return this.#policy.decide({ from, to, action: { kind: 'tcp', port: 0 } }).reason === 'QUARANTINED';
  }

  #recheck(): void {
    for (const l of this.#live) {
      if (!l.socket.destroyed && this.#quarantined(l.from, l.to)) {
        this.#o.log.warn({ from: l.from, to: l.to }, 'closing a live connection: quarantined');
        l.socket.destroy();
      }
    }
  }

  /**
   * Follows whether the agent still issues this proxy its identity. Withdrawn, every connection it
   * carries is closed (the app's own included, which no remote side can close) and new ones are
   * refused; issued again, it serves again.
   */
  #checkIdentity(): void {
    const id = this.spiffeId;
    const why = this.#source.withdrawn
      ? 'the agent no longer issues it (no identity issued)'
      : this.#policy.isQuarantined(id)
        ? 'it is quarantined'
        : undefined;
    if (why === this.#withdrawn) return;
    this.#withdrawn = why;
    if (!why) return void this.#o.log.info({ spiffeId: id }, `identity ${id} issued again: serving`);
    this.#o.log.warn(
      { spiffeId: id, reason: why, closing: this.#live.size },
      `identity ${id} withdrawn (${why}): closing every live connection and refusing new ones until it is issued again`,
    );
    for (const l of this.#live) l.socket.destroy();
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
      if (this.#withdrawn) return void socket.destroy();
      const peer = this.#peer(socket);
      if (!this.#decide(peer?.uri, { kind: 'tcp', port: ib.listen.port }).decision.allowed) return void socket.destroy();
      this.#track(peer?.uri, this.spiffeId, socket);
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
    const h2 = createSecureServer({ allowHTTP1: false, settings: { maxConcurrentStreams: 256 } });
    // An h2c app gets raw streams (trailers pass as they are); an HTTP/1.1 app the compatibility API.
    if (ib.upstreamProtocol === 'h2c') h2.on('stream', (stream, headers) => this.#forwardH2c(stream, headers, ib));
    else h2.on('request', (req, res) => this.#forward(req, res, ib));
    h2.on('sessionError', () => undefined);
    const pool = new UpstreamPool((onData) => connectTcp(ib.upstream.host, ib.upstream.port, onData));
    this.#pools.push(pool);
    // An app that speaks HTTP/2 (h2c://) is reached by HTTP/2 clients only: an HTTP/1.1 request
    // cannot carry what such apps rely on (gRPC's trailers).
    const h2Only = ib.upstreamProtocol === 'h2c';
    const server = tlsCreateServer(
      { ...this.#tlsOptions(), ALPNProtocols: h2Only ? ['h2'] : ['h2', 'http/1.1'] },
      (socket: TLSSocket & { writPeer?: string | undefined }) => {
        socket.on('error', () => undefined);
        if (this.#withdrawn) return void socket.destroy();
        socket.setNoDelay(true);
        const peer = (socket.writPeer = this.#peer(socket)?.uri);
        this.#track(peer, this.spiffeId, socket);
        if (socket.alpnProtocol === 'h2') return void h2.emit('secureConnection', socket);
        if (h2Only) return void socket.end(response(505, { code: 'ERR_HTTP_VERSION', message: 'this service is reached over HTTP/2 only (ALPN h2)' }, true));
        relayHttp1(socket, {
          pool,
          // The app learns the caller from this field only; a client-sent one never passes.
          addFields: peer ? [['x-writ-peer-id', peer]] : [],
          dropFields: ['x-writ-peer-id'],
          authorize: (r) => {
            // Read only when a rule has header conditions: no per-request copy of every field.
            const headers = new Proxy<Record<string, string>>(
              {},
              { get: (_t, name) => (typeof name === 'string' ? r.fields.all(name).join(', ') || undefined : undefined) },
            );
            const method = r.method.toUpperCase();
            const read = this.#token(r.fields.all('authorization')[0], r.fields.all('txn-token')[0]);
            // The content type is looked at only for a POST (a gRPC call is one).
            return httpRefusal(
              this.#decide(peer, httpAction(method, r.path, method === 'POST' ? r.fields.all('content-type')[0] : undefined, ib.listen.port), headers, read),
              read,
            );
          },
          onUpstreamError: (err) => this.#o.log.warn({ upstream: `${ib.upstream.host}:${ib.upstream.port}`, err: err.message }, 'upstream unavailable'),
        });
      },
    );
    server.on('tlsClientError', (_e, s) => s.destroy());
    this.#rotate(server);
    return server;
  }

  /**
   * Decides one HTTP/2 request. A refusal is answered on the stream here (400 for a path that is
   * not in normal form, 403 `{code, decisionId}`, or for a gRPC call a gRPC status) and undefined
   * returned; otherwise the caller's identity.
   */
  #admitH2(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ib: Inbound): { peer: string | undefined; maxForwards?: number } | undefined {
    const peer = (stream.session?.socket as (TLSSocket & { writPeer?: string }) | undefined)?.writPeer;
    const method = String(headers[':method'] ?? 'GET').toUpperCase();
    const fields: Record<string, string> = {};
    for (const [k, v] of Object.entries(headers)) if (typeof v === 'string' && !k.startsWith(':')) fields[k] = v;
    let path: string;
    try {
      path = requestPath(String(headers[':path'] ?? '/'));
    } catch (err) {
      return void answerStream(stream, 400, pathRefusal(err).body);
    }
    const action = httpAction(method, path, fields['content-type'], ib.listen.port);
    const read = this.#token(fields['authorization'], fields['txn-token']);
    const e = this.#decide(peer, action, fields, read);
    const grpc = action.kind === 'grpc' ? grpcRefusal(e, read) : undefined;
    const http = action.kind === 'grpc' ? undefined : httpRefusal(e, read);
    if (!grpc && !http) {
      if (method !== 'OPTIONS' && method !== 'TRACE') return { peer };
      // Max-Forwards (RFC 9110 7.6.2): at 0 this hop is the final recipient; otherwise one fewer.
      let mf: number | undefined;
      try {
        mf = parseMaxForwards(fields['max-forwards'] === undefined ? [] : [fields['max-forwards']]);
      } catch (err) {
        return void answerStream(stream, 400, { code: 'ERR_BAD_REQUEST', message: (err as Error).message });
      }
      if (mf !== 0) return { peer, ...(mf !== undefined ? { maxForwards: mf - 1 } : {}) };
      const a = finalHop(method);
      if (a.status === 405) return void answerStream(stream, a.status, a.body, { allow: a.allow });
      if (!stream.destroyed) stream.respond({ ':status': 200, 'content-length': 0 }, { endStream: true });
      return undefined;
    }
    if (http) return void answerStream(stream, http.status, http.body, http.headers);
    // A gRPC client reads a gRPC status in a trailers-only answer, the reason and decision id in grpc-message.
    if (grpc && !stream.destroyed) {
      stream.respond(
        {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': String(grpc.status),
          'grpc-message': grpc.message,
          'x-writ-decision-id': e.decisionId,
        },
        { endStream: true },
      );
    }
    return undefined;
  }

  /** HTTP/2 from the client, HTTP/1.1 to the app (through Node's compatibility API and http.request). */
  #forward(req: Http2ServerRequest, res: Http2ServerResponse, ib: Inbound): void {
    const ok = this.#admitH2(req.stream, req.headers, ib);
    if (!ok) return;
    const out = endToEnd(req.headers);
    out['host'] = String(req.headers[':authority'] ?? req.headers['host'] ?? `${ib.upstream.host}:${ib.upstream.port}`);
    if (ok.peer) out['x-writ-peer-id'] = ok.peer;
    out['via'] = via(req.headers);
    if (ok.maxForwards !== undefined) out['max-forwards'] = String(ok.maxForwards);
    const up = httpRequest({ host: ib.upstream.host, port: ib.upstream.port, method: req.method, path: req.url, headers: out, agent: this.#agent }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, endToEnd(ur.headers));
      ur.pipe(res);
    });
    up.on('error', (err) => {
      if (!res.headersSent)
        answerStream(req.stream, 502, { code: 'ERR_UPSTREAM', message: `upstream unavailable: ${(err as NodeJS.ErrnoException).code ?? err.message}` });
      else res.destroy();
    });
    req.pipe(up);
  }

  /**
   * HTTP/2 from the client to an app that speaks HTTP/2 without TLS (h2c://, a gRPC server), on raw
   * streams: each request a stream on one kept-open upstream session; response headers, body and
   * trailers (gRPC's status) passed on as they come, a trailers-only answer as one HEADERS frame.
   */
  #forwardH2c(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ib: Inbound): void {
    // A client's RST_STREAM with an error code is an 'error' here: never one without a listener.
    stream.on('error', () => undefined);
    const ok = this.#admitH2(stream, headers, ib);
    if (!ok) return;
    const out: OutgoingHttpHeaders = {
      ':method': headers[':method'],
      ':path': headers[':path'],
      ':scheme': 'http',
      ':authority': headers[':authority'] ?? `${ib.upstream.host}:${ib.upstream.port}`,
      ...endToEnd(headers),
    };
    // The one TE value HTTP/2 allows, and gRPC requires.
    if (headers['te'] === 'trailers') out['te'] = 'trailers';
    if (ok.peer) out['x-writ-peer-id'] = ok.peer;
    out['via'] = via(headers);
    if (ok.maxForwards !== undefined) out['max-forwards'] = String(ok.maxForwards);
    const failed = (err: Error): void => {
      if (stream.destroyed) return;
      if (!stream.headersSent)
        answerStream(stream, 502, { code: 'ERR_UPSTREAM', message: `upstream unavailable: ${(err as NodeJS.ErrnoException).code ?? err.message}` });
      else stream.close(h2constants.NGHTTP2_INTERNAL_ERROR);
    };
    let up: ClientHttp2Stream;
    try {
      up = this.#h2cSession(ib).request(out);
    } catch (err) {
      return failed(err as Error);
    }
    up.on('response', (h, flags) => {
      if (stream.destroyed) return;
      if (flags & h2constants.NGHTTP2_FLAG_END_STREAM) return void stream.respond(endToEnd(h, true), { endStream: true });
      let trailers: OutgoingHttpHeaders = {};
      up.on('trailers', (t) => (trailers = endToEnd(t)));
      stream.respond(endToEnd(h, true), { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers(trailers));
      up.pipe(stream);
    });
    up.on('error', failed);
    stream.on('close', () => void (up.closed || up.close(h2constants.NGHTTP2_CANCEL)));
    stream.pipe(up);
  }

  readonly #h2c = new Map<Inbound, ClientHttp2Session>();

  #h2cSession(ib: Inbound): ClientHttp2Session {
    const open = this.#h2c.get(ib);
    if (open && !open.closed && !open.destroyed) return open;
    const host = ib.upstream.host.includes(':') ? `[${ib.upstream.host}]` : ib.upstream.host;
    const s = http2Connect(`http://${host}:${ib.upstream.port}`);
    const forget = (): void => void (this.#h2c.get(ib) === s && this.#h2c.delete(ib));
    s.on('error', (err) => (forget(), this.#o.log.warn({ upstream: `${ib.upstream.host}:${ib.upstream.port}`, err: err.message }, 'upstream unavailable')));
    s.on('close', forget);
    s.on('goaway', forget);
    this.#h2c.set(ib, s);
    return s;
  }

  readonly #agent = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  readonly #pools: UpstreamPool[] = [];

  #outbound(ob: Outbound): NetServer {
    // Nothing is carried while this proxy's identity is withdrawn, nor to a quarantined server.
    const refused = (): string | undefined =>
      this.#withdrawn
        ? `this proxy's identity is withdrawn: ${this.#withdrawn}`
        : this.#quarantined(this.spiffeId, ob.spiffeId)
          ? `${ob.spiffeId} is quarantined`
          : undefined;
    const open = async (onData?: OnData, alpn?: readonly string[]): Promise<Socket> => {
      const check = (): void => {
        const no = refused();
        if (no) throw new WritError('ERR_FORBIDDEN', `not connecting to ${ob.spiffeId}: ${no}`);
      };
      check();
      let remote: Socket;
      try {
        remote = await mtlsConnect({
          source: this.#source,
          authorize: authorizeId(ob.spiffeId),
          host: ob.target.host,
          port: ob.target.port,
          ...(onData ? { onData } : {}),
          ...(alpn ? { alpn } : {}),
        });
      } catch (err) {
        // Withdrawn while the handshake was under way: not the server's fault.
        check();
        this.#o.log.warn(
          { target: `${ob.target.host}:${ob.target.port}`, expected: ob.spiffeId, err: (err as Error).message },
          'outbound connection refused: the server is not who it should be',
        );
        throw err;
      }
      remote.setNoDelay(true);
      this.#track(this.spiffeId, ob.spiffeId, remote);
      // Withdrawn or quarantined while the handshake was under way: the closing passed this one by.
      if (refused()) remote.destroy();
      check();
      return remote;
    };
    /** A connection from the app, carried unless refused. */
    const accept = (local: Socket): boolean => {
      local.on('error', () => undefined);
      if (refused()) {
        local.destroy();
        return false;
      }
      this.#track(this.spiffeId, ob.spiffeId, local);
      return true;
    };
    // One mTLS connection per client connection. Nagle off everywhere: a proxy that batches small
    // writes turns into 40 ms delayed-ACK stalls.
    const tunnel = (local: Socket, alpn?: readonly string[]): void => {
      local.pause();
      open(undefined, alpn).then(
        (remote) => {
          remote.on('error', () => local.destroy());
          local.on('close', () => remote.destroy());
          remote.on('close', () => local.destroy());
          local.pipe(remote).pipe(local);
          local.resume();
        },
        () => local.destroy(),
      );
    };
    if (ob.mode === 'http') {
      // Requests go over kept-alive mTLS connections: a new client connection costs no handshake.
      // Idle mTLS connections are kept a minute (a writ inbound keeps them two): re-opening one
      // costs a handshake on both sides, which is what a latency tail is made of.
      const pool = new UpstreamPool(open, { idleMs: 60_000 });
      this.#pools.push(pool);
      // allowHalfOpen: a client that half-closes after its request still gets the answer.
      return netCreateServer({ noDelay: true, allowHalfOpen: true }, (local) => {
        if (!accept(local)) return;
        // A client that speaks HTTP/2 from its first byte (gRPC over h2c) is tunnelled with ALPN h2.
        // (HTTP clients speak first, so waiting for the first bytes cannot stall a protocol.)
        sniffH2(local, (h2) => (h2 ? tunnel(local, ['h2']) : (relayHttp1(local, { pool }), local.resume())));
      });
    }
    // Not sniffed: in many protocols the server speaks first (MySQL, SMTP).
    return netCreateServer({ noDelay: true }, (local) => accept(local) && tunnel(local));
  }

  async close(): Promise<void> {
    for (const l of this.#live) l.socket.destroy();
    await Promise.all(this.#servers.map((s) => new Promise((r) => s.close(() => r(undefined)))));
    await this.#reporter?.close();
    this.#policy?.close();
    this.#source?.close();
    this.#jwt?.close();
    this.#agent.destroy();
    for (const s of this.#h2c.values()) s.destroy();
    for (const p of this.#pools) p.close();
  }
}
