/**
 * The agent: attests its node to the server (node-attestor.ts), keeps the entries it is entitled
 * to in sync (sync.ts), has X.509-SVIDs signed for keys it generates itself and rotates them
 * (svid-manager.ts), keeps everything in its data directory (state.ts) so a restart serves at
 * once, and keeps serving from that cache while the server is away. It enforces the last good
 * policy and the quarantine (enforcement-state.ts), decides which entries a caller gets
 * (entry-matcher.ts) and has JWT-SVIDs minted, checked and cached (jwt-svids.ts). The server
 * client is injected: unit tests run it against testing/fake-server.ts.
 */
import { EventEmitter } from 'node:events';
import { createPrivateKey } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';
import {
  WritError,
  isWritError,
  parseBundleJson,
  parseCertificatesPem,
  parseSpiffeId,
  parseTrustDomain,
  toPem,
  trustDomainOfCaPem,
  type Certificate,
  type TrustBundle,
} from '@writ/spiffe';
import type { PolicyEngine } from '@writ/policy';
import type { ReportedDecision } from '@writ/sdk';
import { AGENT_PATHS, decodeSyncAnswer, encodeSyncQuery, type SyncQuery } from '@writ/protocol';
import { DecisionUplink } from './decision-uplink.ts';
import { EnforcementState, type PolicyView } from './enforcement-state.ts';
import { EntryMatcher, type Withheld } from './entry-matcher.ts';
import { JwtSvids, type MintedJwtSvid } from './jwt-svids.ts';
import { attestNode, tokenSha256 } from './node-attestor.ts';
import { ServerClient, type ServerApi } from './server-client.ts';
import { FailoverClient } from './failover-client.ts';
import { StateFile, type AgentState, type StoredSvid } from './state.ts';
import { SvidManager, agentSvidExpiry, type ServedSvid } from './svid-manager.ts';
import { applySync, type EntryView } from './sync.ts';
import type { WorkloadApiAgent } from './workload-api.ts';
import { WorkloadReporter } from './workload-reporter.ts';
import { releaseFreedMemory } from './peercred.ts';

export type { EntryView } from './sync.ts';
export type { ServedSvid } from './svid-manager.ts';

export interface AgentOptions {
  /** The server's URL, or several replicas' as a comma list (each pinned to the same server ID); the agent fails over between them. */
  readonly serverUrl: string;
  /** PEM bundle to trust the server with on first contact. */
  readonly caPem: string;
  /** The trust domain; by default the one the CA certificates in `caPem` name. */
  readonly trustDomain?: string | undefined;
  /** The server's SPIFFE ID, pinned on every connection; default `spiffe://TD/writ/server`. */
  readonly serverSpiffeId?: string | undefined;
  readonly joinToken?: string | undefined;
  /** k8s_psat node attestation: the cluster name the server knows and the projected token's file. */
  readonly psat?: { readonly cluster: string; readonly tokenFile: string } | undefined;
  readonly dataDir: string;
  readonly log: Logger;
  readonly clock?: () => number;
  /** How long a sync request may wait on the server for a change. */
  readonly syncWaitSeconds?: number;
  /** The server client; default the HTTPS ServerClient of `serverUrl`. */
  readonly client?: ServerApi;
  /** Decisions buffered for the server at most (default 10,000); more are dropped and counted. */
  readonly decisionBuffer?: number;
  /** How often the workloads this agent serves are reported whole (default 20 s; `--workload-report-interval`). */
  readonly workloadReportMs?: number | undefined;
}

const DECISION_BUFFER = 10_000;

/** The trust domain and pinned server ID from the options: given, or read off the bundle's CA. */
export function serverIdentity(o: Pick<AgentOptions, 'caPem' | 'trustDomain' | 'serverSpiffeId'>): { trustDomain: string; serverSpiffeId: string } {
  // A typo in --trust-domain fails here, with its own message, not later as an identity mismatch.
  let td = o.trustDomain !== undefined ? parseTrustDomain(o.trustDomain) : trustDomainOfCaPem(o.caPem);
  if (o.serverSpiffeId !== undefined) {
    const id = parseSpiffeId(o.serverSpiffeId);
    td ??= id.trustDomain;
    return { trustDomain: td, serverSpiffeId: id.uri };
  }
  if (!td)
    throw new WritError('ERR_CONFIG_INVALID', "the bundle file's CA names no trust domain: give --trust-domain (or WRIT_TRUST_DOMAIN)", {
      field: 'trustDomain',
    });
  return { trustDomain: td, serverSpiffeId: `spiffe://${td}/writ/server` };
}

export interface AgentHealth {
  /** Holds an agent SVID (from attestation or the cache). */
  readonly attested: boolean;
  /** The last sync with the server succeeded. */
  readonly connected: boolean;
  readonly agentSvidExpiresAt: number | undefined;
  readonly entries: number;
  readonly policyRevision: number;
  readonly quarantined: number;
  readonly decisions: { readonly buffered: number; readonly dropped: number };
}

/** The server URLs of `--server` (a comma list): one must be given, each an https:// URL. */
export function serverUrls(list: string): string[] {
  const urls = list
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '');
  if (urls.length === 0) throw new WritError('ERR_CONFIG_INVALID', 'give the server URL: --server https://HOST:PORT', { field: 'server' });
  for (const u of urls) {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw new WritError('ERR_CONFIG_INVALID', `--server ${JSON.stringify(u.slice(0, 200))} is not a URL (e.g. https://127.0.0.1:8443)`, { field: 'server' });
    }
    if (url.protocol !== 'https:') throw new WritError('ERR_CONFIG_INVALID', `--server ${url.origin} must be an https:// URL`, { field: 'server' });
  }
  return urls;
}

function serverClientOf(list: string, caPem: string, serverSpiffeId: string, log: Logger): ServerApi {
  const urls = serverUrls(list);
  if (urls.length === 1) return new ServerClient(urls[0]!, caPem, serverSpiffeId);
  return new FailoverClient(
    urls.map((u) => {
      const client = new ServerClient(u, caPem, serverSpiffeId);
      return { client, name: client.origin };
    }),
    log,
  );
}

export class Agent extends EventEmitter implements WorkloadApiAgent {
  readonly #o: AgentOptions;
  readonly #clock: () => number;
  readonly #client: ServerApi;
  readonly #td: string;
  readonly #file: StateFile;
  readonly #svids: SvidManager;
  #state: AgentState | undefined;
  #bundles = new Map<string, TrustBundle>();
  #stopped = false;
  #timers: NodeJS.Timeout[] = [];
  #connected = false;
  #resync = true;
  /** A join token given that the server refused: not tried again by this process. */
  #tokenRefused = false;
  /** Said once per refusal streak: the agent needs a new join token. */
  #toldEvicted = false;
  readonly #enforcement: EnforcementState;
  readonly #matcher: EntryMatcher;
  readonly #jwt: JwtSvids;
  readonly #decisions: DecisionUplink;
  readonly #workloads: WorkloadReporter;
  /** The server refused `images=` (older than this agent): not sent again by this process. */
  #serverWithoutImages = false;
  /** svidOf's answers by the stored SVID they were parsed from (gone with it). */
  readonly #served = new WeakMap<StoredSvid, ServedSvid>();

  constructor(opts: AgentOptions) {
    super();
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
    const id = serverIdentity(opts);
    this.#td = id.trustDomain;
    this.#client = opts.client ?? serverClientOf(opts.serverUrl, opts.caPem, id.serverSpiffeId, opts.log);
    this.#file = new StateFile(opts.dataDir);
    this.#decisions = new DecisionUplink({ client: this.#client, clock: this.#clock, log: opts.log, max: opts.decisionBuffer ?? DECISION_BUFFER });
    this.#workloads = new WorkloadReporter({ client: this.#client, clock: this.#clock, log: opts.log, heartbeatMs: opts.workloadReportMs });
    this.#svids = new SvidManager({
      client: this.#client,
      clock: this.#clock,
      log: opts.log,
      trust: () => this.#trust(),
      renewed: () => (this.#useIdentity(), this.#save()),
      // After the pushes: the round's freed allocations go back to the kernel, not stay in glibc's arenas.
      stored: () => (this.#save(), this.emit('update'), releaseFreedMemory()),
    });
    this.#enforcement = new EnforcementState({ clock: this.#clock, log: opts.log });
    this.#matcher = new EntryMatcher({
      clock: this.#clock,
      entries: () => Object.values(this.#state?.entries ?? {}),
      requireAdmittedImage: () => this.#state?.requireAdmittedImage === true,
      quarantined: () => this.#enforcement.quarantined,
    });
    this.#jwt = new JwtSvids({ client: this.#client, clock: this.#clock, log: opts.log, bundle: () => this.#bundles.get(this.#td) });
  }

  get spiffeId(): string {
    return this.#state?.spiffeId ?? '';
  }
  get trustDomain(): string {
    return this.#td;
  }
  /** Whether the last exchange with the server succeeded. */
  get connected(): boolean {
    return this.#connected;
  }

  // ---------------------------------------------------------------- persistence

  #load(): void {
    try {
      const s = this.#file.load();
      if (!s) return;
      if (!s.spiffeId.startsWith(`spiffe://${this.#td}/`)) {
        this.#o.log.warn({ spiffeId: s.spiffeId, trustDomain: this.#td }, 'the cached identity is of another trust domain; attesting afresh');
        return;
      }
      this.#state = s;
      this.#rebuildBundles();
      this.#enforcement.setQuarantine(s.quarantine);
      if (s.policies && s.policyRevision !== undefined) this.#enforcement.loadPolicy(s.policyRevision, s.policies);
      this.#matcher.setAdmitted(s.admittedImages?.digests ?? []);
      this.#o.log.info(
        { spiffeId: s.spiffeId, entries: Object.keys(s.entries).length, svids: Object.keys(s.svids).length },
        'loaded cached identity and SVIDs',
      );
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, 'agent state unreadable; attesting afresh');
      this.#state = undefined;
    }
  }

  #save(): void {
    if (this.#state) this.#file.save(this.#state);
  }

  #rebuildBundles(): void {
    const s = this.#state!;
    const m = new Map<string, TrustBundle>();
    if (s.bundle) m.set(this.#td, parseBundleJson(this.#td, s.bundle));
    for (const [td, b] of Object.entries(s.federated)) {
      try {
        m.set(td, parseBundleJson(td, b));
      } catch (err) {
        this.#o.log.warn({ trustDomain: td, err: (err as Error).message }, 'ignoring a malformed federated bundle from the server');
      }
    }
    this.#bundles = m;
  }

  /** What the server's SVIDs must chain to: the synced bundle and the bundle file the agent was started with. */
  #trust(): TrustBundle {
    const synced = this.#bundles.get(this.#td)?.x509Authorities ?? [];
    let file: Certificate[] = [];
    try {
      file = parseCertificatesPem(this.#o.caPem);
    } catch {
      // an unparsable bundle file trusts nothing of its own
    }
    return { trustDomain: this.#td, x509Authorities: [...synced, ...file], jwtAuthorities: new Map() };
  }

  // ---------------------------------------------------------------- node attestation

  /** A join token given that this identity was not attested with, and the server has not refused. */
  #unusedJoinToken(): string | undefined {
    const t = this.#o.joinToken;
    return t && !this.#o.psat && !this.#tokenRefused && tokenSha256(t) !== this.#state?.joinTokenSha256 ? t : undefined;
  }

  async #attest(): Promise<void> {
    // Attestation presents no client certificate; the server's identity is pinned all the same.
    this.#client.configure({ ca: this.#trustPem(), identity: undefined });
    let id;
    try {
      id = await attestNode(this.#client, { joinToken: this.#o.joinToken, psat: this.#o.psat }, this.#trust(), this.#clock());
    } catch (err) {
      if (!this.#o.psat && isWritError(err) && /^ERR_(JOIN_TOKEN|FORBIDDEN|UNAUTHENTICATED)/.test(err.code)) this.#tokenRefused = true;
      if (this.#state) this.#useIdentity(); // back to the identity still held
      throw err;
    }
    const kept = this.#state;
    this.#state = {
      spiffeId: id.spiffeId,
      svidPem: id.svidPem,
      keyPem: id.keyPem,
      ...(id.joinTokenSha256 ? { joinTokenSha256: id.joinTokenSha256 } : {}),
      revision: 0,
      bundlesVersion: '',
      bundle: kept?.bundle,
      federated: kept?.federated ?? {},
      // Another node identity is entitled to other entries: a full sync decides what stays.
      entries: kept?.spiffeId === id.spiffeId ? kept.entries : {},
      svids: kept?.spiffeId === id.spiffeId ? kept.svids : {},
      ...(kept?.policyRevision !== undefined && kept.policies ? { policyRevision: kept.policyRevision, policies: kept.policies } : {}),
      ...(kept?.quarantine ? { quarantine: kept.quarantine } : {}),
      ...(kept?.admittedImages ? { admittedImages: kept.admittedImages } : {}),
      ...(kept?.requireAdmittedImage ? { requireAdmittedImage: true } : {}),
    };
    this.#resync = true;
    this.#toldEvicted = false;
    this.#decisions.resume();
    this.#save();
    this.#useIdentity();
    this.#o.log.info({ spiffeId: id.spiffeId, method: id.method }, 'attested to the server');
  }

  #useIdentity(): void {
    const s = this.#state!;
    this.#client.configure({ ca: this.#trustPem(), identity: { cert: s.svidPem, key: s.keyPem } });
  }

  #trustPem(): string {
    return this.#trust()
      .x509Authorities.map((c) => toPem('CERTIFICATE', c.der))
      .join('');
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    mkdirSync(this.#o.dataDir, { recursive: true, mode: 0o700 });
    this.#load();
    if (!this.#state || agentSvidExpiry(this.#state).expiresAt <= this.#clock()) {
      if (this.#state) this.#o.log.warn('the agent SVID has expired; attesting again');
      await this.#attest();
    } else if (this.#unusedJoinToken()) {
      // A new join token for a node that has an identity (after an eviction, say): attest with it.
      try {
        await this.#attest();
      } catch (err) {
        this.#o.log.warn(
          { code: isWritError(err) ? err.code : undefined, err: (err as Error).message },
          'could not attest with the new join token; keeping the cached identity',
        );
      }
    }
    this.#useIdentity();
    this.emit('update');
    void this.#syncLoop();
    this.#timers.push(
      setInterval(() => void this.#rotate().catch((err) => this.#o.log.warn({ err: (err as Error).message }, 'rotation failed; will retry')), 1000),
    );
    // Small, frequent batches: the server stores each in a few milliseconds instead of one
    // burst a second that preempts the workloads and proxies sharing its cores.
    this.#timers.push(setInterval(() => void this.#decisions.flush(), 250));
    this.#workloads.start();
    await this.#rotate().catch(() => undefined);
  }

  stop(): void {
    this.#stopped = true;
    this.#workloads.stop();
    for (const t of this.#timers) clearInterval(t);
    this.#client.close();
  }

  /** Long-polls the server; applies each answer; backs off while the server is away. */
  async #syncLoop(): Promise<void> {
    let backoff = 500;
    let lastError = '';
    while (!this.#stopped) {
      try {
        await this.syncOnce(this.#o.syncWaitSeconds ?? 20);
        backoff = 500;
      } catch (err) {
        if (this.#stopped) return;
        // Each new kind of failure is logged once, not every retry.
        const msg = (err as Error).message;
        if (this.#connected || msg !== lastError)
          this.#o.log.warn(
            { code: isWritError(err) ? err.code : undefined, err: msg },
            this.#connected ? 'lost the server; serving from cache' : 'sync failed; serving from cache',
          );
        lastError = msg;
        this.#connected = false;
        this.#resync = true;
        if (await this.#reattest(err)) {
          backoff = 500;
          continue;
        }
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
  }

  /**
   * After a failed exchange: offline longer than the agent SVID lives, or evicted (401), the agent
   * attests again when it can (PSAT, or a join token it has not used). True when it did.
   */
  async #reattest(err: unknown): Promise<boolean> {
    const expired = agentSvidExpiry(this.#state!).expiresAt <= this.#clock();
    if (!expired && !isWritError(err, 'ERR_UNAUTHENTICATED')) return false;
    if (this.#o.psat || this.#unusedJoinToken()) {
      try {
        await this.#attest();
        return true;
      } catch (e) {
        this.#o.log.warn({ err: (e as Error).message }, 're-attestation failed; will retry');
        return false;
      }
    }
    if (expired) this.#o.log.error('the agent SVID has expired and join tokens are single use: restart the agent with a new --join-token');
    else if (!this.#toldEvicted) {
      this.#toldEvicted = true;
      this.#o.log.error('the server refuses this agent (evicted?); join tokens are single use: restart it with a new --join-token');
    }
    return false;
  }

  /** One sync exchange (exposed for tests and the benchmark). */
  async syncOnce(waitSeconds = 0): Promise<void> {
    const s = this.#state!;
    // After a failed exchange (a reconnect), ask for everything: nothing missed can linger.
    const since = this.#resync ? 0 : s.revision;
    const q: SyncQuery = {
      since,
      wait: this.#resync ? 0 : waitSeconds,
      bundles: s.bundlesVersion,
      policy: s.policyRevision ?? 0,
      quarantine: s.quarantine?.version ?? '',
      lean: true,
      ...(this.#serverWithoutImages ? {} : { images: s.admittedImages?.version ?? '' }),
    };
    let raw: unknown;
    try {
      raw = await this.#client.call<unknown>('GET', `${AGENT_PATHS.sync}?${encodeSyncQuery(q)}`, undefined, (waitSeconds + 15) * 1000);
    } catch (err) {
      // A server older than this agent refuses the parameter: sync without it. Entries that require
      // an admitted image then match no caller (the set stays as it was): closed, not open.
      if (!isWritError(err, 'ERR_FIELD_UNKNOWN') || !err.message.includes('"images"') || this.#serverWithoutImages) throw err;
      this.#serverWithoutImages = true;
      this.#o.log.warn('the server does not send admitted images (it is older than this agent): entries that require an admitted image keep the last set');
      return this.syncOnce(waitSeconds);
    }
    // Checked whole before anything is applied: a malformed answer changes nothing.
    const r = decodeSyncAnswer(raw, this.#td, s.bundlesVersion);
    if (!this.#connected) this.#o.log.info({ revision: r.revision, full: r.full }, 'synced with the server');
    this.#connected = true;
    const applied = applySync(s, r, (revision, policies) => this.#enforcement.loadPolicy(revision, policies));
    if (applied.quarantine) {
      this.#enforcement.setQuarantine(s.quarantine);
      this.#o.log.info({ quarantined: s.quarantine?.ids.length ?? 0 }, 'quarantine changed');
    }
    if (applied.bundles) {
      this.#rebuildBundles();
      this.#useIdentity();
    }
    if (applied.images) {
      this.#matcher.setAdmitted(s.admittedImages?.digests ?? []);
      this.#o.log.info({ admittedImages: this.#matcher.admittedCount, requireAdmittedImage: s.requireAdmittedImage === true }, 'admitted images changed');
    }
    this.#resync = false;
    if (applied.changed) {
      this.#jwt.clear();
      this.#save();
      this.emit('update');
      await this.#rotate().catch(() => undefined);
    }
  }

  /** Signs what is missing or due, in batches; renews the agent's own SVID at half life. */
  #rotate(): Promise<void> {
    return this.#state ? this.#svids.rotate(this.#state) : Promise.resolve();
  }

  // ---------------------------------------------------------------- what workloads get

  /** The policy documents whose destination matches one of `ids`, for SDKs that decide in-process. */
  policyFor(ids: readonly string[]): PolicyView {
    return this.#enforcement.policyFor(ids);
  }

  /** Records a decision for the server's decision log (see decision-uplink.ts). */
  logDecision(d: ReportedDecision | Buffer): void {
    this.#decisions.record(d);
  }

  /** Drops reported by in-process reporters travel with this agent's own. */
  countDropped(n: number): void {
    this.#decisions.countDropped(n);
  }

  /** The workloads served, reported to the server (workload-reporter.ts). */
  get workloads(): WorkloadReporter {
    return this.#workloads;
  }

  /** What the health endpoint reports (`--health-addr`, docs/metrics.md). */
  health(): AgentHealth {
    const s = this.#state;
    return {
      attested: s !== undefined,
      connected: this.#connected,
      agentSvidExpiresAt: s ? agentSvidExpiry(s).expiresAt : undefined,
      entries: s ? Object.keys(s.entries).length : 0,
      policyRevision: this.#enforcement.engine.revision,
      quarantined: this.#enforcement.quarantined.size,
      decisions: this.#decisions.stats,
    };
  }

  get decisionLogStats(): { buffered: number; dropped: number } {
    return this.#decisions.stats;
  }

  /** The server client (the token broker forwards exchanges with it). */
  get server(): ServerApi {
    return this.#client;
  }

  /** The SPIFFE IDs of the current entries, quarantined and expired ones left out. */
  currentIds(): Set<string> {
    return this.#matcher.currentIds();
  }

  /** The local decision engine (the last good policy revision, with the current quarantine). */
  get engine(): PolicyEngine {
    return this.#enforcement.engine;
  }

  /**
   * Entries whose selectors are all among `selectors`; never a quarantined identity, and an entry
   * that requires an admitted image only when one of the caller's image digests was admitted.
   */
  entriesFor(selectors: readonly string[]): EntryView[] {
    return this.#matcher.entriesFor(selectors);
  }

  /** Entries the caller matches but does not get because its image was not admitted, each with why (for Debug/WhoAmI). */
  withheldFor(selectors: readonly string[]): Withheld[] {
    return this.#matcher.withheldFor(selectors);
  }

  /**
   * The current, unexpired SVID of an entry. Parsed once per stored SVID (a new one is a new
   * object): every push to a workload asks for all of its SVIDs, and parsing each chain and key
   * again was most of a push's CPU.
   */
  svidOf(entry: EntryView): ServedSvid | undefined {
    const sv = this.#state?.svids[entry.id];
    if (!sv || sv.expiresAt <= this.#clock()) return undefined;
    const hit = this.#served.get(sv);
    if (hit?.entry === entry) return hit;
    const served: ServedSvid = hit
      ? { ...hit, entry }
      : {
          entry,
          chain: parseCertificatesPem(sv.chainPem),
          keyPkcs8Der: createPrivateKey(sv.keyPem).export({ format: 'der', type: 'pkcs8' }),
          expiresAt: sv.expiresAt,
        };
    this.#served.set(sv, served);
    return served;
  }

  bundle(trustDomain: string): TrustBundle | undefined {
    return this.#bundles.get(trustDomain);
  }

  /** Own trust domain's bundle plus those the given entries federate with. */
  bundlesFor(entries: readonly EntryView[]): Map<string, TrustBundle> {
    const out = new Map<string, TrustBundle>();
    const own = this.#bundles.get(this.trustDomain);
    if (own) out.set(this.trustDomain, own);
    for (const e of entries)
      for (const td of e.federatesWith) {
        const b = this.#bundles.get(td);
        if (b) out.set(td, b);
      }
    return out;
  }

  /** A JWT-SVID from the server, checked against this agent's bundle, cached per entry and audience until half its life (jwt-svids.ts). */
  jwtSvid(entry: EntryView, audience: readonly string[]): Promise<MintedJwtSvid> {
    return this.#jwt.get(entry, audience);
  }
}
