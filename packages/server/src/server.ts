/**
 * `writ server`: opens the store, runs the CA, serves the API over HTTPS with a certificate from
 * its own CA, and keeps rotating. The thin `main` lives in the CLI.
 */
import { createPublicKey, randomUUID, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { pino, type Logger } from 'pino';
import { AGENT_PATHS, PROTOCOL_HEADER, PROTOCOL_VERSION } from '@writ/protocol';
import {
  MAX_BUNDLE_BYTES,
  WritError,
  bundleToPem,
  certificatesToPem,
  formatDuration,
  isWritError,
  parseCertificatesPem,
  toPem,
  type Certificate,
} from '@writ/spiffe';
import { CertificateAuthority, type UpstreamCa } from './ca/ca.ts';
import { generateSigner, readPrivateKey } from './ca/keys.ts';
import type { AdmissionListenConfig, ServerConfig } from './config.ts';
import { FederationRefresher } from './federation/refresher.ts';
import { httpsBundleFetcher } from './federation/fetch.ts';
import { listenBundleEndpoint, type BundleEndpointListener } from './federation/bundle-endpoint.ts';
import { RouteIndex, checkParams, checkQuery, errorReply, readBody, send, type Request, type Route } from './api/http.ts';
import { openApiDocument } from './api/openapi.ts';
import { TOKEN_PATH } from './api/token-routes.ts';
import { authenticateSession, sessionCookieOf } from './api/ui-session.ts';
import { buildRoutes, hashToken, newAdminToken, routeTable } from './api/routes.ts';
import { type AdmissionDecider, AdmissionEventWriter, AdmittedImageRecorder, admissionWebhookRoutes } from './api/admission-routes.ts';
import { createAdmissionDecider, imageCheckerOf } from './admission.ts';
import { VulnEventWatcher } from './vuln-events.ts';
import { AlertService } from './alerts/service.ts';
import { storeVulnerabilityChecker } from './vuln-gate.ts';
import { RegistryClient, loadRegistryConfig } from '@writ/oci';
import { AdmissionInventoryRecorder } from './image-sources.ts';
import { AgentAuthenticator } from './attest/authenticate.ts';
import { PsatAttestor } from './attest/psat.ts';
import { ChangeHub } from './sync/hub.ts';
import { Leases } from './leases.ts';
import { createMetrics } from './metrics.ts';
import { openStore, redactDbUrl } from './store/open.ts';
import type { AdminToken, Role, Store } from './store/types.ts';
import { Suppressions } from './suppressions.ts';
import { AuditLog, auditOrigin } from './audit/audit-log.ts';
import { loadLogKey } from './audit/log-key.ts';

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  /** The admission webhook's listener, when `--admission-listen` is set. */
  readonly admissionUrl: string | undefined;
  /** The SPIFFE bundle endpoint's URL, when `--bundle-endpoint-listen` is set. */
  readonly bundleEndpointUrl: string | undefined;
  readonly store: Store;
  readonly ca: CertificateAuthority;
  /** The alert rules' evaluator; `alerts.raise(kind, details)` raises one from elsewhere (the audit check). */
  readonly alerts: AlertService;
  /** Run-once jobs: `runOnce(name, fn)` runs `fn` on the one replica holding the lease `name`. */
  readonly leases: Leases;
  /**
   * Stops gracefully: no new connections, every waiting long poll and every later request on a
   * kept-alive connection answered 503 ERR_SERVER_DRAINING (agents move to another replica), the
   * requests under way finished, the job leases given up; then everything closes.
   */
  drain(): Promise<void>;
  close(): Promise<void>;
}

export interface StartOptions {
  readonly log?: Logger;
  readonly clock?: () => number;
}

const WEBHOOK_ROUTES: ReadonlySet<string> = new Set(['/v1/admission/validate', '/v1/admission/mutate']);
/** Routes whose every answer is on record already (admission events, the decision log): logged at debug when they succeed. */
const RECORDED_ROUTES: ReadonlySet<string> = new Set([...WEBHOOK_ROUTES, TOKEN_PATH]);
const ROLE_RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };
/** Longer URLs get 414; Node refuses a request head over 16 KiB before any handler (431, see `clientError`). */
const MAX_URL_LENGTH = 8 * 1024;

/** A malformed request head gets a JSON answer before the connection closes, instead of a silent reset. */
/**
 * A client refused mid-upload is still sending. Closing the socket once the answer is written
 * makes the kernel reset the connection when more bytes arrive, and the reset can discard the
 * answer before the client has read it (it sees EPIPE, not the 413). So the answer goes out with
 * a FIN and the rest of the upload is read and dropped until the client closes, for at most 5 s
 * and 64 MiB (nginx's lingering close).
 */
function lingerAfterAnswer(req: IncomingMessage): void {
  const socket = req.socket;
  if (!socket || socket.destroyed) return;
  socket.destroySoon = function lingeringClose(this: typeof socket): void {
    let dropped = 0;
    const timer = setTimeout(() => this.destroy(), 5_000);
    timer.unref();
    this.once('close', () => clearTimeout(timer));
    this.on('data', (chunk: Buffer) => {
      dropped += chunk.length;
      if (dropped > 64 * 1024 * 1024) this.destroy();
    });
    this.once('end', () => this.destroy());
    this.end();
    this.resume();
  };
}

function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  const overflow = err.code === 'HPE_HEADER_OVERFLOW';
  if (!socket.writable || !(overflow || err.code?.startsWith('HPE_'))) return void socket.destroy();
  const [status, text, code, message] = overflow
    ? [431, 'Request Header Fields Too Large', 'ERR_HEADERS_TOO_LARGE', 'the request head (URL and headers) is larger than 16 KiB']
    : [400, 'Bad Request', 'ERR_BAD_REQUEST', 'the request is not valid HTTP/1.1'];
  const body = `${JSON.stringify({ code, message })}\n`;
  socket.end(`HTTP/1.1 ${status} ${text}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

function loadUpstream(cfg: NonNullable<ServerConfig['upstreamCa']>, kek: string | undefined): UpstreamCa {
  const read = (f: string, what: string): string => {
    try {
      return readFileSync(f, 'utf8');
    } catch (err) {
      throw new WritError('ERR_CONFIG_INVALID', `upstream CA ${what} ${f}: ${(err as NodeJS.ErrnoException).code}`, { field: 'upstreamCa' });
    }
  };
  const chain = parseCertificatesPem(read(cfg.certFile, 'certificate'));
  if (chain.length === 0 || chain[0]!.basicConstraints?.ca !== true)
    throw new WritError('ERR_CONFIG_INVALID', `upstream CA certificate ${cfg.certFile} must start with a CA certificate`, { field: 'upstreamCa' });
  const signer = readPrivateKey(cfg.keyFile, kek);
  if (!signer.key.asymmetricKeyType || !chain[0]!.spki.equals(generatePublicSpki(signer)))
    throw new WritError('ERR_CONFIG_INVALID', `upstream CA key ${cfg.keyFile} does not match its certificate`, { field: 'upstreamCa' });
  let roots: Certificate[];
  if (cfg.bundleFile) roots = parseCertificatesPem(read(cfg.bundleFile, 'bundle'));
  else roots = chain.filter((c) => c.issuer.equals(c.subject));
  if (roots.length === 0)
    throw new WritError('ERR_CONFIG_INVALID', 'the upstream CA chain has no self-signed root; give the trust roots as a bundle file', { field: 'upstreamCa' });
  return { chain, signer, roots };
}

function generatePublicSpki(signer: { key: KeyObject }): Buffer {
  return createPublicKey(signer.key).export({ format: 'der', type: 'spki' });
}

function serverId(dataDir: string): string {
  const f = join(dataDir, 'server.id');
  if (existsSync(f)) return readFileSync(f, 'utf8').trim();
  const id = randomUUID();
  writeFileSync(f, `${id}\n`, { mode: 0o600 });
  return id;
}

export async function startServer(cfg: ServerConfig, opts: StartOptions = {}): Promise<RunningServer> {
  // Asynchronous writes (flushed synchronously at exit): a synchronous write to a pipe per request was a fifth of an exchange's CPU.
  const log =
    opts.log ??
    pino({ level: cfg.logLevel, base: { svc: 'writ-server' }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 1, sync: false }));
  const clock = opts.clock ?? Date.now;
  mkdirSync(cfg.dataDir, { recursive: true, mode: 0o700 });

  let store: Store;
  try {
    store = await openStore({
      db: cfg.db,
      dataDir: cfg.dataDir,
      onError: (err) => log.warn({ code: (err as { code?: string }).code, err: err.message }, 'database connection lost; will reconnect'),
    });
  } catch (err) {
    const why = isWritError(err) ? err.message : (err as Error).message || String((err as { code?: string }).code ?? err);
    // No `cause`: the URL parser's error carries the whole URL (its `input`), password and all.
    throw new WritError('ERR_STORE_UNAVAILABLE', `cannot open the database ${redactDbUrl(cfg.db)}: ${redactDbUrl(why)}`);
  }

  const timers: NodeJS.Timeout[] = [];
  let publicUrl = '';
  let jwtIssuer = cfg.jwtIssuer ?? '';
  let httpServer: Server | undefined;
  let admissionServer: Server | undefined;
  let admissionEvents: AdmissionEventWriter | undefined;
  let admittedImages: AdmittedImageRecorder | undefined;
  let inventory: AdmissionInventoryRecorder | undefined;
  let registry: RegistryClient | undefined;
  let hub: ChangeHub | undefined;
  let vulnEvents: VulnEventWatcher | undefined;
  let alerts: AlertService | undefined;
  let federation: FederationRefresher | undefined;
  let bundleEndpoint: BundleEndpointListener | undefined;
  let leases: Leases | undefined;
  let audit: AuditLog | undefined;
  try {
    const id = serverId(cfg.dataDir);
    leases = new Leases({ store, holder: id, clock, log });
    const ca = new CertificateAuthority({
      store,
      trustDomain: cfg.trustDomain,
      dataDir: cfg.dataDir,
      serverId: id,
      keyType: cfg.caKeyType,
      caTtlMs: cfg.caTtlMs,
      x509SvidTtlMs: cfg.x509SvidTtlMs,
      jwtSvidTtlMs: cfg.jwtSvidTtlMs,
      jwtIssuer: () => jwtIssuer,
      ...(cfg.upstreamCa ? { upstream: loadUpstream(cfg.upstreamCa, cfg.kek) } : {}),
      ...(cfg.kek ? { kek: cfg.kek } : {}),
      clock,
      onEvent: (event, fields) => log.info(fields, event),
    });
    // Publicly reachable URL: a wildcard listen address is reached through loopback locally.
    const host = cfg.host === '0.0.0.0' || cfg.host === '::' ? '127.0.0.1' : cfg.host;
    const urlHost = isIP(host) === 6 ? `[${host}]` : host;
    await ca.rotate();

    // ---------------------------------------------------------------- files the operator needs
    const bundlePath = join(cfg.dataDir, 'bundle.pem');
    const writeBundle = (): void => {
      const pem = bundleToPem(ca.bundle());
      if (!existsSync(bundlePath) || readFileSync(bundlePath, 'utf8') !== pem) writeFileSync(bundlePath, pem, { mode: 0o644 });
    };
    writeBundle();
    const tokenPath = join(cfg.dataDir, 'admin.token');
    if ((await store.listAdminTokens()).length === 0) {
      const token = newAdminToken();
      await store.createAdminToken({ id: randomUUID(), hash: hashToken(token), role: 'admin', name: 'initial', createdAt: clock(), expiresAt: null });
      writeFileSync(tokenPath, `${token}\n`, { mode: 0o600 });
      chmodSync(tokenPath, 0o600);
      log.info({ path: tokenPath }, 'wrote the initial admin token');
    }

    // ---------------------------------------------------------------- TLS identity of the server
    const serverSpiffeId = `spiffe://${cfg.trustDomain}/writ/server`;
    /** A certificate from our own CA for a listener on `listenHost` with these DNS names. */
    const issueTls = (listenHost: string, dnsNames: readonly string[]): { key: string; cert: string; expiresAt: number } => {
      const signer = generateSigner('ec-p256');
      const ips = new Set(['127.0.0.1', '::1']);
      if (isIP(listenHost) && listenHost !== '0.0.0.0' && listenHost !== '::') ips.add(listenHost);
      const dns = new Set(['localhost', ...dnsNames]);
      if (!isIP(listenHost)) dns.add(listenHost);
      const svid = ca.signX509Svid({
        spiffeId: serverSpiffeId,
        spki: signer.publicKey.export({ format: 'der', type: 'spki' }),
        dnsNames: [...dns],
        ipAddresses: [...ips],
      });
      return { key: toPem('PRIVATE KEY', signer.key.export({ format: 'der', type: 'pkcs8' })), cert: certificatesToPem(svid.chain), expiresAt: svid.expiresAt };
    };
    let tlsExpiresAt = 0;
    const tlsIdentity = (): { key: string; cert: string } => {
      const { key, cert, expiresAt } = issueTls(cfg.host, cfg.dnsNames);
      tlsExpiresAt = expiresAt;
      return { key, cert };
    };
    let ready = true;
    /** Requests being handled, and whether the server is draining (every new request then gets 503). */
    const inFlight = { count: 0, draining: false };
    const metrics = createMetrics();
    const psat = Object.keys(cfg.k8sPsat).length
      ? new PsatAttestor(cfg.k8sPsat, {
          onJwksError: (cluster, err) => log.warn({ cluster, err }, 'k8s_psat: cannot get the cluster JWKS; PSAT attestation fails until it can'),
        })
      : undefined;
    hub = new ChangeHub({
      store,
      ca,
      clock,
      breakGlass: cfg.breakGlass,
      onFeed: (live, err) => {
        if (live) {
          log.info("listening for other replicas' changes (PostgreSQL LISTEN writ_changes)");
          // What other replicas wrote while the connection was down was heard by nobody.
          vulnEvents?.changed();
        } else log.warn({ err: err?.message }, "lost the change notification connection; polling other replicas' changes every second until it is back");
      },
    });
    // The inventory's registry reads (`writ image add`, admitted images) have their own connections,
    // so they never queue behind the admission checks' within a decision budget.
    registry = new RegistryClient(cfg.registryConfigFile ? { config: loadRegistryConfig(cfg.registryConfigFile) } : {});
    federation = new FederationRefresher({
      store,
      trustDomain: cfg.trustDomain,
      ownAuthorities: () => ca.bundle().x509Authorities,
      fetch: httpsBundleFetcher({ timeoutMs: cfg.federationTimeoutMs, maxBytes: MAX_BUNDLE_BYTES }),
      clock,
      log,
      registry: metrics.registry,
    });
    const suppressions = new Suppressions(store);
    // The audit log's key sits beside the CA's (KEK-wrapped when there is one); the vkey is published for verifiers.
    const origin = auditOrigin(cfg.trustDomain);
    const logKey = loadLogKey(cfg.dataDir, origin, cfg.kek);
    writeFileSync(join(cfg.dataDir, 'audit-log.vkey'), `${logKey.vkey}\n`, { mode: 0o644 });
    alerts = new AlertService({ store, clock, log, config: cfg.alerts, trustDomain: cfg.trustDomain, breakGlass: cfg.breakGlass, metrics });
    const raiseAlert = alerts.raise.bind(alerts);
    // One replica signs checkpoints (the lease holder); each checks first that the tree extends the last one.
    leases.want('audit-checkpoint');
    const auditLeases = leases;
    audit = new AuditLog({
      store,
      origin,
      signer: logKey.signer,
      vkey: logKey.vkey,
      clock,
      log,
      runsHere: () => auditLeases.held('audit-checkpoint'),
      registry: metrics.registry,
      onInconsistent: (details) => {
        log.error(details, 'audit log: the stored tree does not extend the latest checkpoint; no checkpoint signed');
        void raiseAlert('audit-verification-failed', { ...details }, `${details.from}-${details.to}`);
      },
    });
    const ctx = {
      alerts,
      audit,
      federation,
      suppressions,
      store,
      ca,
      hub,
      trustDomain: cfg.trustDomain,
      metrics,
      clock,
      psat,
      breakGlass: cfg.breakGlass,
      requireAdmittedImage: cfg.requireAdmittedImage,
      registry,
      reportLimitBytes: cfg.reportLimitBytes,
      vulnExceptionMaxMs: cfg.vulnExceptionMaxMs,
      owners: cfg.owners,
      get publicUrl() {
        return publicUrl;
      },
      get jwtIssuer() {
        return jwtIssuer;
      },
      ready: async () => {
        try {
          await Promise.race([
            store.ping(),
            new Promise((_, rej) => setTimeout(() => rej(new WritError('ERR_STORE_UNAVAILABLE', 'database did not answer within 2s')), 2000).unref()),
          ]);
        } catch (err) {
          ready = false;
          throw isWritError(err) ? err : new WritError('ERR_STORE_UNAVAILABLE', 'the database is unavailable');
        }
        ready = true;
        ca.bundle();
      },
    };
    const routes = buildRoutes(ctx);
    const agents = new AgentAuthenticator(store, ca, () => hub?.heardAll);
    routes.push({
      method: 'GET',
      name: '/v1/openapi.json',
      pattern: /^\/v1\/openapi\.json$/,
      role: undefined,
      summary: 'This document.',
      handler: () => ({ status: 200, body: openApiDocument(routes, publicUrl) }),
    });
    // Client certificates are requested (agents present their SVID) but checked per route, not by TLS:
    // admin clients use bearer tokens and have none.
    const index = new RouteIndex(routes);
    httpServer = createServer(
      { ...tlsIdentity(), minVersion: 'TLSv1.2', handshakeTimeout: 10_000, requestCert: true, rejectUnauthorized: false },
      (req, res) => void handle(req, res, index, ctx.store, agents, metrics, log, inFlight),
    );
    audit.start();
    // Expect: 100-continue is answered by `handle` once the route, the caller and the declared size
    // are known to be acceptable, so a refused upload is refused before its body is sent (Node's
    // automatic 100 would invite the body and then lose the 413 in the connection reset).
    httpServer.on('checkContinue', (req, res) => void handle(req, res, index, ctx.store, agents, metrics, log, inFlight));
    httpServer.headersTimeout = 10_000;
    httpServer.requestTimeout = 60_000;
    httpServer.on('tlsClientError', (err, socket) => {
      log.debug({ err: err.message }, 'TLS handshake failed');
      socket.destroy();
    });
    httpServer.on('clientError', answerClientError);
    const srv = httpServer;
    await new Promise<void>((resolveListen, rejectListen) => {
      srv.once('error', (err: NodeJS.ErrnoException) =>
        rejectListen(new WritError('ERR_CONFIG_INVALID', `cannot listen on ${cfg.host}:${cfg.port}: ${err.code ?? err.message}`, { field: 'listen' })),
      );
      srv.listen(cfg.port, cfg.host, () => resolveListen());
    });
    const addr = srv.address();
    const port = typeof addr === 'object' && addr ? addr.port : cfg.port;
    publicUrl = `https://${urlHost}:${port}`;
    if (!jwtIssuer) jwtIssuer = publicUrl;

    // ---------------------------------------------------------------- the admission webhook's own listener
    // Its own port and certificate (the Service DNS name), so the cluster network reaches the two
    // webhook routes and nothing of the admin API.
    let admission: AdmissionListener | undefined;
    if (cfg.admission) {
      admissionEvents = new AdmissionEventWriter(store, log);
      admission = await listenAdmission(cfg.admission, {
        decider: createAdmissionDecider({
          store,
          clock,
          log,
          images: imageCheckerOf(cfg.registryConfigFile),
          vulnerabilities: storeVulnerabilityChecker(store, clock, suppressions),
        }),
        events: admissionEvents,
        admitted: (admittedImages = new AdmittedImageRecorder((digests, at) => store.recordAdmittedImages(digests, at), clock, log)),
        inventory: (inventory = new AdmissionInventoryRecorder({ store, registry, clock, log })),
        clock,
        log,
        metrics,
        issueTls,
        renewAfterMs: cfg.x509SvidTtlMs / 2,
        serve: (routes) => {
          const index = new RouteIndex(routes);
          return (req, res) => void handle(req, res, index, ctx.store, agents, metrics, log, inFlight);
        },
      });
      admissionServer = admission.server;
      if (!cfg.admission.clientCaFile)
        log.warn(
          'admission: no --admission-client-ca, so callers are not known to be the API server: verdicts are answered and recorded, but admit no image for requireAdmittedImage entries',
        );
    }
    const admissionUrl = admission?.url;

    // ---------------------------------------------------------------- the SPIFFE bundle endpoint's own listener
    if (cfg.bundleEndpoint) bundleEndpoint = await listenBundleEndpoint(cfg.bundleEndpoint, { ca, clock, log, issueTls, renewAfterMs: cfg.x509SvidTtlMs / 2 });
    // Peers are fetched by one replica (the lease holder); the others hear of new bundles from the store.
    const runsFederation = federation;
    timers.push(setInterval(() => void leases?.runOnce('federation-refresh', () => runsFederation.tick()), 1000).unref());

    // ---------------------------------------------------------------- vulnerability events
    // Exposures are evaluated (exceptions expire, events recorded and delivered) by the lease holder only.
    leases.want('vuln-events');
    const jobs = leases;
    // Tried once now, so the first evaluation at start runs on the replica that holds it (renewals follow every 2 s).
    await jobs.renew();
    vulnEvents = new VulnEventWatcher({
      store,
      clock,
      log,
      config: cfg.vulnEvents,
      suppressions: (_store, now) => suppressions.load(now),
      onDrop: (n) => metrics.webhookDropped.inc({ event: 'vulnerability' }, n),
      runsHere: () => jobs.held('vuln-events'),
      othersHeard: () => store.kind !== 'postgres' || hub?.feedLive === true,
    });
    vulnEvents.start();
    await alerts.start();

    // ---------------------------------------------------------------- background work
    let lastSequence = ca.bundle().sequence;
    let lastPrune = 0;
    const tick = async (): Promise<void> => {
      try {
        await ca.rotate();
        if (ca.bundle().sequence !== lastSequence) {
          lastSequence = ca.bundle().sequence;
          writeBundle(); // agents hear of it from the hub: the journal write was a store change
          log.info({ sequence: lastSequence }, 'trust bundle changed');
        }
        // Renew the server certificate at half life; new connections get it, live ones keep theirs.
        if (clock() > tlsExpiresAt - cfg.x509SvidTtlMs / 2) srv.setSecureContext({ ...tlsIdentity(), minVersion: 'TLSv1.2' });
        admission?.renew();
        bundleEndpoint?.renew();
        if (!ready)
          await ctx.ready().then(
            () => log.info('database is back'),
            () => undefined,
          );
        await jobs.runOnce('prune', () => prune());
      } catch (err) {
        if (ready) log.warn({ code: isWritError(err) ? err.code : undefined, err: (err as Error).message }, 'background rotation failed; will retry');
      }
    };
    const prune = async (): Promise<void> => {
      if (clock() - lastPrune > 3_600_000) {
        lastPrune = clock();
        const removed = await store.pruneDecisions(clock() - cfg.decisionRetentionMs);
        if (removed) log.info({ removed, retention: formatDuration(cfg.decisionRetentionMs) }, 'old decisions pruned');
        const events = await store.pruneAdmissionEvents(clock() - cfg.decisionRetentionMs);
        if (events) log.info({ removed: events, retention: formatDuration(cfg.decisionRetentionMs) }, 'old admission events pruned');
        const alertsPruned = await store.pruneAlerts(clock() - cfg.decisionRetentionMs);
        if (alertsPruned) log.info({ removed: alertsPruned, retention: formatDuration(cfg.decisionRetentionMs) }, 'old alerts pruned');
        const vulnEventsPruned = await store.pruneVulnEvents(clock() - cfg.decisionRetentionMs);
        if (vulnEventsPruned) log.info({ removed: vulnEventsPruned, retention: formatDuration(cfg.decisionRetentionMs) }, 'old vulnerability events pruned');
        // Ended workloads (and those of agents that stopped reporting) are kept as long as decisions.
        const workloads = await store.pruneWorkloads(clock() - cfg.decisionRetentionMs);
        if (workloads) log.info({ removed: workloads, retention: formatDuration(cfg.decisionRetentionMs) }, 'old workloads pruned');
      }
    };
    // Often enough to renew the server's own certificate (at half its life) before it expires, too.
    const every = Math.max(Math.min(cfg.caTtlMs / 100, cfg.x509SvidTtlMs / 4, 10_000), 1000);
    timers.push(setInterval(() => void tick(), every).unref());
    // A quarantine that expires is a change no write makes: the lease holder tells every replica's hub.
    let quarantineSeen: number | undefined;
    const quarantineExpiry = async (): Promise<void> => {
      const v = await store.quarantineVersion(clock());
      // The first run here (at start, or having taken the lease over from a replica that died) announces
      // too: an expiry while nobody held the lease would otherwise wait for the agents' next poll.
      if (v !== quarantineSeen) {
        await store.announce('quarantine');
        quarantineSeen = v;
      }
    };
    timers.push(setInterval(() => void jobs.runOnce('quarantine-expiry', quarantineExpiry).catch(() => undefined), 1000).unref());
    leases.start();

    log.info(
      {
        url: publicUrl,
        ...(admissionUrl ? { admissionUrl } : {}),
        ...(bundleEndpoint ? { bundleEndpointUrl: bundleEndpoint.url, bundleEndpointProfile: cfg.bundleEndpoint?.profile } : {}),
        trustDomain: cfg.trustDomain,
        db: redactDbUrl(cfg.db),
        store: store.kind,
        bundle: bundlePath,
        adminToken: tokenPath,
      },
      'writ server listening',
    );
    return {
      url: publicUrl,
      port,
      admissionUrl,
      bundleEndpointUrl: bundleEndpoint?.url,
      store,
      ca,
      alerts,
      leases,
      drain: async () => {
        if (inFlight.draining) return;
        inFlight.draining = true;
        log.info('draining: answering every waiting agent poll, then stopping');
        for (const s of [srv, admissionServer, bundleEndpoint?.server]) s?.close();
        hub?.drain();
        // Kept-alive idle connections would take a request after the answer; idle ones close now,
        // busy ones once their request is answered (Node sends `connection: close` while closing).
        srv.closeIdleConnections();
        const until = Date.now() + 10_000;
        while (inFlight.count > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
        await leases?.close();
      },
      close: async () => {
        for (const t of timers) clearInterval(t);
        // Each part on its own: a database gone while stopping (dropped, restarted) fails the last
        // writes of some, and the rest must close all the same; the process then exits as asked.
        const step = async (part: string, fn: () => unknown): Promise<void> => {
          try {
            await fn();
          } catch (err) {
            log.warn(
              { part, code: isWritError(err) ? err.code : (err as { code?: string }).code, err: (err as Error).message },
              'stopping: could not close cleanly',
            );
          }
        };
        await step('leases', () => leases?.close());
        await step('federation', () => federation?.close());
        await step('hub', () => hub?.close());
        await step('vuln-events', () => vulnEvents?.close());
        await step('alerts', () => alerts?.close());
        for (const s of [srv, admissionServer, bundleEndpoint?.server]) {
          if (!s) continue;
          s.closeAllConnections();
          await new Promise<void>((r) => s.close(() => r()));
        }
        admittedImages?.close();
        await step('admission-inventory', () => inventory?.close());
        registry?.close();
        await step('admission-events', () => admissionEvents?.close());
        // Last before the store: every change made until now (requests, background jobs) is folded and signed.
        await step('audit', () => audit?.close());
        await step('store', () => store.close());
      },
    };
  } catch (err) {
    for (const t of timers) clearInterval(t);
    await leases?.close();
    await audit?.close();
    await hub?.close();
    await vulnEvents?.close();
    await alerts?.close();
    registry?.close();
    httpServer?.close();
    admissionServer?.close();
    bundleEndpoint?.server.close();
    await federation?.close();
    await store.close().catch(() => undefined);
    throw err;
  }
}

interface AdmissionListener {
  readonly server: Server;
  readonly url: string;
  /** Renews the listener's certificate once it is past half its life. */
  renew(): void;
}

interface AdmissionListenerDeps {
  readonly decider: AdmissionDecider;
  readonly admitted: AdmittedImageRecorder;
  readonly inventory: AdmissionInventoryRecorder;
  readonly events: AdmissionEventWriter;
  readonly clock: () => number;
  readonly log: Logger;
  readonly metrics: ReturnType<typeof createMetrics>;
  readonly issueTls: (listenHost: string, dnsNames: readonly string[]) => { key: string; cert: string; expiresAt: number };
  readonly renewAfterMs: number;
  readonly serve: (routes: Route[]) => (req: IncomingMessage, res: ServerResponse) => void;
}

/** The admission listener: the webhook routes and /livez, a certificate for the Service names, an optional client CA. */
async function listenAdmission(a: AdmissionListenConfig, d: AdmissionListenerDeps): Promise<AdmissionListener> {
  const { routes, add } = routeTable();
  add('GET', '/livez', undefined, 'Liveness: the process is serving.', () => ({ status: 200, body: { status: 'ok' } }));
  admissionWebhookRoutes(
    {
      decider: d.decider,
      budgetMs: a.budgetMs,
      events: d.events,
      clock: d.clock,
      // What `requireAdmittedImage` entries are issued against (the agents hear of new digests from the hub).
      admitImages: d.admitted.admit,
      recordImages: (images, o) => (o.hook === 'mutate' ? d.inventory.pinned(images) : d.inventory.record(images, o.fromRegistry)),
      apiServerAuthenticated: a.clientCaFile !== undefined,
      onAnswer: (hook, decision, mode) => d.metrics.admissionReviews.inc({ hook, decision, mode }),
      log: d.log,
    },
    add,
  );
  const readClientCa = (): string | undefined => {
    if (!a.clientCaFile) return undefined;
    try {
      return readFileSync(a.clientCaFile, 'utf8');
    } catch (err) {
      throw new WritError('ERR_CONFIG_INVALID', `admissionClientCa: cannot read ${a.clientCaFile}: ${(err as NodeJS.ErrnoException).code}`, {
        field: 'admissionClientCa',
      });
    }
  };
  let expiresAt = 0;
  const identity = (): { key: string; cert: string; ca?: string } => {
    const tls = d.issueTls(a.host, a.dnsNames);
    expiresAt = tls.expiresAt;
    const clientCa = readClientCa();
    return { key: tls.key, cert: tls.cert, ...(clientCa ? { ca: clientCa } : {}) };
  };
  // With a client CA, TLS itself refuses any caller (an API server) without a certificate chained to it.
  const server = createServer(
    {
      ...identity(),
      minVersion: 'TLSv1.2',
      handshakeTimeout: 10_000,
      requestCert: a.clientCaFile !== undefined,
      rejectUnauthorized: a.clientCaFile !== undefined,
    },
    d.serve(routes),
  );
  server.on('checkContinue', d.serve(routes));
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  // Longer than the API server's idle timeout for pooled connections (Go's 90 s): the client
  // closes an idle connection first, so it never sends a review on one the server is closing.
  server.keepAliveTimeout = 100_000;
  server.on('tlsClientError', (err, socket) => {
    d.log.debug({ err: err.message }, 'admission TLS handshake failed');
    socket.destroy();
  });
  server.on('clientError', answerClientError);
  await new Promise<void>((resolveListen, rejectListen) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      rejectListen(new WritError('ERR_CONFIG_INVALID', `cannot listen on ${a.host}:${a.port}: ${err.code ?? err.message}`, { field: 'admissionListen' })),
    );
    server.listen(a.port, a.host, () => resolveListen());
  });
  const addr = server.address();
  const host = a.host === '0.0.0.0' || a.host === '::' ? '127.0.0.1' : a.host;
  const url = `https://${isIP(host) === 6 ? `[${host}]` : host}:${typeof addr === 'object' && addr ? addr.port : a.port}`;
  d.log.info({ url, dnsNames: a.dnsNames, clientCa: a.clientCaFile ?? null, budget: formatDuration(a.budgetMs) }, 'admission webhook listening');
  return {
    server,
    url,
    renew: () => {
      if (d.clock() > expiresAt - d.renewAfterMs) server.setSecureContext({ ...identity(), minVersion: 'TLSv1.2' });
    },
  };
}

/** The caller's API token: from the Authorization header, or (the dashboard) from a session cookie. */
async function authenticate(req: IncomingMessage, store: Store, need: Role, now: number): Promise<AdminToken> {
  const h = req.headers.authorization;
  const cookie = h ? undefined : sessionCookieOf(req);
  let tok: AdminToken | undefined;
  if (cookie !== undefined) tok = await authenticateSession(req, cookie, store, now);
  else {
    const m = h ? /^Bearer ([A-Za-z0-9._~+/=-]{1,512})$/.exec(h) : null;
    if (!m)
      throw new WritError(
        'ERR_UNAUTHENTICATED',
        h ? 'Authorization header must be "Bearer <token>"' : 'this endpoint needs an API token (Authorization: Bearer <token>)',
      );
    tok = await store.findAdminToken(hashToken(m[1]!));
    if (!tok || (tok.expiresAt !== null && tok.expiresAt <= now))
      throw new WritError('ERR_UNAUTHENTICATED', 'the API token is not valid (unknown, revoked or expired)');
  }
  if (ROLE_RANK[tok.role] < ROLE_RANK[need]) throw new WritError('ERR_FORBIDDEN', `this needs the ${need} role; the token has ${tok.role}`);
  return tok;
}

async function handle(
  raw: IncomingMessage,
  res: ServerResponse,
  routes: RouteIndex,
  store: Store,
  agents: AgentAuthenticator,
  metrics: ReturnType<typeof createMetrics>,
  log: Logger,
  inFlight: { count: number; draining: boolean } = { count: 0, draining: false },
): Promise<void> {
  const start = performance.now();
  const method = raw.method ?? 'GET';
  let routeName = 'unmatched';
  let status = 500;
  // Agent routes say which protocol version the server speaks (docs/design.md, agent protocol versions).
  if (raw.url?.startsWith('/v1/agent/')) res.setHeader(PROTOCOL_HEADER, String(PROTOCOL_VERSION));
  inFlight.count++;
  try {
    if (inFlight.draining) {
      res.setHeader('connection', 'close');
      throw new WritError('ERR_SERVER_DRAINING', 'this server is stopping; send the request to another replica');
    }
    if ((raw.url?.length ?? 0) > MAX_URL_LENGTH) throw new WritError('ERR_URI_TOO_LONG', `the URL is longer than ${MAX_URL_LENGTH} characters`);
    const url = new URL(raw.url ?? '/', 'https://writ.invalid');
    const candidates = routes.candidates(url.pathname);
    if (candidates.length === 0) throw new WritError('ERR_NOT_FOUND', `no such endpoint: ${url.pathname.slice(0, 100)}`);
    const route = candidates.find((r) => r.method === method || (method === 'HEAD' && r.method === 'GET'));
    if (!route) {
      const allow = [...new Set(candidates.map((r) => r.method))].join(', ');
      status = 405;
      send(res, { status, body: { code: 'ERR_METHOD_NOT_ALLOWED', message: `${method} is not allowed here; allowed: ${allow}` }, headers: { allow } });
      return;
    }
    routeName = route.name;
    const params = route.pattern.exec(url.pathname)!.slice(1);
    checkParams(route, params);
    checkQuery(url.searchParams, route.query);
    const req: Request = {
      method,
      path: url.pathname,
      query: url.searchParams,
      params,
      raw,
      role: undefined,
      token: undefined,
      agent: undefined,
      body: undefined,
    };
    if (route.role === 'agent') req.agent = await agents.authenticate(raw);
    else if (route.role) {
      req.token = await authenticate(raw, store, route.role, Date.now());
      req.role = req.token.role;
    }
    if (route.body) req.body = await readBody(raw, route.body, () => res.writeContinue());
    // Whoever the route authenticated is the author of the audit leaves its writes append.
    const actor = req.token ? `token:${req.token.name}` : req.agent;
    const reply = actor ? await store.withActor(actor, async () => route.handler(req)) : await route.handler(req);
    status = reply.status;
    send(res, reply);
  } catch (err) {
    const reply = errorReply(err);
    status = reply.status;
    if (status >= 500 && !isWritError(err, 'ERR_STORE_UNAVAILABLE') && !isWritError(err, 'ERR_CA_UNAVAILABLE')) {
      log.error({ route: routeName, err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, 'request failed');
    }
    const headers: Record<string, string> = status === 401 ? { 'www-authenticate': 'Bearer' } : {};
    if (status === 413) {
      headers['connection'] = 'close';
      lingerAfterAnswer(raw);
    }
    send(res, { ...reply, headers });
    if (status === 413) raw.resume();
  } finally {
    inFlight.count--;
    const seconds = (performance.now() - start) / 1000;
    metrics.httpRequests.inc({ method, route: routeName, status: String(status) });
    metrics.httpDuration.observe({ method, route: routeName }, seconds);
    // Agents' long polls are a heartbeat, not news: logged at debug unless they fail. So are the
    // webhook's reviews and granted token exchanges: every verdict is in the admission events, every
    // grant in the decision log already (the line cost a tenth of an exchange's CPU). Refusals stay at info.
    const level = (routeName === AGENT_PATHS.sync || RECORDED_ROUTES.has(routeName)) && status === 200 ? 'debug' : 'info';
    log[level]({ method, route: routeName, status, ms: Math.round(seconds * 10000) / 10 }, 'request');
  }
}
