/**
 * The change hub, one per server: it hears every committed write of the store and, on PostgreSQL,
 * other replicas' (their NOTIFYs, through the store's `listen`; the change stamp polled once a
 * second only while that connection is down), wakes the agents' long polls, shares one snapshot of what every
 * sync answer has in common, and batches the agents' acknowledgements.
 */
import { createHash } from 'node:crypto';
import { formatBundleJson, type BundleJson, type TrustBundle } from '@writ/spiffe';
import { toJson, type Json, type PolicyState, type QuarantineState, type SyncBundles } from '@writ/protocol';
import type { ChangeStamp, PolicyAck, Store, StoreChange, StoreChangeKind } from '../store/types.ts';
import { AdmittedImagesFeed, type AdmittedImagesView } from './admitted-images.ts';

/** What a sync answer depends on. Writes of any other kind (decisions, tokens, tables added later) wake nobody. */
const SYNC_INPUTS: ReadonlySet<StoreChangeKind> = new Set(['entries', 'authorities', 'policies', 'quarantine', 'federated-bundles', 'admitted-images']);

/** The CA as the hub needs it: its bundle, and a reload when the journal moved on without it. */
export interface HubCa {
  bundle(): TrustBundle;
  reload(): Promise<void>;
}

export interface ChangeHubOptions {
  readonly store: Store;
  readonly ca: HubCa;
  readonly clock: () => number;
  readonly breakGlass: readonly string[];
  /** How often other replicas' changes are looked for while agents wait. */
  readonly pollMs?: number;
  /** How long acknowledgements gather before one transaction writes them. */
  readonly ackFlushMs?: number;
  /** The notification connection to other replicas came up (true) or was lost (false). */
  readonly onFeed?: (live: boolean, err?: Error) => void;
}

/**
 * What every agent's answer has in common, read and serialised once per change and shared by all
 * waiting polls: a change wakes a thousand agents, not a thousand queries and serialisations.
 */
export interface SyncSnapshot {
  readonly stamp: ChangeStamp;
  readonly bundlesVersion: string;
  /** Sent only to agents that do not have `bundlesVersion`. */
  readonly bundles: Json<SyncBundles>;
  /** Grows with every change of the quarantine; on the wire as a string (`QuarantineState.version`). */
  readonly quarantineVersion: number;
  readonly quarantine: Json<QuarantineState>;
  readonly policyRevision: number;
  readonly policy: Json<PolicyState>;
  /** The admitted image digests; each agent gets what is new since the version it reports. */
  readonly admittedImages: AdmittedImagesView;
}

/** An agent's acknowledgement: what it reported it enforces. */
export interface AgentReport {
  readonly policyRevision: number;
  readonly quarantineVersion: number;
}

const HEARTBEAT_MS = 30_000;
/** Own entry writes remembered between two stamp polls; past this, the next poll wakes everyone. */
const MAX_OWN_REVISIONS = 10_000;
/** Woken polls released in one turn of the event loop (see `#wake`). */
const WAKE_BATCH = 250;
/** An agent whose sync connection closed unanswered and that has not polled again for this long has gone. */
const GONE_AFTER_MS = 2_000;

export class ChangeHub {
  readonly #o: ChangeHubOptions;
  readonly #unsubscribe: () => void;
  /**
   * The waiting polls' wake-ups, per agent: an entry write wakes the polls of the agents it
   * concerns, not all of them. Sets, not an EventEmitter: removing each of 5,000 `once` listeners
   * from the emitter's array is quadratic, and held the admin call that caused the change for 200-300 ms.
   */
  readonly #waiting = new Map<string, Set<() => void>>();
  #waitingCount = 0;
  /**
   * Entry revisions this server's own writes used since the polls' stamp, while other replicas'
   * changes are polled for: a stamp that moved by these alone is no news (their agents were woken
   * when the writes were heard), so a second's writes for a few agents do not wake all of them.
   */
  #ownRevisions: Array<readonly [number, number]> = [];
  #generation = 0;
  #agentsGeneration = 0;
  #snapshot: { at: number; generation: number; value: Promise<SyncSnapshot> } | undefined;
  #watcher: NodeJS.Timeout | undefined;
  /** The stamp of the latest snapshot: what the waiting polls have seen. */
  #seen: ChangeStamp | undefined;
  /** Last acknowledgement written per agent. */
  readonly #acks = new Map<string, AgentReport & { at: number }>();
  readonly #pendingAcks = new Map<string, PolicyAck>();
  #flushing: Promise<void> | undefined;
  #closed = false;
  readonly #images: AdmittedImagesFeed;
  /** Other replicas' changes arrive as notifications: no polling while this holds. */
  #feedLive = false;
  #feedEpoch = 0;
  readonly #stopListening: () => Promise<void>;
  #draining = false;

  constructor(opts: ChangeHubOptions) {
    this.#o = opts;
    this.#images = new AdmittedImagesFeed(opts.store);
    this.#unsubscribe = opts.store.onChange((c) => this.#heard(c));
    this.#stopListening = opts.store.listen((live, err) => {
      this.#feedLive = live;
      this.#feedEpoch++;
      opts.onFeed?.(live, err);
      // Back after a loss: whatever was committed meanwhile was announced to nobody; one look catches up.
      if (live) this.#checkStamp();
      else if (this.#waitingCount > 0) this.#watch();
    });
  }

  /** Whether other replicas' changes arrive as notifications now (false on SQLite, and while the connection is lost). */
  get feedLive(): boolean {
    return this.#feedLive;
  }

  /**
   * Whether every write to the store, this server's and other replicas', is heard as a change now,
   * and since when: a number that moves whenever that may have stopped being true. `undefined`
   * while other replicas' changes are only polled for. On SQLite (one server) always 0.
   */
  get heardAll(): number | undefined {
    if (this.#o.store.kind === 'sqlite') return 0;
    return this.#feedLive ? this.#feedEpoch : undefined;
  }

  /** True once `drain()` was called: waiting polls are answered at once, and sync refuses new ones. */
  get draining(): boolean {
    return this.#draining;
  }

  /** The server is stopping: every waiting poll returns now (its handler answers ERR_SERVER_DRAINING, and the agent moves on). */
  drain(): void {
    this.#draining = true;
    this.#wake(true, undefined, false);
  }

  #heard(c: StoreChange): void {
    if (c.kind === 'agents') {
      // Renewals and attestations rewrite agent records too; only an eviction or ban is news to a poll.
      if (c.revoked?.length) this.#wake(true);
    } else if (c.kind === 'entries' && c.parents) {
      if (c.revisions && !this.#feedLive && this.#ownRevisions.length < MAX_OWN_REVISIONS) this.#ownRevisions.push(c.revisions);
      this.#wake(false, c.parents);
    } else if (SYNC_INPUTS.has(c.kind)) this.#wake(false);
    // Another replica's new authority must be known before its agents authenticate here, whether
    // or not any poll waits: the snapshot read reloads the CA.
    if (c.kind === 'authorities') this.snapshot().catch(() => undefined);
  }

  /**
   * Wakes the polls of `only` these agents, or of all; every wake-up makes the next snapshot a fresh
   * read. They are taken off the waiting list now, and released once the new snapshot is read
   * (`fresh`; whatever its outcome), WAKE_BATCH at a time with a turn of the event loop between:
   * released all at once, 5,000 polls would each build its answer before the first one left
   * (Node writes a response when the microtasks have run), and the agents would get them in one burst at the end.
   */
  #wake(agents: boolean, only?: readonly string[], fresh = true): void {
    this.#generation++;
    if (agents) this.#agentsGeneration++;
    const wake: Array<() => void> = [];
    for (const agent of only ?? [...this.#waiting.keys()]) {
      const polls = this.#waiting.get(agent);
      if (!polls) continue;
      this.#waiting.delete(agent);
      this.#waitingCount -= polls.size;
      wake.push(...polls);
      polls.clear();
    }
    if (wake.length === 0) return;
    const release = (from: number): void => {
      for (const w of wake.slice(from, from + WAKE_BATCH)) w();
      if (from + WAKE_BATCH < wake.length) setImmediate(release, from + WAKE_BATCH);
    };
    if (!fresh) return release(0);
    this.snapshot().then(
      () => release(0),
      () => release(0),
    );
  }

  /** Grows with every change a poll may care about: `wait` returns at once when it moved since the poll looked. */
  get generation(): number {
    return this.#generation;
  }

  /** Bumped whenever an agent was evicted or banned: each poll then re-reads its own record. */
  get agentsGeneration(): number {
    return this.#agentsGeneration;
  }

  /** The shared snapshot; re-read at least every second even without a wake-up, for other replicas' changes. */
  snapshot(): Promise<SyncSnapshot> {
    const now = Date.now();
    const cur = this.#snapshot;
    if (cur && cur.generation === this.#generation && now - cur.at <= 1000) return cur.value;
    const value = this.#read();
    const entry = { at: now, generation: this.#generation, value };
    this.#snapshot = entry;
    value.catch(() => {
      if (this.#snapshot === entry) this.#snapshot = undefined;
    });
    return value;
  }

  async #read(): Promise<SyncSnapshot> {
    const { store, ca, clock, breakGlass } = this.#o;
    const stamp = await store.changeStamp(clock());
    this.#saw(stamp);
    // The journal moved on (our own rotation commits before the CA reloads; a replica's shows
    // only in the store): the bundle is read from it, not from a CA that has not caught up.
    if ((ca.bundle().sequence ?? 0) < stamp.bundleSequence) await ca.reload();
    const bundle = ca.bundle();
    const now = clock();
    // Each read after the stamp, side by side (one round trip's wait, not four, before woken polls
    // are answered). The quarantine's version before its list: a list newer than its version is
    // sent again with the next version; an older list under a newer version would never be.
    const [fed, [quarantineVersion, q], policy, admittedImages] = await Promise.all([
      store.listFederatedBundles(),
      store.quarantineVersion(now).then(async (v) => [v, await store.listQuarantine(now)] as const),
      store.getPolicyRevision(),
      this.#images.read(),
    ]);
    return {
      stamp,
      // A fingerprint, not the list: agents send it back in the sync URL, which must stay short
      // however many trust domains federate.
      bundlesVersion: `${bundle.sequence ?? 0}:${createHash('sha256')
        .update(fed.map((f) => `${f.trustDomain}@${f.updatedAt}`).join(','))
        .digest('base64url')
        .slice(0, 22)}`,
      bundles: toJson<SyncBundles>({
        bundle: formatBundleJson(bundle),
        federatedBundles: Object.fromEntries(fed.map((f) => [f.trustDomain, JSON.parse(f.bundle) as BundleJson])),
      }),
      quarantineVersion,
      quarantine: toJson<QuarantineState>({ version: String(quarantineVersion), ids: q.map((x) => x.spiffeId), breakGlass: [...breakGlass] }),
      policyRevision: policy?.revision ?? 0,
      policy: toJson<PolicyState>({ revision: policy?.revision ?? 0, policies: { ...(policy?.policies ?? {}) } }),
      admittedImages,
    };
  }

  /**
   * Resolves at the next change `agent`'s answer may depend on, at `deadline` (epoch ms), or when
   * the client closes `socket`, whichever comes first; at once when the hub's `generation` is no
   * longer `looked` (a change came while the poll read what it answers). While anyone waits, one
   * query a second notices other replicas' changes.
   */
  wait(deadline: number, socket: NodeJS.EventEmitter, agent: string, looked: number): Promise<void> {
    if (looked !== this.#generation) return Promise.resolve();
    this.#watch();
    return new Promise<void>((resolve) => {
      let polls = this.#waiting.get(agent);
      if (!polls) this.#waiting.set(agent, (polls = new Set()));
      const mine = polls;
      const t = setTimeout(done, Math.max(0, deadline - Date.now()));
      const hub = this;
      function done(): void {
        clearTimeout(t);
        // Still waiting (not woken): it leaves the hub's count.
        if (mine.delete(done)) {
          hub.#waitingCount--;
          if (mine.size === 0 && hub.#waiting.get(agent) === mine) hub.#waiting.delete(agent);
        }
        socket.off('close', done);
        socket.off('end', done);
        resolve();
      }
      mine.add(done);
      this.#waitingCount++;
      // 'end': the client closed its side (an HTTP server keeps the socket half open for the answer).
      socket.once('close', done);
      socket.once('end', done);
    });
  }

  /**
   * One query per server, not one per waiting agent, for changes made through other replicas (or
   * that happen by themselves, like a quarantine expiring). Stops when nobody waits.
   */
  #watch(): void {
    if (this.#watcher || this.#closed) return;
    this.#watcher = setInterval(() => {
      if (this.#waitingCount === 0) {
        clearInterval(this.#watcher);
        this.#watcher = undefined;
        return;
      }
      if (!this.#feedLive) this.#checkStamp();
    }, this.#o.pollMs ?? 1000);
    this.#watcher.unref();
  }

  #checkStamp(): void {
    this.#o.store.changeStamp(this.#o.clock()).then(
      (s) => {
        // Against what the polls saw, not the previous tick: a change just before the first tick counts too.
        const seen = this.#seen;
        if (!seen || seen.all === s.all) return;
        const ownOnly = seen.rest === s.rest && this.#ownWrites(seen.entryRevision, s.entryRevision);
        this.#saw(s);
        if (!ownOnly) this.#wake(seen.agents !== s.agents);
      },
      () => undefined,
    );
  }

  /** The stamp the polls have seen; own revisions at or below it are accounted for. */
  #saw(stamp: ChangeStamp): void {
    this.#seen = stamp;
    if (this.#ownRevisions.length) this.#ownRevisions = this.#ownRevisions.filter(([, last]) => last > stamp.entryRevision);
  }

  /** Whether every entry revision in (from, to] was used by this server's own writes (revision ranges never overlap). */
  #ownWrites(from: number, to: number): boolean {
    let covered = 0;
    for (const [first, last] of this.#ownRevisions) covered += Math.max(0, Math.min(last, to) - Math.max(first - 1, from));
    return covered === to - from;
  }

  /**
   * Queues an agent's report of what it enforces. Written when it changes, or every 30 s as a
   * heartbeat; in batches (one transaction per flush): a change makes every agent acknowledge at
   * once, and a thousand single-row commits would queue behind each other.
   */
  acknowledge(agent: string, report: AgentReport): void {
    const now = this.#o.clock();
    const last = this.#acks.get(agent);
    if (last && last.policyRevision === report.policyRevision && last.quarantineVersion === report.quarantineVersion && now - last.at <= HEARTBEAT_MS) return;
    this.#acks.set(agent, { ...report, at: now });
    const first = this.#pendingAcks.size === 0;
    this.#pendingAcks.set(agent, { spiffeId: agent, ...report, ackedAt: now });
    if (first) this.#ackTimer = setTimeout(() => void this.flushAcks(), this.#o.ackFlushMs ?? 50).unref();
  }

  #ackTimer: NodeJS.Timeout | undefined;

  /** Open sync polls per agent, and when each agent's last poll was cut off by its side (this replica's view). */
  readonly #open = new Map<string, number>();
  readonly #cutOff = new Map<string, number>();

  /** A sync poll of `agent` began: it is here. */
  syncBegan(agent: string): void {
    this.#open.set(agent, (this.#open.get(agent) ?? 0) + 1);
    this.#cutOff.delete(agent);
  }

  /** A sync poll of `agent` ended; `cutOff`: its connection closed before the answer (the agent stopped or died). */
  syncEnded(agent: string, cutOff: boolean): void {
    const open = (this.#open.get(agent) ?? 1) - 1;
    if (open > 0) this.#open.set(agent, open);
    else this.#open.delete(agent);
    if (cutOff && open === 0) this.#cutOff.set(agent, this.#o.clock());
  }

  /**
   * Whether `agent` left: its last poll to this replica was cut off over 2 s ago and it has not
   * polled since. A live agent always has a poll open, bar the moment between an answer and the
   * next poll, so a stopped agent need not wait out the acknowledgement age to count as gone.
   */
  hasGone(agent: string): boolean {
    const at = this.#cutOff.get(agent);
    return at !== undefined && !this.#open.has(agent) && this.#o.clock() - at >= GONE_AFTER_MS;
  }

  /** Writes the queued acknowledgements; a status read awaits it so that it shows them. */
  async flushAcks(): Promise<void> {
    // Every write under way first, however many started while this waited: a status read must
    // see every acknowledgement that arrived before it, also those another flush took.
    while (this.#flushing) await this.#flushing;
    if (this.#closed || this.#pendingAcks.size === 0) return;
    const batch = [...this.#pendingAcks.values()];
    this.#pendingAcks.clear();
    const flushing = this.#o.store.ackPolicies(batch).catch(() => {
      // Store away: forget them so that the agents' next polls queue them again.
      for (const a of batch) this.#acks.delete(a.spiffeId);
    });
    this.#flushing = flushing;
    await flushing;
    if (this.#flushing === flushing) this.#flushing = undefined;
  }

  /** Stops listening and polling (the server is closing; its connections, and so the waits, end with it). */
  close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#ackTimer);
    this.#unsubscribe();
    const stopped = this.#stopListening();
    clearInterval(this.#watcher);
    this.#watcher = undefined;
    return stopped;
  }
}
