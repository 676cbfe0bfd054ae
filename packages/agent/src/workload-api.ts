/**
 * The SPIFFE Workload API on the agent's Unix socket: gRPC service `SpiffeWorkloadAPI` (no proto
 * package), per SPIFFE_Workload_Endpoint.md and SPIFFE_Workload_API.md. The caller is identified by
 * the kernel's credentials of its connection, attested when it connects and re-checked per call.
 */
import { chmodSync, existsSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { JwtSvidValidator, formatBundleJson, isWritError, parseSpiffeId, trustDomainId, type TrustBundle } from '@writ/spiffe';
import type { AuthzRequest, Decision } from '@writ/policy';
import {
  GRPC_STATUS,
  GrpcError,
  type ServerCall,
  Writer,
  acceptUnaryRequest,
  fields,
  decodeJwtSvidRequest,
  decodeValidateJwtSvidRequest,
  encodeJwtBundlesResponse,
  encodeJwtSvidResponse,
  encodeValidateJwtSvidResponse,
  encodeX509BundlesResponse,
  encodeX509SvidResponse,
  type JwtSvid,
  decisionShape,
  decodeDecision,
  enforce,
  newDecisionId,
  parseCheckAction,
  readReport,
  type ReportedDecision,
  TOKEN_BROKER_EXCHANGE,
  decodeExchangeRequest,
  encodeExchangeResponse,
} from '@writ/sdk/internal';
import type { WorkloadAttestor } from './attest/attestation.ts';
import { attestUnix, exeIdentity, processStartTime, type ExeIdentity } from './attest/unix.ts';
import type { PolicyView } from './enforcement-state.ts';
import type { Withheld } from './entry-matcher.ts';
import type { MintedJwtSvid } from './jwt-svids.ts';
import { peerCred, type PeerCred } from './peercred.ts';
import type { ServerApi } from './server-client.ts';
import type { ServedSvid } from './svid-manager.ts';
import type { EntryView } from './sync.ts';
import { TokenBroker } from './token-broker.ts';
import { type AttestedCaller, type WorkloadReporter, describeWorkload } from './workload-reporter.ts';

const SERVICE = '/SpiffeWorkloadAPI/';
const AUTHZ_CHECK = '/writ.authz.v1.Authorizer/Check';
const WATCH_POLICY = '/writ.authz.v1.PolicyDistribution/WatchPolicy';
const DECISION_REPORT = '/writ.authz.v1.DecisionLog/Report';
const WHO_AM_I = '/writ.agent.v1.Debug/WhoAmI';

function decodeCheckRequest(buf: Buffer): { from: string; to: string; action: string; headers: Record<string, string> } {
  const out = { from: '', to: '', action: '', headers: {} as Record<string, string> };
  for (const f of fields(buf)) {
    if (f.wire !== 2) continue;
    if (f.field === 1) out.from = f.data.toString('utf8');
    else if (f.field === 2) out.to = f.data.toString('utf8');
    else if (f.field === 3) out.action = f.data.toString('utf8');
    else if (f.field === 4) {
      let k = '';
      let v = '';
      for (const e of fields(f.data)) {
        if (e.field === 1) k = e.data.toString('utf8');
        else if (e.field === 2) v = e.data.toString('utf8');
      }
      out.headers[k.toLowerCase()] = v;
    }
  }
  return out;
}

function encodeCheckResponse(r: { allowed: boolean; decision: string; reason: string; rule: string; policyRevision: number; decisionId: string }): Buffer {
  const w = new Writer().bool(1, r.allowed).string(2, r.decision).string(3, r.reason).string(4, r.rule);
  if (r.policyRevision > 0) w.enumValue(5, r.policyRevision);
  return w.string(6, r.decisionId).finish();
}
const MAX_REQUEST_BYTES = 64 * 1024;
const KINDS = ['allow', 'deny', 'audit-would-deny'].map((k) => Buffer.from(k));
/** Decision reports carry many decisions: fewer, larger messages (each call is attested). */
const MAX_REPORT_BYTES = 1024 * 1024;
const kCaller = Symbol('writ.caller');
/** Methods that answer with a stream: the workload runs while one is open. */
const STREAMING: ReadonlySet<string> = new Set(['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles', WATCH_POLICY]);

interface Caller {
  readonly cred: PeerCred;
  readonly startTime: string;
  /** The executable when the connection was accepted (opened then, hashed meanwhile). */
  readonly exe: Promise<ExeIdentity | undefined>;
}

/**
 * What the Workload API needs of the agent (Agent implements it; testing/fake-agent.ts fakes it):
 * who gets which entries, their SVIDs and bundles, JWT-SVIDs, the local policy, and where
 * decisions and served workloads go. `update` is emitted whenever any of that changed.
 */
export interface WorkloadApiAgent {
  readonly trustDomain: string;
  /** The agent's own SPIFFE ID (WhoAmI). */
  readonly spiffeId: string;
  entriesFor(selectors: readonly string[]): EntryView[];
  withheldFor(selectors: readonly string[]): Withheld[];
  /** The SPIFFE IDs of every current entry (the token broker keeps only their tokens). */
  currentIds(): ReadonlySet<string>;
  svidOf(entry: EntryView): ServedSvid | undefined;
  /** Own trust domain's bundle plus those the given entries federate with. */
  bundlesFor(entries: readonly EntryView[]): Map<string, TrustBundle>;
  jwtSvid(entry: EntryView, audience: readonly string[]): Promise<MintedJwtSvid>;
  policyFor(ids: readonly string[]): PolicyView;
  /** The local decision engine: decides Check, and says who is quarantined. */
  readonly engine: { decide(req: AuthzRequest): Decision; readonly quarantined: ReadonlySet<string> };
  logDecision(d: ReportedDecision | Buffer): void;
  countDropped(n: number): void;
  readonly workloads: Pick<WorkloadReporter, 'served' | 'opened'>;
  /** The server client (the token broker posts exchanges with it). */
  readonly server: Pick<ServerApi, 'postForm'>;
  on(event: 'update', listener: () => void): unknown;
}

export interface WorkloadApiOptions {
  readonly agent: WorkloadApiAgent;
  readonly socketPath: string;
  /** File mode of the socket; default 0o777: attestation, not permissions, decides who gets what. */
  readonly socketMode?: number;
  readonly log: Logger;
  /** Extra selectors for a caller (docker, k8s attestors); unix selectors are always there. */
  readonly attestors?: ReadonlyArray<WorkloadAttestor>;
  /** Where the process table is mounted (tests give a directory of their own); default /proc. */
  readonly proc?: string;
}

const derConcat = (certs: ReadonlyArray<{ der: Buffer }>): Buffer => Buffer.concat(certs.map((c) => c.der));

export class WorkloadApiServer {
  readonly #o: WorkloadApiOptions;
  readonly #server: Http2Server;
  readonly #streams = new Set<() => void>();
  readonly #sockets = new Set<Socket>();
  readonly #broker: TokenBroker;

  constructor(opts: WorkloadApiOptions) {
    this.#o = opts;
    this.#server = createServer({ settings: { maxConcurrentStreams: 1000 }, maxSessionMemory: 16 });
    // Credentials are read the moment the connection is accepted, before the caller can do anything.
    this.#server.on('connection', (socket: Socket) => {
      try {
        const cred = peerCred(socket);
        try {
          const startTime = processStartTime(cred.pid, opts.proc);
          (socket as unknown as Record<symbol, Caller>)[kCaller] = { cred, startTime, exe: exeIdentity(cred.pid, opts.proc) };
        } catch {
          /* caller already gone: its calls are refused */
        }
        this.#sockets.add(socket);
        socket.on('close', () => this.#sockets.delete(socket));
      } catch (err) {
        opts.log.warn({ err: (err as Error).message }, 'cannot read peer credentials; closing the connection');
        socket.destroy();
      }
    });
    const agent = opts.agent;
    this.#broker = new TokenBroker({
      trustDomain: agent.trustDomain,
      jwtSvid: (e, aud) => agent.jwtSvid(e, aud),
      postForm: (path, form) => {
        const server = agent.server;
        if (!server.postForm) throw new Error('this server client cannot post forms');
        return server.postForm(path, form);
      },
    });
    this.#server.on('sessionError', () => undefined);
    this.#server.on('stream', (stream, headers) => this.#onStream(stream, headers));
    opts.agent.on('update', () => {
      this.#broker.retain(opts.agent.currentIds());
      for (const push of this.#streams) push();
    });
  }

  async listen(): Promise<void> {
    const p = this.#o.socketPath;
    if (existsSync(p)) {
      if (!lstatSync(p).isSocket()) throw new Error(`${p} exists and is not a socket; refusing to replace it`);
      unlinkSync(p); // a stale socket from a previous run
    }
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(p, () => resolve());
    });
    chmodSync(p, this.#o.socketMode ?? 0o777);
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((r) => this.#server.close(() => r()));
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    acceptUnaryRequest(
      stream,
      headers,
      headers[':path'] === DECISION_REPORT ? MAX_REPORT_BYTES : MAX_REQUEST_BYTES,
      (call, request) => void this.#dispatch(call, request, stream).catch((err) => call.fail(err)),
    );
  }

  async #caller(stream: ServerHttp2Stream): Promise<{ selectors: string[]; workload: AttestedCaller }> {
    const socket = stream.session?.socket as unknown as Record<symbol, Caller | undefined> | undefined;
    const caller = socket?.[kCaller];
    if (!caller) throw new GrpcError(GRPC_STATUS.PERMISSION_DENIED, 'the calling process could not be identified');
    try {
      const { selectors } = await attestUnix(caller.cred, {
        expectedStartTime: caller.startTime,
        expectedExe: caller.exe,
        ...(this.#o.proc ? { proc: this.#o.proc } : {}),
      });
      let containerId: string | undefined;
      let annotations: Readonly<Record<string, string>> | undefined;
      for (const a of this.#o.attestors ?? []) {
        try {
          const r = await a(caller.cred);
          if (Array.isArray(r)) selectors.push(...r);
          else {
            selectors.push(...r.selectors);
            containerId ??= r.containerId;
            annotations ??= r.annotations;
          }
        } catch (err) {
          // A runtime that does not answer adds no selectors; entries needing them do not match.
          this.#o.log.warn({ pid: caller.cred.pid, err: (err as Error).message }, 'a workload attestor failed');
        }
      }
      // The runtimes were asked about a PID; if it now belongs to another process (the caller died and
      // its PID was reused while they answered), their selectors describe that one: refuse.
      if (this.#o.attestors?.length) {
        let now: string | undefined;
        try {
          now = processStartTime(caller.cred.pid, this.#o.proc);
        } catch {
          /* gone */
        }
        if (now !== caller.startTime) throw new Error(`workload process ${caller.cred.pid} changed while its container was being attested`);
      }
      return { selectors, workload: { pid: caller.cred.pid, startTime: caller.startTime, selectors, containerId, annotations } };
    } catch (err) {
      throw new GrpcError(GRPC_STATUS.PERMISSION_DENIED, `workload attestation failed: ${(err as Error).message}`);
    }
  }

  /** Tells the reporter what was served to whom: a stream until it closes, a unary call as a sighting. */
  #served(call: ServerCall, method: string, attested: AttestedCaller, selectors: readonly string[]): void {
    // Reporting never stands in the way of serving: a failure here is logged and the call goes on.
    try {
      const ids = [...new Set(this.#o.agent.entriesFor(selectors).map((e) => e.spiffeId))];
      if (ids.length === 0) return;
      const workload = describeWorkload(attested);
      if (!STREAMING.has(method)) return this.#o.agent.workloads.served(workload, ids);
      const closed = this.#o.agent.workloads.opened(workload, ids);
      if (call.stream.closed || call.stream.destroyed) closed();
      else call.stream.once('close', closed);
    } catch (err) {
      this.#o.log.warn({ pid: attested.pid, err: (err as Error).message }, 'cannot track the workload for the server report');
    }
  }

  async #dispatch(call: ServerCall, request: Buffer, stream: ServerHttp2Stream): Promise<void> {
    if (call.method === AUTHZ_CHECK) return this.#check(call, request, stream);
    if (call.method === DECISION_REPORT) return this.#report(call, request, stream);
    if (call.method === WHO_AM_I) return this.#whoAmI(call, stream);
    if (call.method === TOKEN_BROKER_EXCHANGE) return this.#exchange(call, request, stream);
    if (call.method === WATCH_POLICY) {
      if (call.metadata['workload.spiffe.io'] !== 'true')
        return call.end(GRPC_STATUS.INVALID_ARGUMENT, 'security header missing from request: workload.spiffe.io: true');
      const { selectors, workload } = await this.#caller(stream);
      this.#served(call, WATCH_POLICY, workload, selectors);
      return this.#stream(call, () => {
        const ids = this.#o.agent.entriesFor(selectors).map((e) => e.spiffeId);
        if (ids.length === 0) throw new GrpcError(GRPC_STATUS.PERMISSION_DENIED, 'no identity issued');
        const p = this.#o.agent.policyFor(ids);
        const w = new Writer();
        if (p.revision > 0) w.enumValue(1, p.revision);
        for (const d of p.documents) w.message(2, Buffer.from(d, 'utf8'));
        for (const q of p.quarantine) w.message(3, Buffer.from(q, 'utf8'));
        for (const b of p.breakGlass) w.message(4, Buffer.from(b, 'utf8'));
        // An empty update is still an update (no policy yet): always send something on change.
        return w.finish();
      });
    }
    if (!call.method.startsWith(SERVICE)) return call.end(GRPC_STATUS.UNIMPLEMENTED, `unknown service in ${call.method.slice(0, 100)}`);
    const method = call.method.slice(SERVICE.length);
    const known = ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTSVID', 'FetchJWTBundles', 'ValidateJWTSVID'];
    if (!known.includes(method)) return call.end(GRPC_STATUS.UNIMPLEMENTED, `${method.slice(0, 100)} is not implemented by this agent`);
    // SPIFFE_Workload_Endpoint.md: every request carries this header, or it is refused.
    if (call.metadata['workload.spiffe.io'] !== 'true')
      return call.end(GRPC_STATUS.INVALID_ARGUMENT, 'security header missing from request: workload.spiffe.io: true');
    const { selectors, workload } = await this.#caller(stream);
    this.#served(call, method, workload, selectors);
    const agent = this.#o.agent;
    switch (method) {
      case 'FetchX509SVID':
        return this.#stream(call, () => {
          const entries = agent.entriesFor(selectors);
          if (entries.length === 0) throw new GrpcError(GRPC_STATUS.PERMISSION_DENIED, 'no identity issued');
          const svids = entries.map((e) => agent.svidOf(e)).filter((s) => s !== undefined);
          if (svids.length === 0) return undefined; // signed soon: the stream answers when they are
          const bundles = agent.bundlesFor(entries);
          const own = bundles.get(agent.trustDomain);
          const federated = new Map<string, Buffer>();
          for (const [td, b] of bundles) if (td !== agent.trustDomain) federated.set(trustDomainId(td), derConcat(b.x509Authorities));
          return encodeX509SvidResponse({
            svids: svids.map((s) => ({
              spiffeId: s.entry.spiffeId,
              x509Svid: derConcat(s.chain),
              x509SvidKey: s.keyPkcs8Der,
              bundle: derConcat(own?.x509Authorities ?? []),
              hint: s.entry.hint,
            })),
            crl: [],
            federatedBundles: federated,
          });
        });
      case 'FetchX509Bundles':
        return this.#stream(call, () => {
          const entries = agent.entriesFor(selectors);
          if (entries.length === 0) throw new GrpcError(GRPC_STATUS.PERMISSION_DENIED, 'no identity issued');
          return encodeX509BundlesResponse({
            crl: [],
            bundles: new Map([...agent.bundlesFor(entries)].map(([td, b]) => [trustDomainId(td), derConcat(b.x509Authorities)])),
          });
        });
      case 'FetchJWTBundles':
        return this.#stream(call, () => {
          const entries = agent.entriesFor(selectors);
          if (entries.length === 0) throw new GrpcError(GRPC_STATUS.PERMISSION_DENIED, 'no identity issued');
          return encodeJwtBundlesResponse({ bundles: new Map([...agent.bundlesFor(entries)].map(([td, b]) => [trustDomainId(td), jwtBundleJson(b)])) });
        });
      case 'FetchJWTSVID': {
        const req = decodeRequest(() => decodeJwtSvidRequest(request));
        if (req.audience.length === 0 || req.audience.some((a) => a === '')) return call.end(GRPC_STATUS.INVALID_ARGUMENT, 'audience must be specified');
        let entries = agent.entriesFor(selectors);
        if (entries.length === 0) return call.end(GRPC_STATUS.PERMISSION_DENIED, 'no identity issued');
        if (req.spiffeId) {
          entries = entries.filter((e) => e.spiffeId === req.spiffeId);
          if (entries.length === 0) return call.end(GRPC_STATUS.PERMISSION_DENIED, `the workload is not entitled to ${req.spiffeId.slice(0, 200)}`);
        }
        const svids: JwtSvid[] = [];
        for (const e of uniqueBySpiffeId(entries)) {
          try {
            svids.push({ spiffeId: e.spiffeId, svid: (await agent.jwtSvid(e, req.audience)).token, hint: e.hint });
          } catch (err) {
            return call.end(GRPC_STATUS.UNAVAILABLE, `cannot mint a JWT-SVID now: ${isWritError(err) ? err.message : 'server unavailable'}`);
          }
        }
        call.send(encodeJwtSvidResponse(svids));
        return call.end();
      }
      case 'ValidateJWTSVID': {
        const req = decodeRequest(() => decodeValidateJwtSvidRequest(request));
        if (!req.audience) return call.end(GRPC_STATUS.INVALID_ARGUMENT, 'audience must be specified');
        if (!req.svid) return call.end(GRPC_STATUS.INVALID_ARGUMENT, 'svid must be specified');
        const entries = agent.entriesFor(selectors);
        if (entries.length === 0) return call.end(GRPC_STATUS.PERMISSION_DENIED, 'no identity issued');
        const bundles: Map<string, TrustBundle> = agent.bundlesFor(entries);
        try {
          const v = new JwtSvidValidator(bundles).validate(req.svid, req.audience);
          // A token minted before its subject was quarantined stays signed until it expires: the
          // quarantine decides here, as it does for every other call.
          if (agent.engine.quarantined.has(v.spiffeId.uri)) return call.end(GRPC_STATUS.INVALID_ARGUMENT, `${v.spiffeId.uri} is quarantined`);
          call.send(encodeValidateJwtSvidResponse({ spiffeId: v.spiffeId.uri, claims: v.claims as Record<string, unknown> }));
          return call.end();
        } catch (err) {
          return call.end(GRPC_STATUS.INVALID_ARGUMENT, isWritError(err) ? err.message : 'invalid JWT-SVID');
        }
      }
    }
  }

  /** writ.authz.v1.Authorizer/Check (packages/sdk/proto/writ_authz.proto): a local decision, no network hop. */
  async #check(call: ServerCall, request: Buffer, stream: ServerHttp2Stream): Promise<void> {
    if (call.metadata['workload.spiffe.io'] !== 'true')
      return call.end(GRPC_STATUS.INVALID_ARGUMENT, 'security header missing from request: workload.spiffe.io: true');
    const req = decodeRequest(() => decodeCheckRequest(request));
    const { selectors, workload } = await this.#caller(stream);
    this.#served(call, 'Check', workload, selectors);
    const mine = this.#o.agent.entriesFor(selectors).map((e) => e.spiffeId);
    if (mine.length === 0) return call.end(GRPC_STATUS.PERMISSION_DENIED, 'no identity issued');
    if (!mine.includes(req.to))
      return call.end(GRPC_STATUS.PERMISSION_DENIED, `"to" must be one of the caller's own identities (${mine.join(', ').slice(0, 300)})`);
    let action;
    try {
      action = parseCheckAction(req.action);
      if (req.from) parseSpiffeId(req.from);
    } catch (err) {
      // The code too, as the HTTP enforcement points answer it (ERR_PATH_INVALID for a dot segment).
      return call.end(GRPC_STATUS.INVALID_ARGUMENT, isWritError(err) ? `${err.message} [${err.code}]` : (err as Error).message);
    }
    const agent = this.#o.agent;
    const { decision: d, decisionId } = enforce(
      { decide: (r) => agent.engine.decide(r), record: (x) => agent.logDecision(x), log: (entry) => this.#o.log.info(entry, 'decision') },
      { from: req.from || undefined, to: req.to, action, headers: req.headers },
    );
    call.send(
      encodeCheckResponse({ allowed: d.allowed, decision: d.decision, reason: d.reason, rule: d.rule?.name ?? '', policyRevision: d.revision, decisionId }),
    );
    return call.end();
  }

  /** writ.broker.v1.TokenBroker/Exchange (packages/sdk/proto/writ_broker.proto): token exchange as the attested caller (token-broker.ts). */
  async #exchange(call: ServerCall, request: Buffer, stream: ServerHttp2Stream): Promise<void> {
    if (call.metadata['workload.spiffe.io'] !== 'true')
      return call.end(GRPC_STATUS.INVALID_ARGUMENT, 'security header missing from request: workload.spiffe.io: true');
    const req = decodeRequest(() => decodeExchangeRequest(request));
    const { selectors, workload } = await this.#caller(stream);
    this.#served(call, 'Exchange', workload, selectors);
    call.send(encodeExchangeResponse(await this.#broker.exchange(uniqueBySpiffeId(this.#o.agent.entriesFor(selectors)), req)));
    return call.end();
  }

  /** writ.agent.v1.Debug/WhoAmI (packages/sdk/proto/writ_agent_debug.proto): the caller's selectors, even when they match no entry. */
  async #whoAmI(call: ServerCall, stream: ServerHttp2Stream): Promise<void> {
    if (call.metadata['workload.spiffe.io'] !== 'true')
      return call.end(GRPC_STATUS.INVALID_ARGUMENT, 'security header missing from request: workload.spiffe.io: true');
    const { selectors } = await this.#caller(stream);
    const w = new Writer();
    for (const sel of selectors) w.string(1, sel);
    for (const e of uniqueBySpiffeId(this.#o.agent.entriesFor(selectors))) w.string(2, e.spiffeId);
    w.string(3, this.#o.agent.spiffeId);
    for (const x of this.#o.agent.withheldFor(selectors)) w.string(4, `${x.spiffeId}: ${x.reason}`);
    call.send(w.finish());
    return call.end();
  }

  /** writ.authz.v1.DecisionLog/Report: decisions made in-process by the caller, for its own identities only. */
  async #report(call: ServerCall, request: Buffer, stream: ServerHttp2Stream): Promise<void> {
    if (call.metadata['workload.spiffe.io'] !== 'true')
      return call.end(GRPC_STATUS.INVALID_ARGUMENT, 'security header missing from request: workload.spiffe.io: true');
    const { selectors, workload } = await this.#caller(stream);
    this.#served(call, 'Report', workload, selectors);
    const mine = this.#o.agent.entriesFor(selectors).map((e) => Buffer.from(e.spiffeId));
    if (mine.length === 0) return call.end(GRPC_STATUS.PERMISSION_DENIED, 'no identity issued');
    let dropped = 0;
    let malformed = 0;
    // Logged once the whole report has been read: a report that turns out malformed is refused whole.
    const accepted: Array<Buffer | ReportedDecision> = [];
    try {
      ({ dropped } = readReport(request, (bytes) => {
        let shape;
        try {
          shape = decisionShape(bytes);
        } catch {
          return void malformed++; // one malformed decision: counted as dropped, the rest still go
        }
        // A workload reports what was decided about calls to itself, nothing else (compared as
        // bytes: a decision is passed on as the reporter encoded it, never decoded here).
        const [ts, te] = shape.to;
        const [ds, de] = shape.decision;
        if (!mine.some((id) => id.compare(bytes, ts, te) === 0) || !KINDS.some((k) => k.compare(bytes, ds, de) === 0)) return;
        // Passed on as they are (copied into the agent's outgoing report); decoded and re-encoded
        // only to fill in an id or time the reporter left out.
        if (shape.complete) return void accepted.push(bytes);
        const d = decodeDecision(bytes);
        accepted.push({ ...d, id: d.id || newDecisionId(), at: d.at || Date.now() });
      }));
    } catch (err) {
      return call.end(GRPC_STATUS.INVALID_ARGUMENT, `malformed report: ${(err as Error).message}`);
    }
    for (const d of accepted) this.#o.agent.logDecision(d);
    if (dropped + malformed > 0) this.#o.agent.countDropped(dropped + malformed);
    call.send(Buffer.alloc(0));
    return call.end();
  }

  /**
   * A server stream: the full state at once, then again on every change. `build` returns the
   * encoded message, undefined when there is nothing to send yet, or throws a GrpcError to end.
   */
  #stream(call: ServerCall, build: () => Buffer | undefined): void {
    let last: Buffer | undefined;
    const push = (): void => {
      if (call.closed) return void this.#streams.delete(push);
      try {
        const msg = build();
        if (msg && (!last || !msg.equals(last))) {
          last = msg;
          call.send(msg);
        }
      } catch (err) {
        this.#streams.delete(push);
        call.fail(err);
      }
    };
    call.stream.on('close', () => this.#streams.delete(push));
    this.#streams.add(push);
    push();
  }

  get activeStreams(): number {
    return this.#streams.size;
  }
}

function decodeRequest<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new GrpcError(GRPC_STATUS.INVALID_ARGUMENT, `malformed request message: ${(err as Error).message}`);
  }
}

/** A bundle's JWT authorities as the JWK set FetchJWTBundles carries. */
function jwtBundleJson(b: TrustBundle): Buffer {
  return Buffer.from(JSON.stringify({ keys: formatBundleJson({ ...b, x509Authorities: [] }).keys }));
}

function uniqueBySpiffeId(entries: readonly EntryView[]): EntryView[] {
  const seen = new Set<string>();
  return entries.filter((e) => (seen.has(e.spiffeId) ? false : (seen.add(e.spiffeId), true)));
}
