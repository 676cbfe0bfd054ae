/** The agent-facing API (mTLS with the agent's SVID) and the operator's view of agents. */
import { EventEmitter } from 'node:events';
import { WritError, bundleToPem, certificatesToPem, formatBundleJson, parseCsr, parseSpiffeId, type TrustBundle } from '@writ/spiffe';
import type { Agent, Store } from '../store/types.ts';
import { DEFAULT_BODY_LIMIT, object, ok, onlyKeys, str, strList, withField, type Request, type Route } from './http.ts';
import { entryJson } from './validate.ts';
import type { ApiContext } from './routes.ts';

/** In-process wake-ups for long-polling agents; other replicas' changes are caught by polling. */
export const changes = new EventEmitter().setMaxListeners(0);
let generation = 0;
export function notifyChange(): void {
  generation++;
  changes.emit('change');
}

interface SharedState {
  readonly at: number;
  readonly generation: number;
  readonly value: Promise<{ bundles: Awaited<ReturnType<typeof bundlesState>>; quarantine: Array<{ spiffeId: string; expiresAt: number | null }>; policy: { revision: number; policies: Readonly<Record<string, string>> } | undefined }>;
}
let shared: SharedState | undefined;

/**
 * What every agent's answer has in common (bundles, quarantine, policy), read once per change and
 * shared by all waiting polls: a change wakes a thousand agents, not five thousand queries. Reread
 * at least every second, for changes made through other replicas.
 */
function sharedState(ctx: ApiContext): SharedState['value'] {
  const now = Date.now();
  if (!shared || shared.generation !== generation || now - shared.at > 1000) {
    const value = (async () => ({
      bundles: await bundlesState(ctx),
      quarantine: await ctx.store.listQuarantine(ctx.clock()),
      policy: await ctx.store.getPolicyRevision(),
    }))();
    shared = { at: now, generation, value };
    value.catch(() => (shared = undefined));
  }
  return shared.value;
}

const MAX_WAIT_S = 30;
const acks = new Map<string, { revision: number; at: number }>();
const POLL_MS = 1000;

function agentJson(a: Agent): Record<string, unknown> {
  return {
    spiffeId: a.spiffeId, nodeName: a.nodeName, attestationType: a.attestationType, selectors: a.selectors, serial: a.serial,
    expiresAt: new Date(a.expiresAt).toISOString(), banned: a.banned, createdAt: new Date(a.createdAt).toISOString(), updatedAt: new Date(a.updatedAt).toISOString(),
  };
}

async function bundlesState(ctx: ApiContext): Promise<{ version: string; bundle: TrustBundle; bundleJson: unknown; federated: Record<string, unknown> }> {
  const fed = await ctx.store.listFederatedBundles();
  const bundle = ctx.ca.bundle();
  return {
    version: `${bundle.sequence ?? 0}:${fed.map((f) => `${f.trustDomain}@${f.updatedAt}`).join(',')}`,
    bundle,
    bundleJson: formatBundleJson(bundle),
    federated: Object.fromEntries(fed.map((f) => [f.trustDomain, JSON.parse(f.bundle) as unknown])),
  };
}

async function ownEntry(store: Store, agent: string, entryId: string, field: string) {
  const e = await store.getEntry(entryId);
  if (!e || e.parentId !== agent) throw new WritError('ERR_FORBIDDEN', `${field}: entry ${entryId.slice(0, 64)} is not assigned to ${agent}`, { field });
  if (e.expiresAt !== null && e.expiresAt <= Date.now()) throw new WritError('ERR_FORBIDDEN', `${field}: entry ${entryId.slice(0, 64)} has expired`, { field });
  return e;
}

export function agentRoutes(ctx: ApiContext, add: (method: string, name: string, role: Route['role'], summary: string, handler: Route['handler'], body?: { limit: number }) => void): void {
  const JSON_BODY = { limit: DEFAULT_BODY_LIMIT };

  add('GET', '/v1/agent/sync', 'agent', 'Entries of the calling agent changed since revision `since` (0: all), plus bundles; waits up to `wait` seconds for a change.', async (req) => {
    const since = Number(req.query.get('since') ?? '0');
    const wait = Math.min(Number(req.query.get('wait') ?? '0'), MAX_WAIT_S);
    const known = req.query.get('bundles') ?? '';
    const wantsPolicy = req.query.has('policy');
    const knownPolicy = Number(req.query.get('policy') ?? '-1');
    const wantsQuarantine = req.query.has('quarantine');
    const knownQuarantine = req.query.get('quarantine') ?? '';
    // The agent reports the policy revision it enforces with every sync; written when it changes
    // (or every 30 s as a heartbeat), not on every poll: a change wakes every agent at once.
    if (Number.isSafeInteger(knownPolicy) && knownPolicy >= 0) {
      const last = acks.get(req.agent!);
      const now = ctx.clock();
      if (!last || last.revision !== knownPolicy || now - last.at > 30_000) {
        await ctx.store.ackPolicy(req.agent!, knownPolicy, now);
        acks.set(req.agent!, { revision: knownPolicy, at: now });
      }
    }
    if (!Number.isSafeInteger(since) || since < 0) throw new WritError('ERR_FIELD_INVALID', 'since must be a non-negative integer', { field: 'since' });
    if (!Number.isFinite(wait) || wait < 0) throw new WritError('ERR_FIELD_INVALID', 'wait must be seconds from 0 to 30', { field: 'wait' });
    const deadline = Date.now() + wait * 1000;
    for (;;) {
      // Re-checked on every wake-up: an agent evicted or banned mid-poll learns it at once.
      const me = await ctx.store.getAgent(req.agent!);
      if (!me) throw new WritError('ERR_UNAUTHENTICATED', `agent ${req.agent} is not attested (evicted?); it must attest again`);
      if (me.banned) throw new WritError('ERR_FORBIDDEN', `agent ${req.agent} is banned`);
      const r = await ctx.store.syncEntries(req.agent!, since);
      const { bundles: b, quarantine: q, policy } = await sharedState(ctx);
      const qVersion = q.map((x) => `${x.spiffeId}@${x.expiresAt ?? ''}`).join(',');
      const policyChanged = wantsPolicy && (policy?.revision ?? 0) !== knownPolicy;
      const changed = since === 0 || r.entries.length > 0 || r.removed.length > 0 || b.version !== known || (wantsQuarantine && qVersion !== knownQuarantine) || policyChanged;
      if (changed || Date.now() >= deadline || req.raw.destroyed) {
        return ok({
          // Quarantine first: an agent applies it ahead of anything else in the answer.
          quarantine: { version: qVersion, ids: q.map((x) => x.spiffeId), breakGlass: ctx.breakGlass },
          revision: r.revision, full: since === 0, entries: r.entries.map(entryJson), removed: r.removed,
          bundlesVersion: b.version, bundle: b.bundleJson, federatedBundles: b.federated,
          ...(policyChanged ? { policy: { revision: policy?.revision ?? 0, policies: policy?.policies ?? {} } } : {}),
        });
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.min(POLL_MS, Math.max(0, deadline - Date.now())));
        function done(): void {
          clearTimeout(t);
          changes.off('change', done);
          resolve();
        }
        changes.once('change', done);
      });
    }
  });

  add('POST', '/v1/agent/svids', 'agent', "Sign X.509-SVIDs for the calling agent's entries from CSRs (keys stay on the node).", async (req) => {
    const o = object(req.body);
    onlyKeys(o, ['requests']);
    const list = o['requests'];
    if (!Array.isArray(list) || list.length === 0 || list.length > 1000) throw new WritError('ERR_FIELD_INVALID', 'field "requests" must hold 1 to 1000 items', { field: 'requests' });
    const svids = [];
    for (const [i, item] of list.entries()) {
      const r = object(item, `requests[${i}]`);
      onlyKeys(r, ['entryId', 'csr'], `requests[${i}].`);
      const entry = await ownEntry(ctx.store, req.agent!, str(r, 'entryId', { required: true, max: 64, prefix: `requests[${i}].` })!, `requests[${i}].entryId`);
      const { spki } = withField(`requests[${i}].csr`, () => parseCsr(str(r, 'csr', { required: true, max: 32 * 1024, prefix: `requests[${i}].` })!));
      const svid = ctx.ca.signX509Svid({ spiffeId: entry.spiffeId, spki, dnsNames: entry.dnsNames, ...(entry.x509SvidTtl ? { ttlMs: entry.x509SvidTtl * 1000 } : {}) });
      svids.push({ entryId: entry.id, spiffeId: entry.spiffeId, svid: certificatesToPem(svid.chain), expiresAt: new Date(svid.expiresAt).toISOString() });
    }
    ctx.metrics.svidsIssued.inc({ type: 'x509' }, svids.length);
    return ok({ svids });
  }, { limit: 16 * DEFAULT_BODY_LIMIT });

  add('POST', '/v1/agent/jwt-svid', 'agent', "Mint a JWT-SVID for one of the calling agent's entries.", async (req) => {
    const o = object(req.body);
    onlyKeys(o, ['entryId', 'audience']);
    const entry = await ownEntry(ctx.store, req.agent!, str(o, 'entryId', { required: true, max: 64 })!, 'entryId');
    const audience = strList(o, 'audience', { max: 16, itemMax: 512 }) ?? [];
    if (audience.length === 0 || audience.some((a) => !a)) throw new WritError('ERR_FIELD_MISSING', 'field "audience" needs at least one non-empty value', { field: 'audience' });
    const jwt = ctx.ca.signJwtSvid(entry.spiffeId, audience, entry.jwtSvidTtl ? entry.jwtSvidTtl * 1000 : undefined);
    ctx.metrics.svidsIssued.inc({ type: 'jwt' });
    return ok({ spiffeId: entry.spiffeId, token: jwt.token, expiresAt: new Date(jwt.expiresAt).toISOString() });
  }, JSON_BODY);

  add('POST', '/v1/agent/renew', 'agent', "Renew the calling agent's own SVID from a CSR.", async (req) => {
    const o = object(req.body);
    onlyKeys(o, ['csr']);
    const { spki } = withField('csr', () => parseCsr(str(o, 'csr', { required: true, max: 32 * 1024 })!));
    const agent = (await ctx.store.getAgent(req.agent!))!;
    const svid = ctx.ca.signX509Svid({ spiffeId: agent.spiffeId, spki });
    await ctx.store.upsertAgent({ ...agent, serial: svid.chain[0]!.serialHex, expiresAt: svid.expiresAt, updatedAt: ctx.clock() });
    return ok({ spiffeId: agent.spiffeId, svid: certificatesToPem(svid.chain), bundle: bundleToPem(ctx.ca.bundle()), expiresAt: new Date(svid.expiresAt).toISOString() });
  }, JSON_BODY);

  add('POST', '/v1/agent/decisions', 'agent', 'Report a batch of decisions: {decisions: [...], dropped}.', async (req) => {
    const o = object(req.body);
    onlyKeys(o, ['decisions', 'dropped']);
    const list = o['decisions'];
    if (!Array.isArray(list) || list.length > 5000) throw new WritError('ERR_FIELD_INVALID', 'field "decisions" must be a list of at most 5000', { field: 'decisions' });
    const dropped = o['dropped'];
    if (dropped !== undefined && (!Number.isSafeInteger(dropped) || (dropped as number) < 0)) throw new WritError('ERR_FIELD_INVALID', 'field "dropped" must be a count', { field: 'dropped' });
    const kinds = new Set(['allow', 'deny', 'audit-would-deny']);
    const records = list.map((d, i) => {
      const x = object(d, `decisions[${i}]`);
      const s = (k: string, max = 2048): string => (typeof x[k] === 'string' ? (x[k] as string).slice(0, max) : '');
      if (!kinds.has(s('decision'))) throw new WritError('ERR_FIELD_INVALID', `decisions[${i}].decision must be allow, deny or audit-would-deny`, { field: `decisions[${i}].decision` });
      const at = Number(x['at']);
      const latencyUs = Number(x['latencyUs']);
      if (Number.isFinite(latencyUs) && latencyUs >= 0) ctx.metrics.decisionLatency.observe(latencyUs / 1e6);
      return {
        id: s('id', 64) || `${req.agent}-${i}-${Date.now()}`, at: Number.isFinite(at) ? at : ctx.clock(), from: s('from'), to: s('to'), action: s('action', 512),
        decision: s('decision') as 'allow', reason: s('reason', 64), policyRevision: Number(x['policyRevision']) || 0, rule: s('rule', 256), reporter: req.agent!,
      };
    });
    await ctx.store.addDecisions(records);
    for (const r of records) ctx.metrics.decisions.inc({ decision: r.decision, reason: r.reason });
    if (dropped) ctx.metrics.decisionsDropped.inc({ reporter: req.agent! }, dropped as number);
    return ok({ stored: records.length });
  }, { limit: 8 * DEFAULT_BODY_LIMIT });

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
    notifyChange(); // wakes its long poll so it learns now, not at the next timeout
    return ok({ ...agentJson(a), evicted: true });
  });
  add('POST', '/v1/agents/{id}/ban', 'admin', 'Ban an agent: its SVID stops working and it cannot attest again under this name.', async (req) => {
    const a = await agentParam(req);
    const banned = { ...a, banned: true, updatedAt: ctx.clock() };
    await ctx.store.upsertAgent(banned);
    notifyChange();
    return ok(agentJson(banned));
  });
}
