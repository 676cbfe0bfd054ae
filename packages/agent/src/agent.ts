/**
 * The agent: attests its node to the server, keeps the entries it is entitled to in sync, has
 * X.509-SVIDs signed for keys it generates itself, rotates them at half life (±10% jitter), keeps
 * everything in its data directory so a restart serves at once, and keeps serving from that cache
 * while the server is away.
 */
import { EventEmitter } from 'node:events';
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomInt, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  WritError,
  createCsr,
  formatBundleJson,
  isWritError,
  parseBundleJson,
  parseCertificatesPem,
  toPem,
  type BundleJson,
  type Certificate,
  type TrustBundle,
} from '@writ/spiffe';
import { PolicyEngine, matchSegments, parsePolicies } from '@writ/policy';
import { ReportBuffer, encodeDecision, type ReportedDecision } from '@writ/sdk';
import { decodeSyncAnswer, type EntryMessage } from '@writ/protocol';
import { ServerClient } from './server-client.ts';

/** An entry as the agent keeps and serves it: the contract's one entry shape. */
export type EntryView = EntryMessage;

interface StoredSvid {
  readonly chainPem: string;
  readonly keyPem: string;
  readonly notBefore: number;
  readonly expiresAt: number;
  readonly rotateAt: number;
}

interface State {
  spiffeId: string;
  svidPem: string;
  keyPem: string;
  revision: number;
  bundlesVersion: string;
  bundle: BundleJson | undefined;
  federated: Record<string, BundleJson>;
  entries: Record<string, EntryView>;
  svids: Record<string, StoredSvid>;
  /** The last good policy set (name -> YAML) and its revision: enforced while the server is away. */
  policyRevision?: number;
  policies?: Record<string, string>;
  quarantine?: { version: string; ids: string[]; breakGlass: string[] };
}

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
  readonly joinToken?: string | undefined;
  /** k8s_psat node attestation: the cluster name the server knows and the projected token's file. */
  readonly psat?: { readonly cluster: string; readonly tokenFile: string } | undefined;
  readonly dataDir: string;
  readonly log: Logger;
  readonly clock?: () => number;
  /** How long a sync request may wait on the server for a change. */
  readonly syncWaitSeconds?: number;
}

const STATE_FILE = 'agent-state.json';
const DECISION_BUFFER = 10_000;

function generateKey(): { key: KeyObject; pub: KeyObject } {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { key: k.privateKey, pub: k.publicKey };
}

function csrFor(k: { key: KeyObject; pub: KeyObject }): string {
  return toPem('CERTIFICATE REQUEST', createCsr({ key: k.key, keyType: 'ec-p256' }, k.pub));
}

/**
 * Rotation at half the remaining life from issuance, ±10% jitter so a fleet does not renew in
 * lockstep. (Measured from when the SVID arrived: NotBefore is backdated and would make short TTLs
 * look half-spent already.)
 */
function rotationTime(issuedAt: number, expiresAt: number): number {
  const half = (expiresAt - issuedAt) / 2;
  return issuedAt + half + (half * randomInt(-100, 101)) / 1000;
}

/** Writ backdates NotBefore by this much (see the CA); the real issuance time is later. */
const BACKDATE_MS = 10_000;

export class Agent extends EventEmitter {
  readonly #o: AgentOptions;
  readonly #clock: () => number;
  readonly #client: ServerClient;
  #state: State | undefined;
  #bundles = new Map<string, TrustBundle>();
  #stopped = false;
  #timers: NodeJS.Timeout[] = [];
  #jwtCache = new Map<string, { token: string; refreshAt: number; expiresAt: number }>();
  #syncing: Promise<void> | undefined;
  #connected = false;
  #resync = true;
  #engine = new PolicyEngine(undefined);
  /** Encoded `writ.authz.v1.Decision` messages, shipped to the server as they are (4 MiB messages at most). */
  readonly #decisions = new ReportBuffer(DECISION_BUFFER, 4 * 1024 * 1024);
  #quarantined: ReadonlySet<string> = new Set();

  constructor(opts: AgentOptions) {
    super();
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
    this.#client = new ServerClient(opts.serverUrl, opts.caPem);
  }

  get spiffeId(): string {
    return this.#state?.spiffeId ?? '';
  }
  get trustDomain(): string {
    return this.spiffeId.slice(9).split('/')[0] ?? '';
  }
  /** Whether the last exchange with the server succeeded. */
  get connected(): boolean {
    return this.#connected;
  }

  // ---------------------------------------------------------------- persistence

  #load(): void {
    const f = join(this.#o.dataDir, STATE_FILE);
    if (!existsSync(f)) return;
    try {
      this.#state = JSON.parse(readFileSync(f, 'utf8')) as State;
      this.#rebuildBundles();
      if (this.#state.policies && this.#state.policyRevision !== undefined) this.#loadPolicy(this.#state.policyRevision, this.#state.policies);
      this.#applyQuarantine();
      this.#o.log.info(
        { spiffeId: this.#state.spiffeId, entries: Object.keys(this.#state.entries).length, svids: Object.keys(this.#state.svids).length },
        'loaded cached identity and SVIDs',
      );
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, 'agent state unreadable; attesting afresh');
      this.#state = undefined;
    }
  }

  #save(): void {
    if (!this.#state) return;
    mkdirSync(this.#o.dataDir, { recursive: true, mode: 0o700 });
    const f = join(this.#o.dataDir, STATE_FILE);
    const tmp = `${f}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(this.#state), { mode: 0o600 });
    chmodSync(tmp, 0o600);
    renameSync(tmp, f);
  }

  #rebuildBundles(): void {
    const s = this.#state!;
    const m = new Map<string, TrustBundle>();
    if (s.bundle) m.set(this.trustDomain, parseBundleJson(this.trustDomain, s.bundle));
    for (const [td, b] of Object.entries(s.federated)) {
      try {
        m.set(td, parseBundleJson(td, b));
      } catch (err) {
        this.#o.log.warn({ trustDomain: td, err: (err as Error).message }, 'ignoring a malformed federated bundle from the server');
      }
    }
    this.#bundles = m;
  }

  // ---------------------------------------------------------------- node attestation

  async #attest(): Promise<void> {
    const k = generateKey();
    let res: { spiffeId: string; svid: string; bundle: string };
    if (this.#o.psat) {
      let token: string;
      try {
        token = readFileSync(this.#o.psat.tokenFile, 'utf8').trim();
      } catch (err) {
        throw new WritError(
          'ERR_CONFIG_INVALID',
          `cannot read the projected service account token ${this.#o.psat.tokenFile}: ${(err as NodeJS.ErrnoException).code}`,
          { field: 'psatTokenFile' },
        );
      }
      // Attestation is unauthenticated TLS to the server: no client certificate yet.
      this.#client.configure({ ca: this.#o.caPem, identity: undefined });
      res = await this.#client.call('POST', '/v1/agent/attest/k8s-psat', { cluster: this.#o.psat.cluster, token, csr: csrFor(k) });
    } else {
      if (!this.#o.joinToken)
        throw new WritError(
          'ERR_CONFIG_INVALID',
          'the agent has no valid identity: give it a join token (--join-token; writ token create makes one), or use k8s_psat attestation',
          { field: 'joinToken' },
        );
      res = await this.#client.call('POST', '/v1/agent/attest/join-token', { joinToken: this.#o.joinToken, csr: csrFor(k) });
    }
    const kept = this.#state;
    this.#state = {
      spiffeId: res.spiffeId,
      svidPem: res.svid,
      keyPem: k.key.export({ format: 'pem', type: 'pkcs8' }) as string,
      revision: 0,
      bundlesVersion: '',
      bundle: undefined,
      federated: {},
      entries: kept?.entries ?? {},
      svids: kept?.svids ?? {},
    };
    this.#save();
    this.#o.log.info({ spiffeId: res.spiffeId, method: this.#o.psat ? 'k8s_psat' : 'join_token' }, 'attested to the server');
  }

  #useIdentity(): void {
    const s = this.#state!;
    const ca = s.bundle
      ? parseBundleJson(this.trustDomain, s.bundle)
          .x509Authorities.map((c) => toPem('CERTIFICATE', c.der))
          .join('')
      : this.#o.caPem;
    this.#client.configure({ ca: ca || this.#o.caPem, identity: { cert: s.svidPem, key: s.keyPem }, serverId: `spiffe://${this.trustDomain}/writ/server` });
  }

  #agentSvidExpiry(): { notBefore: number; expiresAt: number } {
    const leaf = parseCertificatesPem(this.#state!.svidPem)[0]!;
    return { notBefore: leaf.notBefore.getTime(), expiresAt: leaf.notAfter.getTime() };
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    mkdirSync(this.#o.dataDir, { recursive: true, mode: 0o700 });
    this.#load();
    if (!this.#state || this.#agentSvidExpiry().expiresAt <= this.#clock()) {
      if (this.#state) this.#o.log.warn('the agent SVID has expired; attesting again');
      await this.#attest();
    }
    this.#useIdentity();
    this.emit('update');
    void this.#syncLoop();
    this.#timers.push(
      setInterval(() => void this.#rotate().catch((err) => this.#o.log.warn({ err: (err as Error).message }, 'rotation failed; will retry')), 1000),
    );
    // Small, frequent batches: the server stores each in a few milliseconds instead of one
    // burst a second that preempts the workloads and proxies sharing its cores.
    this.#timers.push(setInterval(() => void this.#flushDecisions(), 250));
    await this.#rotate().catch(() => undefined);
  }

  stop(): void {
    this.#stopped = true;
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
        // Offline longer than the agent SVID lives (or evicted): attest again instead of getting stuck.
        const expired = this.#agentSvidExpiry().expiresAt <= this.#clock();
        if ((expired || isWritError(err, 'ERR_UNAUTHENTICATED')) && this.#o.psat) {
          try {
            await this.#attest();
            this.#useIdentity();
            backoff = 500;
            continue;
          } catch (e) {
            this.#o.log.warn({ err: (e as Error).message }, 're-attestation failed; will retry');
          }
        } else if (expired) {
          this.#o.log.error('the agent SVID has expired and join tokens are single use: restart the agent with a new --join-token');
        }
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
  }

  /** One sync exchange (exposed for tests and the benchmark). */
  async syncOnce(waitSeconds = 0): Promise<void> {
    const s = this.#state!;
    // After a failed exchange (a reconnect), ask for everything: nothing missed can linger.
    const since = this.#resync ? 0 : s.revision;
    const q = new URLSearchParams({
      since: String(since),
      wait: String(this.#resync ? 0 : waitSeconds),
      bundles: s.bundlesVersion,
      policy: String(s.policyRevision ?? 0),
      quarantine: s.quarantine?.version ?? '',
      lean: '1',
    });
    const raw = await this.#client.call<unknown>('GET', `/v1/agent/sync?${q}`, undefined, (waitSeconds + 15) * 1000);
    // Checked whole before anything is applied: a malformed answer changes nothing.
    const r = decodeSyncAnswer(raw, this.trustDomain, s.bundlesVersion);
    if (!this.#connected) this.#o.log.info({ revision: r.revision, full: r.full }, 'synced with the server');
    this.#connected = true;
    let changed = false;
    // Quarantine ahead of everything else in the answer.
    if (r.quarantine && r.quarantine.version !== (s.quarantine?.version ?? '')) {
      s.quarantine = r.quarantine;
      this.#applyQuarantine();
      changed = true;
      this.#o.log.info({ quarantined: r.quarantine.ids.length }, 'quarantine changed');
    }
    if (r.policy && r.policy.revision !== s.policyRevision) {
      if (this.#loadPolicy(r.policy.revision, r.policy.policies)) {
        s.policyRevision = r.policy.revision;
        s.policies = r.policy.policies;
        changed = true;
      }
    }
    if (r.full) {
      const keep = new Set(r.entries.map((e) => e.id));
      for (const id of Object.keys(s.entries)) if (!keep.has(id)) delete s.entries[id], delete s.svids[id], (changed = true);
    }
    for (const id of r.removed) if (s.entries[id]) delete s.entries[id], delete s.svids[id], (changed = true);
    for (const e of r.entries) {
      const prev = s.entries[e.id];
      // A changed entry (new TTL, DNS names, ID) needs a new SVID.
      if (prev && (prev.spiffeId !== e.spiffeId || prev.x509SvidTtl !== e.x509SvidTtl || prev.dnsNames.join() !== e.dnsNames.join())) delete s.svids[e.id];
      s.entries[e.id] = e;
      changed = true;
    }
    if (r.bundlesVersion !== s.bundlesVersion) {
      s.bundle = r.bundle;
      s.federated = r.federatedBundles!;
      s.bundlesVersion = r.bundlesVersion;
      this.#rebuildBundles();
      this.#useIdentity();
      changed = true;
    }
    s.revision = r.revision;
    this.#resync = false;
    if (changed) {
      this.#jwtCache.clear();
      this.#save();
      this.emit('update');
      await this.#rotate().catch(() => undefined);
    }
  }

  /** Signs what is missing or due, in batches; renews the agent's own SVID at half life. */
  async #rotate(): Promise<void> {
    if (this.#syncing) return this.#syncing;
    this.#syncing = (async () => {
      const s = this.#state;
      if (!s) return;
      const now = this.#clock();
      const own = this.#agentSvidExpiry();
      const issued = Math.min(own.notBefore + BACKDATE_MS, own.expiresAt);
      if (now >= issued + (own.expiresAt - issued) / 2) {
        const k = generateKey();
        const r = await this.#client.call<{ svid: string }>('POST', '/v1/agent/renew', { csr: csrFor(k) });
        s.svidPem = r.svid;
        s.keyPem = k.key.export({ format: 'pem', type: 'pkcs8' }) as string;
        this.#useIdentity();
        this.#save();
        this.#o.log.info('renewed the agent SVID');
      }
      const due = Object.values(s.entries).filter((e) => {
        const sv = s.svids[e.id];
        return !sv || now >= sv.rotateAt;
      });
      for (let i = 0; i < due.length; i += 500) {
        const batch = due.slice(i, i + 500).map((e) => ({ e, k: generateKey() }));
        const res = await this.#client.call<{ svids: Array<{ entryId: string; svid: string; expiresAt: string }> }>('POST', '/v1/agent/svids', {
          requests: batch.map(({ e, k }) => ({ entryId: e.id, csr: csrFor(k) })),
        });
        const keys = new Map(batch.map(({ e, k }) => [e.id, k.key]));
        if (!Array.isArray(res?.svids)) throw new WritError('ERR_REQUEST_FAILED', 'the server sent a malformed signing answer');
        for (const sv of res.svids) {
          const key = keys.get(sv?.entryId);
          const leaf = typeof sv?.svid === 'string' ? parseCertificatesPem(sv.svid)[0] : undefined;
          // Only a certificate for the key we generated is kept; anything else is dropped.
          const want = s.entries[sv?.entryId]?.spiffeId;
          if (!key || !leaf?.spki.equals(createPublicKey(key).export({ format: 'der', type: 'spki' })) || leaf.uris[0] !== want) {
            this.#o.log.warn({ entryId: String(sv?.entryId).slice(0, 64) }, 'ignoring a signed SVID that does not match the request');
            continue;
          }
          const notBefore = leaf.notBefore.getTime();
          const expiresAt = leaf.notAfter.getTime();
          s.svids[sv.entryId] = {
            chainPem: sv.svid,
            keyPem: key.export({ format: 'pem', type: 'pkcs8' }) as string,
            notBefore,
            expiresAt,
            rotateAt: rotationTime(this.#clock(), expiresAt),
          };
        }
        this.#save();
        this.emit('update');
      }
    })().finally(() => (this.#syncing = undefined));
    return this.#syncing;
  }

  // ---------------------------------------------------------------- what the Workload API serves

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

  /**
   * Records a decision for the server's decision log: a decision (encoded here) or an encoded
   * `writ.authz.v1.Decision` from a workload's report (kept as it is). The buffer is bounded:
   * when it is full the decision is dropped and counted, and the count is reported with the next batch.
   */
  logDecision(d: ReportedDecision | Buffer): void {
    if (this.#decisions.full) return this.#decisions.countDropped(1);
    this.#decisions.push(Buffer.isBuffer(d) ? d : encodeDecision(d)); // copied in
  }

  /** Drops reported by in-process reporters travel with this agent's own. */
  countDropped(n: number): void {
    this.#decisions.countDropped(n);
  }

  async #flushDecisions(): Promise<void> {
    // A batch the server refuses as malformed or too large would be refused forever: counted as dropped.
    // Binary (writ.authz.v1.ReportRequest): the reporters' bytes go on unchanged, no JSON on either side.
    await this.#decisions.drain(
      (message) => this.#client.call('POST', '/v1/agent/decisions', message),
      (err) =>
        isWritError(err) &&
        (err.code === 'ERR_FIELD_INVALID' || err.code === 'ERR_BODY_TOO_LARGE' || err.code === 'ERR_JSON_INVALID' || err.code === 'ERR_PROTOBUF_INVALID')
          ? 'drop'
          : 'retry',
    );
  }

  get decisionLogStats(): { buffered: number; dropped: number } {
    return this.#decisions.stats;
  }

  /** The local decision engine (the last good policy revision, with the current quarantine). */
  get engine(): PolicyEngine {
    return this.#engine;
  }

  /** Entries whose selectors are all among `selectors`; never a quarantined identity. */
  entriesFor(selectors: readonly string[]): EntryView[] {
    const have = new Set(selectors);
    const now = this.#clock();
    return Object.values(this.#state?.entries ?? {})
      .filter((e) => !this.#quarantined.has(e.spiffeId) && (e.expiresAt === null || Date.parse(e.expiresAt) > now) && e.selectors.every((x) => have.has(x)))
      .sort((a, b) => (a.spiffeId === b.spiffeId ? a.id.localeCompare(b.id) : a.spiffeId.localeCompare(b.spiffeId)));
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
      const r = await this.#client.call<{ token: string; expiresAt: string }>('POST', '/v1/agent/jwt-svid', { entryId: entry.id, audience });
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
