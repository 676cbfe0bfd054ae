/**
 * The agent: attests its node to the server (node-attestor.ts), keeps the entries it is entitled
 * to in sync (sync.ts), has X.509-SVIDs signed for keys it generates itself and rotates them
 * (svid-manager.ts), keeps everything in its data directory (state.ts) so a restart serves at
 * once, and keeps serving from that cache while the server is away. The server client is
 * injected: unit tests run it against testing/fake-server.ts.
 */
import { EventEmitter } from 'node:events';
import { createPrivateKey } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';
import {
  WritError,
  formatBundleJson,
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
import { PolicyEngine, matchSegments, parsePolicies } from '@writ/policy';
import type { ReportedDecision } from '@writ/sdk';
import { AGENT_PATHS, decodeJwtSvidAnswer, decodeSyncAnswer, encodeSyncQuery, imageDigestsOf, type JwtSvidRequest, type SyncQuery } from '@writ/protocol';
import { DecisionUplink } from './decision-uplink.ts';
import { attestNode, tokenSha256 } from './node-attestor.ts';
import { ServerClient, type ServerApi } from './server-client.ts';
import { StateFile, type AgentState } from './state.ts';
import { SvidManager, agentSvidExpiry } from './svid-manager.ts';
import { applySync, type EntryView } from './sync.ts';
import { WorkloadReporter } from './workload-reporter.ts';

export type { EntryView } from './sync.ts';

/** An SVID ready to hand to a workload. */
export interface ServedSvid {
  readonly entry: EntryView;
  readonly chain: readonly Certificate[];
  readonly keyPkcs8Der: Buffer;
  readonly expiresAt: number;
}

export interface AgentOptions {
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

export class Agent extends EventEmitter {
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
  #jwtCache = new Map<string, { token: string; refreshAt: number; expiresAt: number }>();
  #connected = false;
  #resync = true;
  /** A join token given that the server refused: not tried again by this process. */
  #tokenRefused = false;
  /** Said once per refusal streak: the agent needs a new join token. */
  #toldEvicted = false;
  #engine = new PolicyEngine(undefined);
  readonly #decisions: DecisionUplink;
  readonly #workloads: WorkloadReporter;
  #quarantined: ReadonlySet<string> = new Set();
  /** The server refused `images=` (older than this agent): not sent again by this process. */
  #serverWithoutImages = false;
  /** The admitted image digests (from the state, as a set). */
  #admitted: ReadonlySet<string> = new Set();

  constructor(opts: AgentOptions) {
    super();
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
    const id = serverIdentity(opts);
    this.#td = id.trustDomain;
    this.#client = opts.client ?? new ServerClient(opts.serverUrl, opts.caPem, id.serverSpiffeId);
    this.#file = new StateFile(opts.dataDir);
    this.#decisions = new DecisionUplink({ client: this.#client, clock: this.#clock, log: opts.log, max: opts.decisionBuffer ?? DECISION_BUFFER });
    this.#workloads = new WorkloadReporter({ client: this.#client, clock: this.#clock, log: opts.log, heartbeatMs: opts.workloadReportMs });
    this.#svids = new SvidManager({
      client: this.#client,
      clock: this.#clock,
      log: opts.log,
      trust: () => this.#trust(),
      renewed: () => (this.#useIdentity(), this.#save()),
      stored: () => (this.#save(), this.emit('update')),
    });
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
      if (s.policies && s.policyRevision !== undefined) this.#loadPolicy(s.policyRevision, s.policies);
      this.#applyQuarantine();
      this.#admitted = new Set(s.admittedImages?.digests ?? []);
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
    const applied = applySync(s, r, (revision, policies) => this.#loadPolicy(revision, policies));
    if (applied.quarantine) {
      this.#applyQuarantine();
      this.#o.log.info({ quarantined: s.quarantine?.ids.length ?? 0 }, 'quarantine changed');
    }
    if (applied.bundles) {
      this.#rebuildBundles();
      this.#useIdentity();
    }
    if (applied.images) {
      this.#admitted = new Set(s.admittedImages?.digests ?? []);
      this.#o.log.info({ admittedImages: this.#admitted.size, requireAdmittedImage: s.requireAdmittedImage === true }, 'admitted images changed');
    }
    this.#resync = false;
    if (applied.changed) {
      this.#jwtCache.clear();
      this.#save();
      this.emit('update');
      await this.#rotate().catch(() => undefined);
    }
  }

  /** Signs what is missing or due, in batches; renews the agent's own SVID at half life. */
  #rotate(): Promise<void> {
    return this.#state ? this.#svids.rotate(this.#state) : Promise.resolve();
  }

  // ---------------------------------------------------------------- policy and quarantine

  /** Compiles a policy set; a set that does not compile is refused and the last good one stays. */
  #loadPolicy(revision: number, policies: Record<string, string>): boolean {
    try {
      const parsed = Object.values(policies).flatMap((y) => parsePolicies(y, { allowExpired: true }).policies);
      this.#engine = new PolicyEngine(parsed, { revision, breakGlass: this.#state?.quarantine?.breakGlass ?? [], clock: this.#clock });
      this.#applyQuarantine();
      this.#o.log.info({ revision, policies: parsed.length }, 'enforcing policy revision');
      return true;
    } catch (err) {
      this.#o.log.error({ revision, err: (err as Error).message.slice(0, 500) }, 'policy revision does not compile; keeping the last good one');
      return false;
    }
  }

  #applyQuarantine(): void {
    const q = this.#state?.quarantine;
    if (q && this.#engine.loaded) {
      // Break-glass identities come with the quarantine list; a new engine keeps them.
      this.#engine = new PolicyEngine(this.#engine.policies, { revision: this.#engine.revision, breakGlass: q.breakGlass, clock: this.#clock });
    }
    this.#engine.setQuarantine(q?.ids ?? []);
    this.#quarantined = new Set(q?.ids ?? []);
  }

  /** The policy documents whose destination matches one of `ids`, for SDKs that decide in-process. */
  policyFor(ids: readonly string[]): { revision: number; documents: string[]; quarantine: string[]; breakGlass: string[] } {
    const s = this.#state;
    const docs: string[] = [];
    for (const p of this.#engine.policies) {
      const yaml = s?.policies?.[p.name];
      if (yaml && ids.some((id) => matchSegments(p.to.segments, id.slice(9).split('/')))) docs.push(yaml);
    }
    return { revision: this.#engine.revision, documents: docs, quarantine: [...this.#quarantined], breakGlass: s?.quarantine?.breakGlass ?? [] };
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

  get decisionLogStats(): { buffered: number; dropped: number } {
    return this.#decisions.stats;
  }

  /** The server client (the token broker forwards exchanges with it). */
  get server(): ServerApi {
    return this.#client;
  }

  /** The SPIFFE IDs of the current entries, quarantined and expired ones left out. */
  currentIds(): Set<string> {
    const now = this.#clock();
    const live = Object.values(this.#state?.entries ?? {}).filter(
      (e) => !this.#quarantined.has(e.spiffeId) && (e.expiresAt === null || Date.parse(e.expiresAt) > now),
    );
    return new Set(live.map((e) => e.spiffeId));
  }

  /** The local decision engine (the last good policy revision, with the current quarantine). */
  get engine(): PolicyEngine {
    return this.#engine;
  }

  /**
   * Entries whose selectors are all among `selectors`; never a quarantined identity, and an entry
   * that requires an admitted image only when one of the caller's image digests was admitted.
   */
  entriesFor(selectors: readonly string[]): EntryView[] {
    const admitted = this.#runsAdmittedImage(selectors);
    return this.#matching(selectors).filter((e) => admitted || !this.#needsAdmittedImage(e));
  }

  /** Entries the caller matches but does not get because its image was not admitted, each with why (for Debug/WhoAmI). */
  withheldFor(selectors: readonly string[]): Array<{ spiffeId: string; reason: string }> {
    if (this.#runsAdmittedImage(selectors)) return [];
    const digests = imageDigestsOf(selectors);
    const reason = digests.length
      ? `requires an admitted image: this container runs ${digests.join(', ')}, not admitted under an enforce admission policy (yet)`
      : 'requires an admitted image: the caller has no image digest (not in a container, or no container attestor)';
    const ids = new Set(this.#matching(selectors).flatMap((e) => (this.#needsAdmittedImage(e) ? [e.spiffeId] : [])));
    return [...ids].map((spiffeId) => ({ spiffeId, reason }));
  }

  #matching(selectors: readonly string[]): EntryView[] {
    const have = new Set(selectors);
    const now = this.#clock();
    return Object.values(this.#state?.entries ?? {})
      .filter((e) => !this.#quarantined.has(e.spiffeId) && (e.expiresAt === null || Date.parse(e.expiresAt) > now) && e.selectors.every((x) => have.has(x)))
      .sort((a, b) => (a.spiffeId === b.spiffeId ? a.id.localeCompare(b.id) : a.spiffeId.localeCompare(b.spiffeId)));
  }

  #needsAdmittedImage(e: EntryView): boolean {
    return e.requireAdmittedImage === true || this.#state?.requireAdmittedImage === true;
  }

  #runsAdmittedImage(selectors: readonly string[]): boolean {
    return imageDigestsOf(selectors).some((d) => this.#admitted.has(d));
  }

  /** The current, unexpired SVID of an entry. */
  svidOf(entry: EntryView): ServedSvid | undefined {
    const sv = this.#state?.svids[entry.id];
    if (!sv || sv.expiresAt <= this.#clock()) return undefined;
    return {
      entry,
      chain: parseCertificatesPem(sv.chainPem),
      keyPkcs8Der: createPrivateKey(sv.keyPem).export({ format: 'der', type: 'pkcs8' }),
      expiresAt: sv.expiresAt,
    };
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

  /** A JWT-SVID from the server, cached per entry and audience until half its life. */
  async jwtSvid(entry: EntryView, audience: readonly string[]): Promise<{ token: string; expiresAt: number }> {
    const key = `${entry.id}\u0000${[...audience].sort().join('\u0000')}`;
    const now = this.#clock();
    const hit = this.#jwtCache.get(key);
    if (hit && now < hit.refreshAt) return hit;
    try {
      const req: JwtSvidRequest = { entryId: entry.id, audience };
      const r = decodeJwtSvidAnswer(await this.#client.call<unknown>('POST', AGENT_PATHS.jwtSvid, req));
      if (r.spiffeId !== entry.spiffeId)
        throw new WritError('ERR_REQUEST_FAILED', `the server's JWT-SVID answer was refused: it names ${r.spiffeId.slice(0, 200)}, expected ${entry.spiffeId}`);
      const expiresAt = Date.parse(r.expiresAt);
      const v = { token: r.token, expiresAt, refreshAt: now + (expiresAt - now) / 2 };
      this.#jwtCache.set(key, v);
      return v;
    } catch (err) {
      // Server away: a cached token that has not expired is still good.
      if (hit && hit.expiresAt > now + 5000) return hit;
      throw err;
    }
  }

  /** Keep the bundles JSON shape for the JWT bundle RPC. */
  jwtBundleJson(b: TrustBundle): Buffer {
    return Buffer.from(JSON.stringify({ keys: formatBundleJson({ ...b, x509Authorities: [] }).keys }));
  }
}
