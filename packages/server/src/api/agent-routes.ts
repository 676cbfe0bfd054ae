/** The agent-facing API (mTLS with the agent's SVID) and the operator's view of agents. */
import { WritError, bundleToPem, certificatesToPem, formatBundleJson, parseCsr, parseSpiffeId } from '@writ/spiffe';
import type { Agent, ChangeStamp, DecisionRecord, PolicyAck, Store } from '../store/types.ts';
import { decodeReport, newDecisionId } from '@writ/sdk/internal';
import { DEFAULT_BODY_LIMIT, object, ok, onlyKeys, str, strList, withField, type Request, type Route, type RouteBody } from './http.ts';
import { entryJson } from './validate.ts';
import type { ApiContext } from './context.ts';

/**
 * In-process wake-ups for long-polling agents; other replicas' changes arrive through `watch`.
 * A Set, not an EventEmitter: removing each of 5,000 `once` listeners from the emitter's array
 * is quadratic, and held the admin call that caused the change for 200-300 ms.
 */
const waiting = new Set<() => void>();
let generation = 0;
let agentsGeneration = 0;
/** Wakes every waiting agent poll; `agents` when an agent was evicted or banned (each re-reads its record). */
export function notifyChange(what?: 'agents'): void {
  generation++;
  if (what === 'agents') agentsGeneration++;
  const wake = [...waiting];
  waiting.clear();
  for (const w of wake) w();
}

/**
 * What every agent's answer has in common, read and serialised once per change and shared by all
 * waiting polls: a change wakes a thousand agents, not a thousand queries and serialisations.
 */
interface Snapshot {
  readonly stamp: ChangeStamp;
  readonly bundlesVersion: string;
  /** `"bundle":{...},"federatedBundles":{...}`, sent only to agents that do not have this version. */
  readonly bundlesJson: string;
  readonly quarantineVersion: string;
  readonly quarantineJson: string;
  readonly policyRevision: number;
  readonly policyJson: string;
}

/** Per server: the shared snapshot, the store watcher, and the acknowledgements waiting to be written. */
interface SyncState {
  snapshot: { at: number; generation: number; value: Promise<Snapshot> } | undefined;
  watcher: NodeJS.Timeout | undefined;
  lastStamp: ChangeStamp | undefined;
  /** Last acknowledgement written per agent. */
  readonly acks: Map<string, { revision: number; at: number }>;
  readonly pendingAcks: Map<string, PolicyAck>;
  flushing: Promise<void> | undefined;
}
const states = new WeakMap<ApiContext, SyncState>();
function syncState(ctx: ApiContext): SyncState {
  let s = states.get(ctx);
  if (!s)
    states.set(ctx, (s = { snapshot: undefined, watcher: undefined, lastStamp: undefined, acks: new Map(), pendingAcks: new Map(), flushing: undefined }));
  return s;
}

/** Re-read at least every second even without a wake-up, for changes made through other replicas. */
function snapshot(ctx: ApiContext): Promise<Snapshot> {
  const st = syncState(ctx);
  const now = Date.now();
  if (!st.snapshot || st.snapshot.generation !== generation || now - st.snapshot.at > 1000) {
    const value = (async (): Promise<Snapshot> => {
      const stamp = await ctx.store.changeStamp(ctx.clock());
      const fed = await ctx.store.listFederatedBundles();
      const bundle = ctx.ca.bundle();
      const q = await ctx.store.listQuarantine(ctx.clock());
      const policy = await ctx.store.getPolicyRevision();
      const quarantineVersion = q.map((x) => `${x.spiffeId}@${x.expiresAt ?? ''}`).join(',');
      const federated = Object.fromEntries(fed.map((f) => [f.trustDomain, JSON.parse(f.bundle) as unknown]));
      return {
        stamp,
        bundlesVersion: `${bundle.sequence ?? 0}:${fed.map((f) => `${f.trustDomain}@${f.updatedAt}`).join(',')}`,
        bundlesJson: `"bundle":${JSON.stringify(formatBundleJson(bundle))},"federatedBundles":${JSON.stringify(federated)}`,
        quarantineVersion,
        quarantineJson: JSON.stringify({ version: quarantineVersion, ids: q.map((x) => x.spiffeId), breakGlass: ctx.breakGlass }),
        policyRevision: policy?.revision ?? 0,
        policyJson: JSON.stringify({ revision: policy?.revision ?? 0, policies: policy?.policies ?? {} }),
      };
    })();
    st.snapshot = { at: now, generation, value };
    value.catch(() => (st.snapshot = undefined));
  }
  return st.snapshot.value;
}

/**
 * While agents wait, one query a second notices changes made through other replicas (or that
 * happen by themselves, like a quarantine expiring) and wakes the polls: one query per server,
 * not one per waiting agent. Stops when nobody waits.
 */
function watch(ctx: ApiContext): void {
  const st = syncState(ctx);
  if (st.watcher) return;
  st.watcher = setInterval(() => {
    if (waiting.size === 0) {
      clearInterval(st.watcher);
      st.watcher = undefined;
      st.lastStamp = undefined;
      return;
    }
    ctx.store.changeStamp(ctx.clock()).then(
      (s) => {
        const last = st.lastStamp;
        st.lastStamp = s;
        if (last && last.all !== s.all) notifyChange(last.agents !== s.agents ? 'agents' : undefined);
      },
      () => undefined,
    );
  }, POLL_MS);
  st.watcher.unref();
}

/**
 * Acknowledgements are written in batches (one transaction every ACK_FLUSH_MS): a change makes
 * every agent acknowledge at once, and a thousand single-row commits would queue behind each other.
 */
function queueAck(ctx: ApiContext, agent: string, revision: number): void {
  const st = syncState(ctx);
  const now = ctx.clock();
  const last = st.acks.get(agent);
  // Written when it changes, or every 30 s as a heartbeat (the status shows when it was last seen).
  if (last && last.revision === revision && now - last.at <= 30_000) return;
  st.acks.set(agent, { revision, at: now });
  const first = st.pendingAcks.size === 0;
  st.pendingAcks.set(agent, { spiffeId: agent, policyRevision: revision, ackedAt: now });
  if (first) setTimeout(() => void flushAcks(ctx), ACK_FLUSH_MS).unref();
}

/** Writes the queued acknowledgements; the policy status awaits it so that it shows them. */
export async function flushAcks(ctx: ApiContext): Promise<void> {
  const st = syncState(ctx);
  await st.flushing;
  if (st.pendingAcks.size === 0) return;
  const batch = [...st.pendingAcks.values()];
  st.pendingAcks.clear();
  st.flushing = ctx.store.ackPolicies(batch).catch(() => {
    // Store away: forget them so that the agents' next polls queue them again.
    for (const a of batch) st.acks.delete(a.spiffeId);
  });
  await st.flushing;
  st.flushing = undefined;
}

const MAX_WAIT_S = 30;
const POLL_MS = 1000;
const ACK_FLUSH_MS = 50;

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

async function ownEntry(store: Store, agent: string, entryId: string, field: string) {
  const e = await store.getEntry(entryId);
  if (!e || e.parentId !== agent) throw new WritError('ERR_FORBIDDEN', `${field}: entry ${entryId.slice(0, 64)} is not assigned to ${agent}`, { field });
  if (e.expiresAt !== null && e.expiresAt <= Date.now()) throw new WritError('ERR_FORBIDDEN', `${field}: entry ${entryId.slice(0, 64)} has expired`, { field });
  return e;
}

export function agentRoutes(
  ctx: ApiContext,
  add: (method: string, name: string, role: Route['role'], summary: string, handler: Route['handler'], body?: RouteBody) => void,
): void {
  const JSON_BODY = { limit: DEFAULT_BODY_LIMIT };

  add(
    'GET',
    '/v1/agent/sync',
    'agent',
    'Entries of the calling agent changed since revision `since` (0: all), quarantine, and the bundles and policy when they differ from the `bundles` version and `policy` revision the agent reports (its acknowledgement); waits up to `wait` seconds for a change (`since=0&wait=0`: a full resync at once).',
    async (req) => {
      const since = Number(req.query.get('since') ?? '0');
      const wait = Math.min(Number(req.query.get('wait') ?? '0'), MAX_WAIT_S);
      const known = req.query.get('bundles') ?? '';
      const wantsPolicy = req.query.has('policy');
      const knownPolicy = Number(req.query.get('policy') ?? '-1');
      const wantsQuarantine = req.query.has('quarantine');
      const knownQuarantine = req.query.get('quarantine') ?? '';
      // Agents from before bundles were left out of unchanged answers ask without `lean=1` and get
      // them every time: a server upgraded ahead of its agents does not break them.
      const lean = req.query.get('lean') === '1';
      if (!Number.isSafeInteger(since) || since < 0) throw new WritError('ERR_FIELD_INVALID', 'since must be a non-negative integer', { field: 'since' });
      if (!Number.isFinite(wait) || wait < 0) throw new WritError('ERR_FIELD_INVALID', 'wait must be seconds from 0 to 30', { field: 'wait' });
      // The agent reports the policy revision it enforces with every sync.
      if (wantsPolicy && Number.isSafeInteger(knownPolicy) && knownPolicy >= 0) queueAck(ctx, req.agent!, knownPolicy);
      const deadline = Date.now() + wait * 1000;
      // Authentication has just read the agent's record; it is read again only after an eviction or ban.
      let seenAgents = agentsGeneration;
      for (;;) {
        if (seenAgents !== agentsGeneration) {
          seenAgents = agentsGeneration;
          const me = await ctx.store.getAgent(req.agent!);
          if (!me) throw new WritError('ERR_UNAUTHENTICATED', `agent ${req.agent} is not attested (evicted?); it must attest again`);
          if (me.banned) throw new WritError('ERR_FORBIDDEN', `agent ${req.agent} is banned`);
        }
        const snap = await snapshot(ctx);
        // An agent already at the store's entries revision cannot have missed an entry change.
        const r =
          since !== 0 && since === snap.stamp.entryRevision ? { entries: [], removed: [], revision: since } : await ctx.store.syncEntries(req.agent!, since);
        const policyChanged = wantsPolicy && snap.policyRevision !== knownPolicy;
        const bundlesChanged = snap.bundlesVersion !== known;
        const changed =
          r.entries.length > 0 || r.removed.length > 0 || bundlesChanged || (wantsQuarantine && snap.quarantineVersion !== knownQuarantine) || policyChanged;
        if (changed || Date.now() >= deadline || req.raw.socket.destroyed) {
          // Quarantine first: an agent applies it ahead of anything else in the answer.
          const body =
            `{"quarantine":${snap.quarantineJson},"revision":${r.revision},"full":${since === 0},"entries":${JSON.stringify(r.entries.map(entryJson))},` +
            `"removed":${JSON.stringify(r.removed)},"bundlesVersion":${JSON.stringify(snap.bundlesVersion)}${bundlesChanged || !lean ? `,${snap.bundlesJson}` : ''}` +
            `${policyChanged ? `,"policy":${snap.policyJson}` : ''}}\n`;
          return { status: 200, body, contentType: 'application/json' };
        }
        watch(ctx);
        await new Promise<void>((resolve) => {
          const t = setTimeout(done, Math.max(0, deadline - Date.now()));
          function done(): void {
            clearTimeout(t);
            waiting.delete(done);
            req.raw.socket.off('close', done);
            resolve();
          }
          waiting.add(done);
          req.raw.socket.once('close', done);
        });
      }
    },
  );

  add(
    'POST',
    '/v1/agent/svids',
    'agent',
    "Sign X.509-SVIDs for the calling agent's entries from CSRs (keys stay on the node).",
    async (req) => {
      const o = object(req.body);
      onlyKeys(o, ['requests']);
      const list = o['requests'];
      if (!Array.isArray(list) || list.length === 0 || list.length > 1000)
        throw new WritError('ERR_FIELD_INVALID', 'field "requests" must hold 1 to 1000 items', { field: 'requests' });
      const svids = [];
      for (const [i, item] of list.entries()) {
        const r = object(item, `requests[${i}]`);
        onlyKeys(r, ['entryId', 'csr'], `requests[${i}].`);
        const entry = await ownEntry(
          ctx.store,
          req.agent!,
          str(r, 'entryId', { required: true, max: 64, prefix: `requests[${i}].` })!,
          `requests[${i}].entryId`,
        );
        const { spki } = withField(`requests[${i}].csr`, () => parseCsr(str(r, 'csr', { required: true, max: 32 * 1024, prefix: `requests[${i}].` })!));
        const svid = ctx.ca.signX509Svid({
          spiffeId: entry.spiffeId,
          spki,
          dnsNames: entry.dnsNames,
          ...(entry.x509SvidTtl ? { ttlMs: entry.x509SvidTtl * 1000 } : {}),
        });
        svids.push({ entryId: entry.id, spiffeId: entry.spiffeId, svid: certificatesToPem(svid.chain), expiresAt: new Date(svid.expiresAt).toISOString() });
      }
      ctx.metrics.svidsIssued.inc({ type: 'x509' }, svids.length);
      return ok({ svids });
    },
    { limit: 16 * DEFAULT_BODY_LIMIT },
  );

  add(
    'POST',
    '/v1/agent/jwt-svid',
    'agent',
    "Mint a JWT-SVID for one of the calling agent's entries.",
    async (req) => {
      const o = object(req.body);
      onlyKeys(o, ['entryId', 'audience']);
      const entry = await ownEntry(ctx.store, req.agent!, str(o, 'entryId', { required: true, max: 64 })!, 'entryId');
      const audience = strList(o, 'audience', { max: 16, itemMax: 512 }) ?? [];
      if (audience.length === 0 || audience.some((a) => !a))
        throw new WritError('ERR_FIELD_MISSING', 'field "audience" needs at least one non-empty value', { field: 'audience' });
      const jwt = ctx.ca.signJwtSvid(entry.spiffeId, audience, entry.jwtSvidTtl ? entry.jwtSvidTtl * 1000 : undefined);
      ctx.metrics.svidsIssued.inc({ type: 'jwt' });
      return ok({ spiffeId: entry.spiffeId, token: jwt.token, expiresAt: new Date(jwt.expiresAt).toISOString() });
    },
    JSON_BODY,
  );

  add(
    'POST',
    '/v1/agent/renew',
    'agent',
    "Renew the calling agent's own SVID from a CSR.",
    async (req) => {
      const o = object(req.body);
      onlyKeys(o, ['csr']);
      const { spki } = withField('csr', () => parseCsr(str(o, 'csr', { required: true, max: 32 * 1024 })!));
      const agent = (await ctx.store.getAgent(req.agent!))!;
      const svid = ctx.ca.signX509Svid({ spiffeId: agent.spiffeId, spki });
      await ctx.store.upsertAgent({ ...agent, serial: svid.chain[0]!.serialHex, expiresAt: svid.expiresAt, updatedAt: ctx.clock() });
      return ok({
        spiffeId: agent.spiffeId,
        svid: certificatesToPem(svid.chain),
        bundle: bundleToPem(ctx.ca.bundle()),
        expiresAt: new Date(svid.expiresAt).toISOString(),
      });
    },
    JSON_BODY,
  );

  const KINDS = new Set(['allow', 'deny', 'audit-would-deny']);
  /**
   * A protobuf writ.authz.v1.ReportRequest, as agents send it. A malformed message is refused whole;
   * a malformed or out-of-range decision inside a well-formed one is skipped and counted as dropped.
   */
  const binaryReport = (body: Buffer, reporter: string): { records: DecisionRecord[]; dropped: number } => {
    let report;
    try {
      report = decodeReport(body);
    } catch (err) {
      throw new WritError('ERR_PROTOBUF_INVALID', `body is not a writ.authz.v1.ReportRequest: ${(err as Error).message}`);
    }
    const records: DecisionRecord[] = [];
    let rejected = report.malformed;
    for (const d of report.decisions) {
      if (!KINDS.has(d.decision)) {
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
    return { records, dropped: report.dropped + rejected };
  };
  /** The JSON form, {decisions: [...], dropped}, which agents of earlier versions send. */
  const jsonReport = (body: unknown, reporter: string): { records: DecisionRecord[]; dropped: number } => {
    const o = object(body);
    onlyKeys(o, ['decisions', 'dropped']);
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
      const at = Number(x['at']);
      const latencyUs = Number(x['latencyUs']);
      if (Number.isFinite(latencyUs) && latencyUs >= 0) ctx.metrics.decisionLatency.observe(latencyUs / 1e6);
      return {
        id: s('id', 64) || newDecisionId(),
        at: Number.isFinite(at) ? at : ctx.clock(),
        from: s('from'),
        to: s('to'),
        action: s('action', 512),
        decision: s('decision') as DecisionRecord['decision'],
        reason: s('reason', 64),
        policyRevision: Number(x['policyRevision']) || 0,
        rule: s('rule', 256),
        reporter,
      };
    });
    return { records, dropped: dropped as number };
  };

  add(
    'POST',
    '/v1/agent/decisions',
    'agent',
    'Report a batch of decisions: a protobuf writ.authz.v1.ReportRequest (application/x-protobuf, what agents send), or JSON {decisions: [...], dropped}.',
    async (req) => {
      const { records, dropped } = Buffer.isBuffer(req.body) ? binaryReport(req.body, req.agent!) : jsonReport(req.body, req.agent!);
      await ctx.store.addDecisions(records);
      // One counter update per (decision, reason) in the batch, not per decision.
      const counts = new Map<string, { decision: string; reason: string; n: number }>();
      for (const r of records) {
        const k = `${r.decision}\u0000${r.reason}`;
        const c = counts.get(k);
        if (c) c.n++;
        else counts.set(k, { decision: r.decision, reason: r.reason, n: 1 });
      }
      for (const c of counts.values()) ctx.metrics.decisions.inc({ decision: c.decision, reason: c.reason }, c.n);
      if (dropped) ctx.metrics.decisionsDropped.inc({ reporter: req.agent! }, dropped);
      return ok({ stored: records.length });
    },
    { limit: 8 * DEFAULT_BODY_LIMIT, protobuf: 'writ.authz.v1.ReportRequest' },
  );

  // ---------------------------------------------------------------- operator's view
  const agentParam = async (req: Request): Promise<Agent> => {
    const id = decodeURIComponent(req.params[0]!);
    withField('id', () => parseSpiffeId(id));
    const a = await ctx.store.getAgent(id);
    if (!a) throw new WritError('ERR_NOT_FOUND', `agent ${id.slice(0, 200)} not found`);
    return a;
  };
  add('GET', '/v1/agents', 'viewer', 'List attested agents.', async () => ok({ agents: (await ctx.store.listAgents()).map(agentJson) }));
  add('GET', '/v1/agents/{id}', 'viewer', 'Show one agent (id: URL-encoded SPIFFE ID).', async (req) => ok(agentJson(await agentParam(req))));
  add('POST', '/v1/agents/{id}/evict', 'operator', 'Evict an agent: its SVID stops working and it must attest again.', async (req) => {
    const a = await agentParam(req);
    if (a.banned) throw new WritError('ERR_CONFLICT', `agent ${a.spiffeId} is banned; evicting would lift the ban`);
    await ctx.store.deleteAgent(a.spiffeId);
    notifyChange('agents'); // wakes its long poll so it learns now, not at the next timeout
    return ok({ ...agentJson(a), evicted: true });
  });
  add('POST', '/v1/agents/{id}/ban', 'admin', 'Ban an agent: its SVID stops working and it cannot attest again under this name.', async (req) => {
    const a = await agentParam(req);
    const banned = { ...a, banned: true, updatedAt: ctx.clock() };
    await ctx.store.upsertAgent(banned);
    notifyChange('agents');
    return ok(agentJson(banned));
  });
}
