/** The agent-facing API (mTLS with the agent's SVID) and the operator's view of agents. */
import { WritError, bundleToPem, certificatesToPem, parseCsr, parseSpiffeId } from '@writ/spiffe';
import { REASONS } from '@writ/policy';
import {
  AGENT_PATHS,
  MAX_SVID_BATCH,
  REQUEST_FIELDS,
  SVID_REQUEST_FIELDS,
  SYNC_QUERY_PARAMS,
  decodeSyncQuery,
  encodeEntry,
  quarantineVersionNumber,
  encodeSyncAnswer,
  type JwtSvidAnswer,
  type JwtSvidRequest,
  type RenewAnswer,
  type RenewRequest,
  type SignedSvid,
  type SvidBatchAnswer,
  type SvidBatchRequest,
} from '@writ/protocol';
import type { Agent, DecisionRecord, Store } from '../store/types.ts';
import { decodeReport, newDecisionId, type ReportedDecision } from '@writ/sdk/internal';
import { DEFAULT_BODY_LIMIT, object, ok, onlyKeys, str, strList, withField, type AddRoute, type QuerySpec, type Request } from './http.ts';
import type { ApiContext } from './context.ts';
import type { SyncSnapshot } from '../sync/hub.ts';
import { isReservedPath } from './validate.ts';

/** An acknowledgement older than this means the agent is not live (it polls at least every 30 s and heartbeats every 30 s). */
const LIVE_MS = 90_000;
/** How far past the server's clock a reported decision's time may be (clock skew between nodes). */
const MAX_AHEAD_MS = 86_400_000;
/**
 * Label values of the decision metrics come from a closed set: a reporter's reason or kind that is
 * not one counts as OTHER, so no client can grow /metrics without bound.
 */
const REASON_LABELS: ReadonlySet<string> = new Set(REASONS);
const reasonLabel = (reason: string): string => (REASON_LABELS.has(reason) ? reason : 'OTHER');

function agentJson(a: Agent): Record<string, unknown> {
  return {
    spiffeId: a.spiffeId,
    nodeName: a.nodeName,
    attestationType: a.attestationType,
    selectors: a.selectors,
    serial: a.serial,
    expiresAt: new Date(a.expiresAt).toISOString(),
    banned: a.banned,
    createdAt: new Date(a.createdAt).toISOString(),
    updatedAt: new Date(a.updatedAt).toISOString(),
  };
}

/** One of the calling agent's entries, unexpired; ERR_FORBIDDEN otherwise (whether it exists is not told). */
async function ownEntry(store: Store, agent: string, entryId: string, field: string) {
  const e = await store.getEntry(entryId);
  if (!e || e.parentId !== agent) throw new WritError('ERR_FORBIDDEN', `${field}: entry ${entryId.slice(0, 64)} is not assigned to ${agent}`, { field });
  if (e.expiresAt !== null && e.expiresAt <= Date.now()) throw new WritError('ERR_FORBIDDEN', `${field}: entry ${entryId.slice(0, 64)} has expired`, { field });
  // Never signed, whatever the store holds (a row from before the namespace was reserved).
  if (isReservedPath(parseSpiffeId(e.spiffeId).path))
    throw new WritError('ERR_ENTRY_RESERVED_ID', `${field}: entry ${entryId.slice(0, 64)} claims ${e.spiffeId}, reserved for the server and its agents`, {
      field,
    });
  return e;
}

/** Distinct such answers kept per snapshot (agents at other revisions get theirs encoded each time). */
const MAX_SHARED_ANSWERS = 64;

/** What a route that takes no query parameters declares: any parameter is refused. */
const NO_QUERY: QuerySpec = {};

export function agentRoutes(ctx: ApiContext, add: AddRoute): void {
  /** Per snapshot, the answers without entries, encoded once: a change wakes thousands of agents that have none to get. */
  const sharedAnswers = new WeakMap<SyncSnapshot, Map<string, Buffer>>();
  function sharedAnswer(snap: SyncSnapshot, revision: number, full: boolean, withBundles: boolean, withPolicy: boolean): Buffer {
    let answers = sharedAnswers.get(snap);
    if (!answers) sharedAnswers.set(snap, (answers = new Map()));
    const key = `${revision}/${full}/${withBundles}/${withPolicy}`;
    let body = answers.get(key);
    if (body) return body;
    body = Buffer.from(syncAnswer(snap, revision, full, withBundles, withPolicy));
    if (answers.size < MAX_SHARED_ANSWERS) answers.set(key, body);
    return body;
  }
  /** One agent's sync answer: what the snapshot holds, and its own entries, removals and images. */
  function syncAnswer(
    snap: SyncSnapshot,
    revision: number,
    full: boolean,
    withBundles: boolean,
    withPolicy: boolean,
    own: Pick<Parameters<typeof encodeSyncAnswer>[0], 'entries' | 'removed' | 'admittedImages'> = { entries: [], removed: [] },
  ): string {
    return encodeSyncAnswer({
      quarantine: snap.quarantine,
      revision,
      full,
      ...own,
      bundlesVersion: snap.bundlesVersion,
      bundles: withBundles ? snap.bundles : undefined,
      policy: withPolicy ? snap.policy : undefined,
      requireAdmittedImage: ctx.requireAdmittedImage === true,
    });
  }

  add(
    'GET',
    AGENT_PATHS.sync,
    'agent',
    'Entries of the calling agent changed since revision `since` (0: all), quarantine, and the bundles and policy when they differ from the `bundles` version and `policy` revision the agent reports (its acknowledgement, with the `quarantine` version it enforces); waits up to `wait` seconds for a change (`since=0&wait=0`: a full resync at once).',
    async (req) => {
      const q = decodeSyncQuery(req.query);
      const agent = req.agent!;
      const hub = ctx.hub;
      // The agent reports what it enforces with every sync: its acknowledgement.
      if (q.policy !== undefined && q.policy >= 0)
        hub.acknowledge(agent, { policyRevision: q.policy, quarantineVersion: quarantineVersionNumber(q.quarantine) });
      const deadline = Date.now() + q.wait * 1000;
      // Authentication has just checked the agent's record; it is read again only after an eviction or ban.
      let seenAgents = hub.agentsGeneration;
      // The agent stopped or died: its side of the connection is closed (the server holds the socket half open for an answer).
      const cutOff = (): boolean => req.raw.socket.destroyed || req.raw.socket.readableEnded;
      hub.syncBegan(agent);
      try {
        for (;;) {
          // Stopping: the agent takes its revision to another replica, which answers what it missed.
          if (hub.draining) throw new WritError('ERR_SERVER_DRAINING', 'this server is stopping; sync with another replica');
          if (seenAgents !== hub.agentsGeneration) {
            seenAgents = hub.agentsGeneration;
            const me = await ctx.store.getAgent(agent);
            if (!me) throw new WritError('ERR_UNAUTHENTICATED', `agent ${agent} is not attested (evicted?); it must attest again`);
            if (me.banned) throw new WritError('ERR_FORBIDDEN', `agent ${agent} is banned`);
          }
          const looked = hub.generation;
          const snap = await hub.snapshot();
          // An agent already at the store's entries revision cannot have missed an entry change. So
          // also one at 0 that waits while the store has no entries yet (it holds none); `since=0&wait=0`
          // is a full resync, read from the store.
          const r =
            q.since === snap.stamp.entryRevision && (q.since !== 0 || q.wait > 0)
              ? { entries: [], removed: [], revision: q.since }
              : await ctx.store.syncEntries(agent, q.since);
          const policyChanged = q.policy !== undefined && snap.policyRevision !== q.policy;
          const bundlesChanged = snap.bundlesVersion !== q.bundles;
          const images = q.images === undefined ? undefined : snap.admittedImages.forAgent(q.images);
          const changed =
            images !== undefined ||
            r.entries.length > 0 ||
            r.removed.length > 0 ||
            bundlesChanged ||
            (q.quarantine !== undefined && String(snap.quarantineVersion) !== q.quarantine) ||
            policyChanged;
          if (changed || Date.now() >= deadline || cutOff()) {
            const withBundles = bundlesChanged || !q.lean;
            // No entries of its own to send: the answer is the same bytes as every other such agent's.
            if (r.entries.length === 0 && r.removed.length === 0 && images === undefined)
              return {
                status: 200,
                body: sharedAnswer(snap, r.revision, q.since === 0, withBundles, policyChanged),
                contentType: 'application/json',
              };
            const body = syncAnswer(snap, r.revision, q.since === 0, withBundles, policyChanged, {
              entries: r.entries.map(encodeEntry),
              removed: r.removed,
              admittedImages: images,
            });
            return { status: 200, body, contentType: 'application/json' };
          }
          await hub.wait(deadline, req.raw.socket, agent, looked);
        }
      } finally {
        hub.syncEnded(agent, cutOff());
      }
    },
    undefined,
    SYNC_QUERY_PARAMS,
  );

  add(
    'POST',
    AGENT_PATHS.svids,
    'agent',
    "Sign X.509-SVIDs for the calling agent's entries from CSRs (keys stay on the node).",
    async (req) => {
      const list = object(req.body)['requests'];
      if (!Array.isArray(list) || list.length === 0 || list.length > MAX_SVID_BATCH)
        throw new WritError('ERR_FIELD_INVALID', `field "requests" must hold 1 to ${MAX_SVID_BATCH} items`, { field: 'requests' });
      const svids: SignedSvid[] = [];
      for (const [i, item] of list.entries()) {
        const o = object(item, `requests[${i}]`);
        onlyKeys(o, SVID_REQUEST_FIELDS, `requests[${i}].`);
        const r: SvidBatchRequest['requests'][number] = {
          entryId: str(o, 'entryId', { required: true, max: 64, prefix: `requests[${i}].` })!,
          csr: str(o, 'csr', { required: true, max: 32 * 1024, prefix: `requests[${i}].` })!,
        };
        const entry = await ownEntry(ctx.store, req.agent!, r.entryId, `requests[${i}].entryId`);
        const { spki } = withField(`requests[${i}].csr`, () => parseCsr(r.csr));
        const svid = ctx.ca.signX509Svid({
          spiffeId: entry.spiffeId,
          spki,
          dnsNames: entry.dnsNames,
          ...(entry.x509SvidTtl ? { ttlMs: entry.x509SvidTtl * 1000 } : {}),
        });
        svids.push({ entryId: entry.id, spiffeId: entry.spiffeId, svid: certificatesToPem(svid.chain), expiresAt: new Date(svid.expiresAt).toISOString() });
      }
      ctx.metrics.svidsIssued.inc({ type: 'x509' }, svids.length);
      return ok({ svids } satisfies SvidBatchAnswer);
    },
    { limit: 16 * DEFAULT_BODY_LIMIT, fields: REQUEST_FIELDS.svids },
    NO_QUERY,
  );

  add(
    'POST',
    AGENT_PATHS.jwtSvid,
    'agent',
    "Mint a JWT-SVID for one of the calling agent's entries.",
    async (req) => {
      const o = object(req.body);
      const r: JwtSvidRequest = { entryId: str(o, 'entryId', { required: true, max: 64 })!, audience: strList(o, 'audience', { max: 16, itemMax: 512 }) ?? [] };
      const entry = await ownEntry(ctx.store, req.agent!, r.entryId, 'entryId');
      if (r.audience.length === 0 || r.audience.some((a) => !a))
        throw new WritError('ERR_FIELD_MISSING', 'field "audience" needs at least one non-empty value', { field: 'audience' });
      const jwt = ctx.ca.signJwtSvid(entry.spiffeId, r.audience, entry.jwtSvidTtl ? entry.jwtSvidTtl * 1000 : undefined);
      ctx.metrics.svidsIssued.inc({ type: 'jwt' });
      return ok({ spiffeId: entry.spiffeId, token: jwt.token, expiresAt: new Date(jwt.expiresAt).toISOString() } satisfies JwtSvidAnswer);
    },
    { limit: DEFAULT_BODY_LIMIT, fields: REQUEST_FIELDS.jwtSvid },
    NO_QUERY,
  );

  add(
    'POST',
    AGENT_PATHS.renew,
    'agent',
    "Renew the calling agent's own SVID from a CSR.",
    async (req) => {
      const r: RenewRequest = { csr: str(object(req.body), 'csr', { required: true, max: 32 * 1024 })! };
      const { spki } = withField('csr', () => parseCsr(r.csr));
      // Evicted since it authenticated (a race, not a crash): it must attest again.
      const agent = await ctx.store.getAgent(req.agent!);
      if (!agent) throw new WritError('ERR_UNAUTHENTICATED', `agent ${req.agent} is not attested (evicted?); it must attest again`);
      const svid = ctx.ca.signX509Svid({ spiffeId: agent.spiffeId, spki });
      await ctx.store.upsertAgent({ ...agent, serial: svid.chain[0]!.serialHex, expiresAt: svid.expiresAt, updatedAt: ctx.clock() });
      return ok({
        spiffeId: agent.spiffeId,
        svid: certificatesToPem(svid.chain),
        bundle: bundleToPem(ctx.ca.bundle()),
        expiresAt: new Date(svid.expiresAt).toISOString(),
      } satisfies RenewAnswer);
    },
    { limit: DEFAULT_BODY_LIMIT, fields: REQUEST_FIELDS.renew },
    NO_QUERY,
  );

  const KINDS = new Set(['allow', 'deny', 'audit-would-deny']);
  /**
   * Why a decision's time or revision cannot be stored, or undefined. Both are BIGINTs and `at` is
   * shown as an RFC 3339 time: whole numbers only, a time from 1970 to a day past the server's
   * clock (a decision dated later would head the newest-first log for ever), a revision >= 0.
   */
  const badNumber = (at: unknown, policyRevision: unknown): 'at' | 'policyRevision' | undefined => {
    if (at !== undefined && at !== null && (!Number.isSafeInteger(at) || (at as number) < 0 || (at as number) > ctx.clock() + MAX_AHEAD_MS)) return 'at';
    if (policyRevision !== undefined && policyRevision !== null && (!Number.isSafeInteger(policyRevision) || (policyRevision as number) < 0))
      return 'policyRevision';
    return undefined;
  };
  /** PostgreSQL cannot store U+0000 in text (the JSON form is checked when its body is read). */
  const hasNul = (d: ReportedDecision): boolean => [d.id, d.from, d.to, d.action, d.decision, d.reason, d.rule].some((v) => v.includes('\0'));
  /** Decisions lost on the node (a full buffer, counted by the agent) and here (malformed, refused). */
  type Dropped = { agent: number; server: number };
  /**
   * A protobuf writ.authz.v1.ReportRequest, as agents send it. A malformed message is refused whole;
   * a malformed or out-of-range decision inside a well-formed one (an unknown outcome, a NUL
   * character, a time or revision badNumber refuses) is skipped and counted as dropped, so the
   * agent is not refused a batch it would send again for ever.
   */
  const binaryReport = (body: Buffer, reporter: string): { records: DecisionRecord[]; dropped: Dropped } => {
    let report;
    try {
      report = decodeReport(body);
    } catch (err) {
      throw new WritError('ERR_PROTOBUF_INVALID', `body is not a writ.authz.v1.ReportRequest: ${(err as Error).message}`);
    }
    const records: DecisionRecord[] = [];
    let rejected = report.malformed;
    for (const d of report.decisions) {
      if (!KINDS.has(d.decision) || hasNul(d) || badNumber(d.at, d.policyRevision)) {
        rejected++;
        continue;
      }
      if (d.latencyNs > 0) ctx.metrics.decisionLatency.observe(d.latencyNs / 1e9);
      records.push({
        id: d.id || newDecisionId(),
        at: d.at || ctx.clock(),
        from: d.from,
        to: d.to,
        action: d.action,
        decision: d.decision as DecisionRecord['decision'],
        reason: d.reason,
        policyRevision: d.policyRevision,
        rule: d.rule,
        reporter,
      });
    }
    return { records, dropped: { agent: report.dropped, server: rejected } };
  };
  /** The JSON form, {decisions: [...], dropped}, which agents of earlier versions send. */
  const jsonReport = (body: unknown, reporter: string): { records: DecisionRecord[]; dropped: Dropped } => {
    const o = object(body);
    const list = o['decisions'];
    if (!Array.isArray(list) || list.length > 5000)
      throw new WritError('ERR_FIELD_INVALID', 'field "decisions" must be a list of at most 5000', { field: 'decisions' });
    const dropped = o['dropped'] ?? 0;
    if (!Number.isSafeInteger(dropped) || (dropped as number) < 0)
      throw new WritError('ERR_FIELD_INVALID', 'field "dropped" must be a count', { field: 'dropped' });
    const records = list.map((d, i): DecisionRecord => {
      const x = object(d, `decisions[${i}]`);
      const s = (k: string, max = 2048): string => (typeof x[k] === 'string' ? (x[k] as string).slice(0, max) : '');
      if (!KINDS.has(s('decision')))
        throw new WritError('ERR_FIELD_INVALID', `decisions[${i}].decision must be allow, deny or audit-would-deny`, { field: `decisions[${i}].decision` });
      const bad = badNumber(x['at'], x['policyRevision']);
      if (bad === 'at')
        throw new WritError('ERR_FIELD_INVALID', `decisions[${i}].at must be whole epoch ms, at most a day past the server's clock`, {
          field: `decisions[${i}].at`,
        });
      if (bad === 'policyRevision')
        throw new WritError('ERR_FIELD_INVALID', `decisions[${i}].policyRevision must be a whole number >= 0`, { field: `decisions[${i}].policyRevision` });
      const latencyUs = Number(x['latencyUs']);
      if (Number.isFinite(latencyUs) && latencyUs >= 0) ctx.metrics.decisionLatency.observe(latencyUs / 1e6);
      return {
        id: s('id', 64) || newDecisionId(),
        at: (x['at'] as number | null | undefined) || ctx.clock(),
        from: s('from'),
        to: s('to'),
        action: s('action', 512),
        decision: s('decision') as DecisionRecord['decision'],
        reason: s('reason', 64),
        policyRevision: (x['policyRevision'] as number | null | undefined) ?? 0,
        rule: s('rule', 256),
        reporter,
      };
    });
    return { records, dropped: { agent: dropped as number, server: 0 } };
  };

  add(
    'POST',
    AGENT_PATHS.decisions,
    'agent',
    'Report a batch of decisions: a protobuf writ.authz.v1.ReportRequest (application/x-protobuf, what agents send), or JSON {decisions: [...], dropped}.',
    async (req) => {
      const { records, dropped } = Buffer.isBuffer(req.body) ? binaryReport(req.body, req.agent!) : jsonReport(req.body, req.agent!);
      // Before storing: an edge is new to the alert rules when no stored decision has it yet.
      await ctx.alerts?.observeDecisions(records);
      await ctx.store.addDecisions(records);
      // One counter update per (decision, reason) in the batch, not per decision. `decision` is
      // one of KINDS already (others were refused above).
      const counts = new Map<string, { decision: string; reason: string; n: number }>();
      for (const r of records) {
        const reason = reasonLabel(r.reason);
        const k = `${r.decision}\u0000${reason}`;
        const c = counts.get(k);
        if (c) c.n++;
        else counts.set(k, { decision: r.decision, reason, n: 1 });
      }
      for (const c of counts.values()) ctx.metrics.decisions.inc({ decision: c.decision, reason: c.reason }, c.n);
      // Where they were lost, not which agent: agents come and go, and each would be a series forever.
      if (dropped.agent) ctx.metrics.decisionsDropped.inc({ reporter: 'agent' }, dropped.agent);
      if (dropped.server) ctx.metrics.decisionsDropped.inc({ reporter: 'server' }, dropped.server);
      return ok({ stored: records.length });
    },
    { limit: 8 * DEFAULT_BODY_LIMIT, protobuf: 'writ.authz.v1.ReportRequest', fields: ['decisions', 'dropped'] },
    NO_QUERY,
  );

  // ---------------------------------------------------------------- operator's view
  const agentParam = async (req: Request): Promise<Agent> => {
    const id = decodeURIComponent(req.params[0]!);
    withField('id', () => parseSpiffeId(id));
    const a = await ctx.store.getAgent(id);
    if (!a) throw new WritError('ERR_NOT_FOUND', `agent ${id.slice(0, 200)} not found`);
    return a;
  };
  add('GET', '/v1/agents', 'viewer', 'List attested agents.', async () => ok({ agents: (await ctx.store.listAgents()).map(agentJson) }), undefined, NO_QUERY);
  add(
    'GET',
    '/v1/agents/{id}',
    'viewer',
    'Show one agent (id: URL-encoded SPIFFE ID).',
    async (req) => ok(agentJson(await agentParam(req))),
    undefined,
    NO_QUERY,
  );
  add(
    'POST',
    '/v1/agents/{id}/evict',
    'operator',
    'Evict an agent: its SVID stops working and it must attest again.',
    async (req) => {
      const a = await agentParam(req);
      if (a.banned) throw new WritError('ERR_CONFLICT', `agent ${a.spiffeId} is banned; evicting would lift the ban`);
      await ctx.store.deleteAgent(a.spiffeId); // the hub hears of it and wakes its long poll: it learns now, not at the next timeout
      return ok({ ...agentJson(a), evicted: true });
    },
    undefined,
    NO_QUERY,
  );
  add(
    'POST',
    '/v1/agents/{id}/ban',
    'admin',
    'Ban an agent: its SVID stops working and it cannot attest again under this name.',
    async (req) => {
      const a = await agentParam(req);
      const banned = { ...a, banned: true, updatedAt: ctx.clock() };
      await ctx.store.upsertAgent(banned);
      return ok(agentJson(banned));
    },
    undefined,
    NO_QUERY,
  );

  add(
    'GET',
    '/v1/policy/status',
    'viewer',
    'What each agent enforces: the policy revision and quarantine version it last reported, how far behind it is, and whether it is live (acknowledged within 90 s, and its last poll not cut off by its going away).',
    async () => {
      await ctx.hub.flushAcks();
      const hub = ctx.hub;
      const snap = await hub.snapshot();
      const now = ctx.clock();
      return ok({
        revision: snap.policyRevision,
        quarantineVersion: snap.quarantineVersion,
        agents: (await ctx.store.listPolicyAcks()).map((a) => ({
          spiffeId: a.spiffeId,
          revision: a.policyRevision,
          behind: snap.policyRevision - a.policyRevision,
          quarantineVersion: a.quarantineVersion,
          ackedAt: a.ackedAt ? new Date(a.ackedAt).toISOString() : null,
          secondsSinceAck: a.ackedAt ? Math.round((now - a.ackedAt) / 1000) : null,
          live: a.ackedAt > 0 && now - a.ackedAt <= LIVE_MS && !hub.hasGone(a.spiffeId),
        })),
      });
    },
    undefined,
    NO_QUERY,
  );
}
