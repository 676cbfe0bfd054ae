/** The store: everything the server persists, behind one interface with a SQLite and a Postgres driver. */
import type { EntryRecord } from '@writ/protocol';
import type { FindingStatus, Report, ReportFormat, Severity, VexDocument, VexStatement } from '@writ/vuln';

/** An entry as stored: the one record shape, shared with the agent<->server contract. */
export type Entry = EntryRecord;
/** What a caller gives to create or replace an entry (selectors are stored sorted and de-duplicated). */
export type EntryInput = Omit<EntryRecord, 'id' | 'revision' | 'createdAt' | 'updatedAt'>;

export interface ListEntriesQuery {
  readonly spiffeId?: string;
  readonly parentId?: string;
  /** Entries that have every one of these selectors. */
  readonly selectors?: readonly string[];
  readonly pageSize?: number;
  readonly pageToken?: string;
}

export interface Page<T> {
  readonly items: T[];
  readonly nextPageToken: string | undefined;
}

export interface JoinToken {
  /** sha256 of the token, hex; the token itself is never stored. */
  readonly hash: string;
  readonly nodeName: string;
  readonly expiresAt: number;
  readonly createdAt: number;
}

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface AdminToken {
  readonly id: string;
  readonly hash: string;
  readonly role: Role;
  readonly name: string;
  readonly createdAt: number;
  readonly expiresAt: number | null;
}

/** A dashboard sign-in (issue 15, section 4): the cookie and CSRF values are stored hashed only. */
export interface UiSession {
  readonly idHash: string;
  /** The API token signed in with: revoking it ends its sessions. */
  readonly tokenId: string;
  readonly csrfHash: string;
  readonly createdAt: number;
  readonly expiresAt: number;
}

/** One (caller, callee, action) edge of the service graph over a time window, by decision. */
/** One edge of the service graph and one rule behind it: its decisions counted by kind. */
export interface GraphEdgeRow {
  readonly from: string;
  readonly to: string;
  readonly action: string;
  /** '' when no rule decided. */
  readonly rule: string;
  readonly allow: number;
  readonly deny: number;
  readonly auditWouldDeny: number;
  readonly lastSeen: number;
}

/**
 * What the service graph reads: decisions since `since` (from the start of its minute: the counts
 * are kept per minute and per hour as decisions arrive), of identities under these ID prefixes.
 */
export interface GraphQuery {
  readonly since: number;
  /** Only edges with an end whose SPIFFE ID starts with this (e.g. `spiffe://example.org/`). */
  readonly prefix?: string;
  /** Only edges with an end whose SPIFFE ID contains this (e.g. `/ns/shop/`). */
  readonly contains?: string;
  readonly limit: number;
}

export interface Agent {
  readonly spiffeId: string;
  readonly nodeName: string;
  readonly attestationType: string;
  readonly selectors: readonly string[];
  readonly serial: string;
  readonly expiresAt: number;
  readonly banned: boolean;
  readonly createdAt: number;
  readonly updatedAt: number;
}

export const AUTHORITY_STATUSES = ['prepared', 'active', 'old'] as const;
export type AuthorityStatus = (typeof AUTHORITY_STATUSES)[number];

/**
 * One signing authority in the CA journal. Only public material is stored here; the private key
 * stays on the disk of the server that made it (`serverId`). Every server's authorities are
 * published in the bundle, so replicas each sign with their own keys (as SPIRE does).
 */
export interface Authority {
  readonly id: string;
  readonly kind: 'x509' | 'jwt';
  readonly serverId: string;
  readonly status: AuthorityStatus;
  /** x509: the CA certificate chain as PEM (ours first); jwt: the public JWK as JSON. */
  readonly publicData: string;
  readonly notBefore: number;
  readonly notAfter: number;
}

export interface FederatedBundle {
  readonly trustDomain: string;
  /** SPIFFE bundle JSON, as given. */
  readonly bundle: string;
  readonly updatedAt: number;
}

export interface PolicyRevision {
  readonly revision: number;
  readonly createdAt: number;
  readonly createdBy: string;
  readonly comment: string;
  /** Policy name -> its YAML document. */
  readonly policies: Readonly<Record<string, string>>;
}

export interface QuarantineEntry {
  readonly spiffeId: string;
  readonly reason: string;
  readonly createdBy: string;
  readonly createdAt: number;
  readonly expiresAt: number | null;
}

export interface ChangeStamp {
  readonly entryRevision: number;
  /** The CA journal's sequence: a replica's rotation shows here before this server reloads its CA. */
  readonly bundleSequence: number;
  /** Changes when the agents table loses a row or an agent is banned. */
  readonly agents: string;
  /** The admitted images' epoch and latest arrival (`EPOCH.SEQ`): agents must hear of new digests. */
  readonly admittedImages: string;
  /** Changes when anything in the stamp but the entry revision changes. */
  readonly rest: string;
  /** Changes when anything in the stamp changes. */
  readonly all: string;
}

export interface PolicyAck {
  readonly spiffeId: string;
  readonly policyRevision: number;
  /** The quarantine version the agent reported it enforces (0 before it reported one). */
  readonly quarantineVersion: number;
  readonly ackedAt: number;
}

/** What a committed write changed, one kind per table (or family of tables). */
export const STORE_CHANGES = [
  'entries',
  'join-tokens',
  'admin-tokens',
  'agents',
  'authorities',
  'policies',
  'quarantine',
  'policy-acks',
  'decisions',
  'federated-bundles',
  // engineer E: admission events
  'admission-events',
  'admitted-images',
  // issue 13: scanner reports and the image inventory
  'reports',
  'workloads',
  // issue 13, sources: images recorded from admission and `writ image add`
  'images',
  // issue 13: OpenVEX documents
  'vex',
  // issue 13: vulnerability events
  'vuln-events',
  // issue 14: federation relationships
  'federation',
  // issue 15: alerts
  'alerts',
] as const;
export type StoreChangeKind = (typeof STORE_CHANGES)[number];

/** A run-once job's lease: which replica (server ID) holds it, until when (epoch ms). */
export interface Lease {
  readonly name: string;
  readonly holder: string;
  readonly expiresAt: number;
}

export interface StoreChange {
  readonly kind: StoreChangeKind;
  /** `agents` only: agents deleted or banned by this write (their SVIDs must stop working now). */
  readonly revoked?: readonly string[];
  /**
   * `agents` only: agents whose record was rewritten with a new SVID (a renewal or a new
   * attestation): a cached copy of their record is out of date. Neither this nor `revoked`: any
   * agent may have changed.
   */
  readonly renewed?: readonly string[];
  /**
   * `entries` only: the agents whose entries this write changed (old and new parent of a moved
   * entry), so that only their long polls wake. Absent when not known: every poll wakes.
   */
  readonly parents?: readonly string[];
  /** `entries` only, this server's own writes: the entry revisions the write used, first and last. */
  readonly revisions?: readonly [first: number, last: number];
}

export interface DecisionRecord {
  readonly id: string;
  readonly at: number;
  /** '' when the caller was unauthenticated. */
  readonly from: string;
  readonly to: string;
  readonly action: string;
  readonly decision: 'allow' | 'deny' | 'audit-would-deny';
  readonly reason: string;
  readonly policyRevision: number;
  readonly rule: string;
  /** The agent (or proxy) that decided. */
  readonly reporter: string;
  /** Arrival order at the store (set by the store; 0 before it was stored). */
  readonly seq?: number;
}

/** A (caller, callee, action) edge of the decision log. */
export interface DecisionHit {
  readonly to: string;
  /** '' when no rule decided (nothing matched). */
  readonly rule: string;
  readonly decision: DecisionRecord['decision'];
  readonly count: number;
}

export interface DecisionEdge {
  /** '' when the caller was unauthenticated. */
  readonly from: string;
  readonly to: string;
  readonly action: string;
  readonly firstSeen: number;
  readonly lastSeen: number;
  /** Decisions logged on this edge. */
  readonly seen: number;
}

export interface DecisionQuery {
  readonly from?: string;
  readonly to?: string;
  readonly decision?: string;
  readonly since?: number;
  /** Only decisions that arrived after this `seq`, oldest arrival first (a follower's cursor). */
  readonly after?: number;
  /** With `after`: and no later than this `seq` (a cursor read before the query). */
  readonly upTo?: number;
  readonly limit: number;
}

// ---- admission events (engineer E) ----
/** An image of an admitted or refused object, as the verdict saw it. */
export interface AdmissionEventImage {
  readonly image: string;
  /** The manifest digest it resolved to, when it did. */
  readonly digest?: string;
  readonly signedBy: readonly string[];
}

/** One verdict of the admission webhook. */
export interface AdmissionEvent {
  readonly id: string;
  readonly at: number;
  /** The AdmissionReview's request.uid. */
  readonly uid: string;
  readonly operation: string;
  readonly namespace: string;
  readonly kind: string;
  readonly name: string;
  readonly subResource: string;
  /** Which webhook answered: validate or mutate. */
  readonly hook: 'validate' | 'mutate';
  readonly allowed: boolean;
  /** The strictest mode of the policies that applied (enforce, warn, audit), '' when none did. */
  readonly mode: string;
  readonly dryRun: boolean;
  /** The deny message (or the warnings), '' when there was nothing to say. */
  readonly message: string;
  readonly images: readonly AdmissionEventImage[];
  /** The controls violated (after exceptions). */
  readonly controls: readonly string[];
  readonly exceptions: ReadonlyArray<{ readonly name: string; readonly controls: readonly string[]; readonly containers: readonly string[] }>;
  readonly policies: readonly string[];
  /** Arrival order at the store (set by the store). */
  readonly seq?: number;
}

export interface AdmissionEventQuery {
  readonly namespace?: string;
  readonly allowed?: boolean;
  readonly since?: number;
  /** Only events that arrived after this `seq`, oldest arrival first. */
  readonly after?: number;
  /** With `after`: and no later than this `seq`. */
  readonly upTo?: number;
  readonly limit: number;
}
// ---- end of admission events ----

export interface Store extends AdmittedImagesStore, ImageInventoryStore, WorkloadStore, ImageSourceStore, VulnQueryStore, VulnEventStore, FederationStore {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * Calls `fn` after each committed write of this store object, and, while `listen` runs, of other
   * replicas' (on PostgreSQL). Returns the function that unsubscribes. A throwing listener is ignored.
   */
  onChange(fn: (change: StoreChange) => void): () => void;
  /**
   * Hears other replicas' writes (PostgreSQL LISTEN on one connection of its own, reconnected with
   * backoff) and passes them to `onChange` listeners; `onState` says when that connection is up or
   * lost (while lost, `changeStamp` is how other replicas' changes are found). On SQLite nothing
   * to hear: `onState` is never called. Resolves the returned function once stopped.
   */
  listen(onState: (live: boolean, err?: Error) => void): () => Promise<void>;
  /** A change no write made (a quarantine that expired): to this store's listeners and other replicas'. */
  announce(kind: StoreChangeKind): Promise<void>;
  /**
   * Takes or renews the lease `name` for `holder` until `now + ttlMs`: true when `holder` holds it
   * (it held it, or it was free or had expired). One statement, so two replicas never both win.
   */
  acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean>;
  /** Gives the lease up (a replica stopping), so another takes it at its next try, not at expiry. */
  releaseLease(name: string, holder: string): Promise<void>;
  listLeases(): Promise<Lease[]>;
  /** Applies pending schema migrations. Safe to run from several replicas at once. */
  migrate(): Promise<void>;
  /** Resolves when the database answers a trivial query. */
  ping(): Promise<void>;
  close(): Promise<void>;

  /** Creates all entries or none (ERR_ENTRY_EXISTS on a duplicate spiffeId+parentId+selectors). */
  createEntries(inputs: readonly EntryInput[], now: number): Promise<Entry[]>;
  getEntry(id: string): Promise<Entry | undefined>;
  listEntries(query: ListEntriesQuery): Promise<Page<Entry>>;
  updateEntry(id: string, input: EntryInput, now: number): Promise<Entry>;
  deleteEntry(id: string): Promise<boolean>;

  createJoinToken(token: JoinToken): Promise<void>;
  /** The token's record without redeeming it (undefined when unknown). */
  peekJoinToken(hash: string): Promise<JoinToken | undefined>;
  /** Marks the token used and returns it; ERR_JOIN_TOKEN_INVALID / _EXPIRED / _USED otherwise. */
  redeemJoinToken(hash: string, now: number): Promise<JoinToken>;

  createAdminToken(token: AdminToken): Promise<void>;
  findAdminToken(hash: string): Promise<AdminToken | undefined>;
  listAdminTokens(): Promise<AdminToken[]>;
  deleteAdminToken(id: string): Promise<boolean>;

  /** Stores a dashboard session; sessions expired before `createdAt` are removed on the way. */
  createUiSession(session: UiSession): Promise<void>;
  /** A live session and the API token behind it; undefined when unknown, expired, or its token is gone or expired. */
  findUiSession(idHash: string, now: number): Promise<{ session: UiSession; token: AdminToken } | undefined>;
  /** Signs a session out; false when it was not there. */
  deleteUiSession(idHash: string): Promise<boolean>;
  /** The service graph's rows (grouped by edge, decision and rule), most used first, at most `limit`. */
  graphEdges(q: GraphQuery): Promise<GraphEdgeRow[]>;

  /**
   * What changed for one agent since `sinceRevision` (0: everything): its entries with a higher
   * revision, the ids of entries it lost, and the current revision to ask from next time.
   */
  syncEntries(parentId: string, sinceRevision: number): Promise<{ entries: Entry[]; removed: string[]; revision: number }>;

  upsertAgent(agent: Agent): Promise<void>;
  deleteAgent(spiffeId: string): Promise<boolean>;
  getAgent(spiffeId: string): Promise<Agent | undefined>;
  listAgents(): Promise<Agent[]>;

  listAuthorities(): Promise<Authority[]>;
  /** Inserts or replaces authorities and deletes others, atomically; bumps the bundle sequence. */
  saveAuthorities(upsert: readonly Authority[], remove: readonly string[]): Promise<void>;
  bundleSequence(): Promise<number>;

  /** Stores the next revision (current + 1) atomically; two racing writers cannot both get it. */
  appendPolicyRevision(rev: Omit<PolicyRevision, 'revision'>, expectedCurrent: number): Promise<PolicyRevision>;
  /** A revision, or the latest when `revision` is undefined; undefined when there is none. */
  getPolicyRevision(revision?: number): Promise<PolicyRevision | undefined>;
  listPolicyRevisions(limit: number): Promise<PolicyRevision[]>;

  /** Adds or updates a quarantined identity. */
  putQuarantine(q: QuarantineEntry): Promise<void>;
  /**
   * Quarantines several identities in one transaction (containment of a vulnerability): those not
   * quarantined at `now` are added, those already quarantined keep their entry. Returns the added ones.
   */
  putQuarantines(qs: readonly QuarantineEntry[], now: number): Promise<QuarantineEntry[]>;
  removeQuarantine(spiffeId: string): Promise<boolean>;
  /** Identities quarantined at `now` (expired ones left out). */
  listQuarantine(now: number): Promise<QuarantineEntry[]>;
  /**
   * A number that grows whenever the quarantine at `now` may differ: every write, and every
   * expiry. Read it before `listQuarantine`: a list newer than its version is sent again later, never the reverse.
   */
  quarantineVersion(now: number): Promise<number>;
  /** Records the policy revisions and quarantine versions agents report they enforce, all in one transaction. */
  ackPolicies(acks: readonly PolicyAck[]): Promise<void>;
  listPolicyAcks(): Promise<PolicyAck[]>;
  /**
   * A cheap fingerprint of everything an agent's sync answer depends on (entries revision, policy
   * revision, live quarantine, federated bundles, agents evicted or banned): one query, so that a
   * server can notice other replicas' changes by polling this instead of every agent's state.
   */
  changeStamp(now: number): Promise<ChangeStamp>;

  /**
   * Stores decisions and counts them on their edges, in one transaction (a duplicate id is
   * ignored and not counted again, so a retried batch is harmless).
   */
  addDecisions(records: readonly DecisionRecord[]): Promise<void>;
  /** Newest first. */
  /** Newest first by time; with `after`, in arrival order after that cursor. */
  queryDecisions(q: DecisionQuery): Promise<DecisionRecord[]>;
  /** The `seq` of the latest arrival (0 when none): where a new follower starts. */
  decisionCursor(): Promise<number>;
  /** Edges seen since `since`, most used first. */
  listDecisionEdges(q: { readonly since: number; readonly limit: number }): Promise<DecisionEdge[]>;
  /** Removes decisions made before `before` (in batches of `batch`) and edges last seen before it; returns how many decisions. */
  pruneDecisions(before: number, batch?: number): Promise<number>;
  /** Edges observed while learning (decisions with reason LEARNING), into `to` or into any destination; most seen first. */
  listLearnedEdges(q: { readonly to?: string; readonly limit: number }): Promise<DecisionEdge[]>;
  /** Forgets what was learned about these destinations (a new learning window starts afresh); returns how many edges. */
  deleteLearnedEdges(toIds: readonly string[]): Promise<number>;
  /**
   * Decisions per (destination, rule, decision) made since `since` under policy revision
   * `minRevision` or later, most first: a shadow policy's hit counts.
   */
  decisionHits(q: { readonly to?: string; readonly since: number; readonly minRevision: number; readonly limit: number }): Promise<DecisionHit[]>;

  setFederatedBundle(bundle: FederatedBundle): Promise<void>;
  getFederatedBundle(trustDomain: string): Promise<FederatedBundle | undefined>;
  listFederatedBundles(): Promise<FederatedBundle[]>;
  deleteFederatedBundle(trustDomain: string): Promise<boolean>;

  /** One logged decision by its id (the id a 403 names). */
  getDecision(id: string): Promise<DecisionRecord | undefined>;

  // ---- admission events (engineer E) ----
  /** Stores admission verdicts in one transaction, numbered in arrival order (a duplicate id is ignored). */
  addAdmissionEvents(events: readonly AdmissionEvent[]): Promise<void>;
  /** Newest first by time; with `after`, in arrival order after that cursor. */
  queryAdmissionEvents(q: AdmissionEventQuery): Promise<AdmissionEvent[]>;
  /** The `seq` of the latest arrival (0 when none). */
  admissionEventCursor(): Promise<number>;
  /** Removes events from before `before`; returns how many. */
  pruneAdmissionEvents(before: number): Promise<number>;
  // ---- end of admission events ----
}

// ---------------------------------------------------------------- admitted images (identity follows image trust)

/** An image digest admitted under an enforce admission policy. */
export interface AdmittedImage {
  /** `sha256:` + 64 hex (or `sha512:` + 128), lower case. */
  readonly digest: string;
  readonly firstSeen: number;
  readonly lastSeen: number;
  /** Arrival order (set by the store): agents follow the set from the last one they have. */
  readonly seq: number;
}

export interface AdmittedImagesPage {
  /** Changes when digests are pruned: a follower at another epoch starts again from 0. */
  readonly epoch: number;
  /** Ordered by `seq`. */
  readonly items: AdmittedImage[];
}

export interface AdmittedImagesStore {
  /**
   * Records digests admitted at `at`: new ones get the next arrival numbers (and a change of kind
   * `admitted-images`), known ones a later `lastSeen` (no change: agents have them already).
   * A digest that is not `sha256:<64 hex>` or `sha512:<128 hex>` is refused (ERR_FIELD_INVALID), nothing written.
   */
  recordAdmittedImages(digests: readonly string[], at: number): Promise<void>;
  /** Digests that arrived after `afterSeq` (0: from the start), oldest arrival first, at most `limit`. */
  listAdmittedImages(q: { readonly afterSeq?: number; readonly limit: number }): Promise<AdmittedImagesPage>;
  /** One digest's record. */
  getAdmittedImage(digest: string): Promise<AdmittedImage | undefined>;
  /** Forgets digests last seen before `before` and starts a new epoch when any went; returns how many. */
  pruneAdmittedImages(before: number): Promise<number>;
}

export const MAX_PAGE_SIZE = 1000;
export const DEFAULT_PAGE_SIZE = 100;

// ---------------------------------------------------------------- image inventory and reports (issue 13)

/** An image by manifest digest, as reports (and later admission and agents) showed it. */
export interface InventoryImage {
  readonly digest: string;
  readonly configDigest: string | null;
  readonly indexDigest: string | null;
  /** `os/architecture[/variant]`, when known. */
  readonly platform: string | null;
  /** Repository names seen (`docker.io/library/alpine`), sorted. */
  readonly names: readonly string[];
  /** `name:tag` references seen, sorted. */
  readonly tags: readonly string[];
  /** Layer diff IDs, base first. */
  readonly layers: readonly string[];
  /** OCI annotations, `org.opencontainers.image.base.name` / `.base.digest` among them. */
  readonly annotations: Readonly<Record<string, string>>;
  readonly labels: Readonly<Record<string, string>>;
  /** Milliseconds, when the image says when it was built. */
  readonly created: number | null;
  readonly firstSeen: number;
  readonly lastSeen: number;
}

export interface StoredPackage {
  /** The package's id within its report (findings point at it). */
  readonly ref: string;
  readonly name: string;
  readonly version: string;
  readonly type: string;
  readonly purl: string | null;
  /** The diff ID of the layer that brought it in. */
  readonly layer: string | null;
}

export interface StoredFinding {
  readonly id: string;
  /** Other IDs the scanner gave it (a GHSA's CVE), as written. */
  readonly aliases: readonly string[];
  readonly severity: Severity;
  readonly status: FindingStatus;
  readonly installed: string;
  readonly fixed: string | null;
  /** The `ref` of its package in the same report. */
  readonly packageRef: string;
}

export interface StoredReport {
  readonly id: string;
  readonly imageDigest: string;
  readonly scanner: string;
  readonly scannerVersion: string | null;
  readonly format: ReportFormat;
  readonly formatVersion: string | null;
  /** Milliseconds; null when the document did not say (then its hash keeps it unique). */
  readonly scannedAt: number | null;
  readonly ingestedAt: number;
  readonly packageCount: number;
  readonly findingCount: number;
  /** Whether it says which vulnerabilities the image has (a scan), not only what it contains (an SBOM). */
  readonly vulnerabilityData: boolean;
}

export interface ImageDetail {
  readonly image: InventoryImage;
  /** The latest report of each scanner (by scan time, then arrival), with its packages and findings; sorted by scanner. */
  readonly reports: readonly (StoredReport & { readonly packages: readonly StoredPackage[]; readonly findings: readonly StoredFinding[] })[];
}

export interface ImageInventoryStore {
  /**
   * Stores a parsed report and merges its image into the inventory, in one transaction (a failure
   * stores nothing). Idempotent per (image digest, scanner name, scan time): the same report
   * again changes nothing and answers `created: false` with the first one's id. A report without a
   * manifest digest is refused (ERR_FIELD_MISSING, field `image.digest`).
   */
  putReport(report: Report, now: number): Promise<{ readonly reportId: string; readonly created: boolean; readonly imageDigest: string }>;
  /** One image with its latest report per scanner; undefined when unknown. */
  getImage(digest: string): Promise<ImageDetail | undefined>;
  /** The manifest digests known as platforms of an image index (sorted); empty for a digest that is no known index. */
  platformDigests(indexDigest: string): Promise<string[]>;
  /** Images ordered by digest, after `after` (exclusive), at most `limit`. */
  listImages(limit: number, after?: string): Promise<InventoryImage[]>;
}

// ---------------------------------------------------------------- images from admission and the registry (issue 13, sources)

export interface ImageSourceStore {
  /**
   * Merges images into the inventory (admission, `writ image add`) in one transaction: names and
   * tags are a union, empty fields are filled, first seen is kept. Notifies `images` only when an
   * image is new or gained something; seeing one again only moves its last-seen time.
   */
  recordImages(images: readonly InventoryImage[], now: number): Promise<{ readonly added: number; readonly changed: number }>;
}

// ---------------------------------------------------------------- what runs where, now (issue 13)

/** How long a workload stays "running" after its agent last reported it (agents report every 20 s). */
export const RUNNING_GRACE_MS = 60_000;

/** One workload an agent attested, as the agent reports it. */
export interface WorkloadInput {
  /** Unique on its agent: the container ID, else `pod-uid/container-name`, else `pid:PID:START`. */
  readonly key: string;
  /** The SPIFFE IDs the agent served it, sorted. */
  readonly spiffeIds: readonly string[];
  readonly containerId: string | null;
  readonly containerName: string | null;
  readonly podUid: string | null;
  readonly podName: string | null;
  readonly namespace: string | null;
  /** The pod's controller, `Kind/name` (`ReplicaSet/web-7d9f`). */
  readonly podOwner: string | null;
  /** The image digest as the runtime reports it (pod status `imageID`): a manifest or an index digest. */
  readonly imageDigest: string | null;
  /** The image reference as the runtime reports it, without the digest (`registry.example/team/web`). */
  readonly imageName: string | null;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  /** Resolved by the server when the report arrives (entry owner, label and annotation keys, namespace map). */
  readonly owner: string | null;
}

export interface Workload extends WorkloadInput {
  /** The SPIFFE ID of the agent that reported it. */
  readonly agentId: string;
  readonly node: string | null;
  readonly firstSeen: number;
  readonly lastSeen: number;
  /** When its agent stopped reporting it; null while it is reported. */
  readonly endedAt: number | null;
}

export interface WorkloadQuery {
  /** Workloads running now (reported within RUNNING_GRACE_MS, not ended); otherwise the recent history too. */
  readonly running: boolean;
  readonly now: number;
  /** Any of these digests (a manifest digest or an index digest). */
  readonly imageDigests?: readonly string[];
  readonly spiffeId?: string;
  readonly agentId?: string;
  readonly limit: number;
}

export interface WorkloadStore {
  /**
   * Replaces what an agent runs: the workloads listed are (still) running, first seen kept; the
   * agent's workloads not listed have ended (now). One transaction. Digests new to the inventory
   * enter it with the image name the runtime reported.
   */
  putAgentWorkloads(
    agentId: string,
    node: string | null,
    workloads: readonly WorkloadInput[],
    now: number,
  ): Promise<{ readonly started: number; readonly ended: number }>;
  listWorkloads(q: WorkloadQuery): Promise<Workload[]>;
  /** Deletes workloads last seen before `before`: ended ones, and ones whose agent stopped reporting. */
  pruneWorkloads(before: number): Promise<number>;
  /**
   * Whether a workload running at `since` stopped running by `now` with no write: not ended, its
   * agent silent past the grace period. (Every other change of the running set is a `workloads` write.)
   */
  workloadsWentSilent(since: number, now: number): Promise<boolean>;
}

// ---------------------------------------------------------------- answers (issue 13, section 4)

/** An image's parent as stored by lineage (see store/lineage-sql.ts). */
export interface ImageParent {
  /** The parent's manifest digest (or the annotated digest when the base is not in the inventory). */
  readonly digest: string | null;
  readonly name: string | null;
  readonly source: 'annotation' | 'layers';
  /** How many of the image's bottom layers are the base's; null when the base is not in the inventory. */
  readonly baseLayers: number | null;
}

/** An image of the inventory with its stored parent. */
export interface LinkedImage extends InventoryImage {
  readonly parent: ImageParent | null;
}

/** A running-now workload with the manifest digest it was matched to (it may report the index digest). */
export interface RunningWorkload extends Workload {
  readonly manifestDigest: string;
}

/** One finding of a vulnerability in one image's latest report of one scanner, with its package. */
export interface AffectedRow {
  /** Shared by every row of the same image. */
  readonly image: LinkedImage;
  readonly reportId: string;
  readonly scanner: string;
  readonly scannedAt: number | null;
  readonly finding: {
    readonly id: string;
    readonly aliases: readonly string[];
    readonly severity: Severity;
    readonly status: FindingStatus;
    readonly installed: string;
    readonly fixed: string | null;
  };
  /** Null when the report's finding names a package the report does not list. */
  readonly package: {
    readonly name: string;
    readonly version: string;
    readonly type: string;
    readonly purl: string | null;
    readonly layer: string | null;
  } | null;
  /** Workloads running the image now (by manifest or index digest); shared by every row of the same image. */
  readonly running: readonly RunningWorkload[];
}

/** A page of `affected`: images in digest order after `after`, at most `limit`, and at most `workloadLimit` workload rows in all. */
export interface AffectedPageQuery {
  readonly after?: string;
  readonly limit: number;
  readonly workloadLimit: number;
}

/** One page of `affected` with the totals over every image carrying the vulnerability (suppressions not applied). */
export interface AffectedPage {
  /** Manifest digests carrying it. */
  readonly images: number;
  /** Those digests, sorted (suppressed ones included). */
  readonly carrying: readonly string[];
  /** Workloads running one of them now. */
  readonly workloads: number;
  /** Per owner (null: none; by name, none last): workloads running an affected image now, and the digests they run. */
  readonly owners: readonly { readonly owner: string | null; readonly workloads: number; readonly images: number }[];
  /** The rows of the page's images; their `running` lists at most `workloadLimit` workloads in all. */
  readonly rows: readonly AffectedRow[];
  /** Workloads running each image of the page now (by manifest or index digest), all counted. */
  readonly runningByImage: ReadonlyMap<string, number>;
  /** The `after` of the next page; null on the last. */
  readonly next: string | null;
  /**
   * `baseImagesOf` the page's images (sorted by digest), each with whether it has a stored report
   * (`reportedDigests`); undefined when their lineage goes deeper than their parents (ask baseImagesOf).
   */
  readonly bases: readonly (LinkedImage & { readonly reported: boolean })[] | undefined;
}

/** One finding of a latest report, for the vulnerability listing (suppressions and counting happen above the store). */
export interface VulnerabilityFindingRow {
  readonly vulnId: string;
  readonly aliases: readonly string[];
  readonly severity: Severity;
  readonly status: FindingStatus;
  readonly fixed: string | null;
  readonly imageDigest: string;
  readonly names: readonly string[];
  readonly packageName: string | null;
  readonly purl: string | null;
}

export interface VulnerabilityQuery {
  readonly severity?: readonly Severity[];
  /** Only findings whose image runs now. */
  readonly running?: boolean;
  /** Only findings with a fixed version. */
  readonly fixable?: boolean;
  readonly now: number;
}

export interface ImageLineage {
  /** Parent, grandparent, … nearest first; the last may be a base outside the inventory (image null). */
  readonly parents: readonly (ImageParent & { readonly image: LinkedImage | null })[];
  /** Images whose stored parent is this image (or its index), by digest. */
  readonly children: readonly LinkedImage[];
}

export interface VulnQueryStore {
  /**
   * Every finding of `vulnId` (as ID or alias, normalized) in the latest report of each (image,
   * scanner), status affected / under investigation / unknown, with the image, its parent, the
   * package and the workloads running the image now. Sorted by image digest, package, scanner.
   */
  affected(vulnId: string, now: number): Promise<AffectedRow[]>;
  /** Manifest digests whose latest report (of any scanner) carries `vulnId` (as ID or alias), sorted. */
  affectedDigests(vulnId: string): Promise<string[]>;
  /** One page of `affected`, with totals counted in SQL (the workloads are not all loaded): for answers about common vulnerabilities. */
  affectedPage(vulnId: string, now: number, q: AffectedPageQuery): Promise<AffectedPage>;
  /** Whether a latest finding filed under `vulnId` is also filed under one of `ids` (a suppression about one of them could apply to it). */
  filedAlsoUnder(vulnId: string, ids: readonly string[]): Promise<boolean>;
  /** Findings of latest reports, filtered; one row per finding. */
  listVulnerabilities(q: VulnerabilityQuery): Promise<VulnerabilityFindingRow[]>;
  /** Manifest digests with a workload running now (by manifest or index digest). */
  runningImageDigests(now: number): Promise<string[]>;
  /** Parent chain and children of one image (empty when unknown). */
  imageLineage(digest: string): Promise<ImageLineage>;
  /**
   * What `Lineage` needs beside these images to place their packages: their ancestors in the
   * inventory (by stored parent) and the other images of the ancestors' repositories (the candidate
   * newer bases). The given images themselves are not repeated.
   */
  baseImagesOf(images: readonly LinkedImage[]): Promise<LinkedImage[]>;
  /** Workloads running now on any of these manifest digests (directly or by their index digest). */
  runningWorkloads(digests: readonly string[], now: number): Promise<RunningWorkload[]>;
  /**
   * For a rollout: every workload (running or ended, as long as it is kept) that ran one of these
   * manifest digests, and the workloads running now that share a SPIFFE ID with one of them.
   */
  rolloutWorkloads(digests: readonly string[], now: number): Promise<{ readonly history: readonly RunningWorkload[]; readonly running: readonly Workload[] }>;
  /** Of these digests (manifest or index), the ones with at least one stored report, as given. */
  reportedDigests(digests: readonly string[]): Promise<string[]>;
}

// ---------------------------------------------------------------- vulnerability events (issue 13, section 6)

export const VULN_EVENT_CAUSES = ['report', 'workload', 'exception-expired'] as const;
export type VulnEventCause = (typeof VULN_EVENT_CAUSES)[number];

/** A running workload's identity newly affected by a vulnerability at or above the configured severity. */
export interface VulnEvent {
  readonly id: string;
  readonly at: number;
  /** What made it affected: a new report, a newly running workload, an exception that expired (or was removed). */
  readonly cause: VulnEventCause;
  readonly vulnerability: string;
  readonly severity: Severity;
  readonly imageDigest: string;
  readonly spiffeId: string;
  readonly owner: string | null;
  readonly node: string | null;
  readonly namespace: string | null;
  readonly pod: string | null;
  /** Arrival order (set by the store). */
  readonly seq?: number;
}

export interface VulnEventStore {
  /**
   * Makes the stored exposures — (vulnerability, image digest, SPIFFE ID) triples affected now —
   * those of `current`, in one transaction: triples no longer affected are forgotten (they may
   * fire again later), new ones are recorded together with their event. Returns the events
   * recorded (a triple another replica recorded first records none here).
   */
  syncVulnExposures(current: readonly Omit<VulnEvent, 'seq'>[]): Promise<VulnEvent[]>;
  /** Newest first, since `since`; with `after`, in arrival order after that cursor. */
  queryVulnEvents(q: { readonly since?: number; readonly after?: number; readonly upTo?: number; readonly limit: number }): Promise<VulnEvent[]>;
  /** The `seq` of the latest event (0 when none). */
  vulnEventCursor(): Promise<number>;
  /** Removes events from before `before` (kept as long as decisions); returns how many. */
  pruneVulnEvents(before: number): Promise<number>;
}
// ---------------------------------------------------------------- OpenVEX statements (issue 13, section 5)

/** One OpenVEX document as stored: the latest version ingested under its `@id`. */
export interface StoredVexDocument {
  readonly id: string;
  readonly author: string;
  readonly role: string | null;
  readonly version: number;
  /** The document's timestamp (ms), when it has one. */
  readonly issuedAt: number | null;
  readonly statementCount: number;
  readonly ingestedAt: number;
}

/** A stored statement with the document it belongs to (suppressionSet takes these as they are). */
export interface StoredVexStatement extends VexStatement {
  readonly document: { readonly id: string; readonly author: string; readonly version: number };
}

export interface VexStore {
  /**
   * Stores an OpenVEX document's statements in one transaction. A document new by `@id` is
   * `created`; a higher version replaces the statements of the one stored (`replaced`: its
   * version); the same version with the same content changes nothing. A lower version, or the
   * same version with other content, is refused (ERR_VEX_VERSION_CONFLICT) and nothing changes.
   */
  putVexDocument(doc: VexDocument, now: number): Promise<{ readonly created: boolean; readonly replaced: number | null; readonly statements: number }>;
  /** Statements (of every stored document), those about `vulnerability` (as name or alias) when given; by document, then order. */
  listVexStatements(q?: { readonly vulnerability?: string }): Promise<StoredVexStatement[]>;
  /** The stored documents by `@id`. */
  listVexDocuments(): Promise<StoredVexDocument[]>;
  /** Removes a document and its statements; false when there was none. */
  deleteVexDocument(id: string): Promise<boolean>;
}

// Declared beside its section (interface merging) so the Store line above stays as it is.
export interface Store extends VexStore {}

// ---- federation relationships (issue 14) ----

export const FEDERATION_PROFILES = ['https_web', 'https_spiffe'] as const;
export type FederationProfile = (typeof FEDERATION_PROFILES)[number];

/** A peer trust domain whose bundle this server fetches from its bundle endpoint, and how that went. */
export interface FederationRelationship {
  readonly trustDomain: string;
  readonly bundleEndpointUrl: string;
  readonly profile: FederationProfile;
  /** https_spiffe: the SPIFFE ID the endpoint's X.509-SVID must have; null for https_web. */
  readonly endpointSpiffeId: string | null;
  readonly createdAt: number;
  readonly lastSuccessAt: number | null;
  /** Why the last fetch failed (cleared by a success); never holds secrets. */
  readonly lastError: string | null;
  readonly lastErrorCode: string | null;
  readonly lastErrorAt: number | null;
  /** The highest `spiffe_sequence` applied (null: the peer sends none). */
  readonly sequence: number | null;
  /** The peer's last `spiffe_refresh_hint`, seconds. */
  readonly refreshHint: number | null;
  readonly nextRefreshAt: number;
}

/** What a fetch changes in a relationship: the fields given are written, the rest kept. */
export type FederationStatusUpdate = Partial<
  Pick<FederationRelationship, 'lastSuccessAt' | 'lastError' | 'lastErrorCode' | 'lastErrorAt' | 'sequence' | 'refreshHint' | 'nextRefreshAt'>
>;

export interface FederationStore {
  /** ERR_FEDERATION_EXISTS when the trust domain has a relationship already. */
  createFederation(rel: FederationRelationship): Promise<void>;
  getFederation(trustDomain: string): Promise<FederationRelationship | undefined>;
  listFederations(): Promise<FederationRelationship[]>;
  /** False when there is no such relationship (deleted meanwhile). */
  updateFederation(trustDomain: string, update: FederationStatusUpdate): Promise<boolean>;
  /** The relationship only (the API also deletes the federated bundle). */
  deleteFederation(trustDomain: string): Promise<boolean>;
}

// ---- alerts (issue 15, section 3) ----

export const ALERT_STATES = ['open', 'acked'] as const;
export type AlertState = (typeof ALERT_STATES)[number];

/** What an alert rule's response did: the identity it quarantined (until when), and whether that was undone. */
export interface AlertResponse {
  readonly quarantined: string;
  readonly expiresAt: number | null;
  readonly undoneAt: number | null;
  readonly undoneBy: string | null;
}

/** One alert: a rule that fired for one key (an edge, an identity, a key ID), with its repeats counted. */
export interface Alert {
  readonly id: string;
  /** The AlertRule's name (`audit` etc. for alerts the server raises by itself). */
  readonly rule: string;
  readonly kind: string;
  /** What repeats are counted by: the same rule and key within the rule's window make one alert. */
  readonly key: string;
  readonly firstAt: number;
  readonly lastAt: number;
  readonly count: number;
  readonly state: AlertState;
  readonly ackedBy: string | null;
  readonly ackedAt: number | null;
  /** What fired it (the edge, the identity, the deny rate …), as of its first occurrence. */
  readonly details: Readonly<Record<string, unknown>>;
  readonly response: AlertResponse | null;
}

export interface AlertInput {
  readonly id: string;
  readonly rule: string;
  readonly kind: string;
  readonly key: string;
  readonly at: number;
  readonly details: Readonly<Record<string, unknown>>;
}

export interface AlertStore {
  /**
   * Records an occurrence: counted into the open alert of the same rule and key last seen within
   * `windowMs`, else a new alert. `created` says which.
   */
  raiseAlert(a: AlertInput, windowMs: number): Promise<{ readonly alert: Alert; readonly created: boolean }>;
  /** Newest first (by last occurrence), at most `limit`. */
  listAlerts(q: { readonly rule?: string; readonly state?: AlertState; readonly limit: number }): Promise<Alert[]>;
  getAlert(id: string): Promise<Alert | undefined>;
  /** Marks an alert acknowledged; undefined when there is none. Acking an acked alert keeps the first ack. */
  ackAlert(id: string, by: string, at: number): Promise<Alert | undefined>;
  /** Records (or replaces) what the rule's response did. */
  setAlertResponse(id: string, response: AlertResponse): Promise<Alert | undefined>;
  /** Removes alerts last seen before `before`; returns how many. */
  pruneAlerts(before: number): Promise<number>;
  /** Of these (caller, destination) pairs, those with a logged decision on any action, as `from + "\n" + to`. */
  seenEdges(pairs: readonly { readonly from: string; readonly to: string }[]): Promise<Set<string>>;
  /** Of these identities, those that called or were called in a logged decision. */
  seenIdentities(ids: readonly string[]): Promise<Set<string>>;
}

export interface Store extends AlertStore {}
// ---- the audit log (issue 15, section 1) ----

/** What a write appends to the audit log: its kind (`entry.create`), what it is about, and its detail. */
export interface AuditLeafInput {
  readonly kind: string;
  readonly subject: string;
  readonly detail: Readonly<Record<string, unknown>>;
}

/** One leaf as stored: its exact body text, and the leaf hash computed when it was appended. */
export interface AuditEntry {
  readonly index: number;
  readonly body: string;
  readonly leafHash: string;
}

export interface AuditHead {
  readonly size: number;
  readonly root: Uint8Array;
}

export interface AuditCheckpoint {
  readonly size: number;
  /** The signed note (C2SP tlog-checkpoint in a C2SP signed note). */
  readonly note: string;
  readonly at: number;
}

export interface AuditStore {
  /** Runs `fn` with `actor` (token name, agent SPIFFE ID) as the author of the audit leaves its writes append; "system" outside. */
  withActor<T>(actor: string, fn: () => Promise<T>): Promise<T>;
  /**
   * The tree's size and root, once the leaves of every change committed so far are folded in
   * (checkpointed or not): the changes' transactions queue their leaves, and this appends them.
   */
  auditHead(): Promise<AuditHead>;
  /** How many leaves committed changes have queued that no fold has appended yet (every replica's). */
  auditPending(): Promise<number>;
  /** Leaves [start, end) in index order. */
  listAuditEntries(start: number, end: number): Promise<AuditEntry[]>;
  /** Perfect-subtree hashes for proofs (level 0 = a leaf hash). ERR_AUDIT_RANGE when one is not stored. */
  auditNodes(nodes: readonly { level: number; index: number }[]): Promise<Uint8Array[]>;
  putAuditCheckpoint(c: AuditCheckpoint): Promise<void>;
  latestAuditCheckpoint(): Promise<AuditCheckpoint | undefined>;
}

export interface Store extends AuditStore {}
