/**
 * What runs where, now (issue 13): agents report the workloads they serve (`POST
 * /v1/agent/workloads`, the whole snapshot each time), the server resolves each one's owner and
 * keeps first/last seen; `GET /v1/workloads` answers what runs now (or ran recently).
 */
import { AGENT_PATHS, checkImageDigest, decodeWorkloads } from '@writ/protocol';
import { WritError, parseSpiffeId } from '@writ/spiffe';
import { DEFAULT_OWNER_RULES, resolveOwner } from '../owners.ts';
import { RUNNING_GRACE_MS, type Workload } from '../store/types.ts';
import type { ApiContext } from './context.ts';
import { DEFAULT_BODY_LIMIT, integerParam, isoOrNull, ok, stringParam, withField, type AddRoute } from './http.ts';

/** A report of 10,000 workloads with labels fits. */
export const WORKLOAD_REPORT_LIMIT = 16 * DEFAULT_BODY_LIMIT;
const DEFAULT_LIMIT = 1000;
const MAX_LIMIT = 50_000;

export function workloadJson(w: Workload, now: number): Record<string, unknown> {
  return {
    agentId: w.agentId,
    node: w.node,
    key: w.key,
    spiffeIds: w.spiffeIds,
    owner: w.owner,
    namespace: w.namespace,
    podName: w.podName,
    podUid: w.podUid,
    podOwner: w.podOwner,
    containerName: w.containerName,
    containerId: w.containerId,
    imageDigest: w.imageDigest,
    imageName: w.imageName,
    labels: w.labels,
    annotations: w.annotations,
    running: w.endedAt === null && w.lastSeen >= now - RUNNING_GRACE_MS,
    firstSeen: new Date(w.firstSeen).toISOString(),
    lastSeen: new Date(w.lastSeen).toISOString(),
    endedAt: isoOrNull(w.endedAt),
  };
}

export function workloadRoutes(ctx: ApiContext, add: AddRoute): void {
  add(
    'POST',
    AGENT_PATHS.workloads,
    'agent',
    "What the calling agent runs now: the whole snapshot `{workloads: [{key, spiffeIds, containerId, containerName, podUid, podName, namespace, podOwner, imageDigest, imageName, labels, annotations}]}` (at most 10,000). Workloads it no longer lists have ended. Each workload's owner is resolved here (an entry's owner, label and annotation keys, the namespace map); image digests new to the inventory enter it. One transaction: a bad field is a 400 naming it and stores nothing.",
    async (req) => {
      const reports = decodeWorkloads(req.body);
      const agentId = req.agent!;
      const agent = await ctx.store.getAgent(agentId);
      if (!agent) throw new WritError('ERR_UNAUTHENTICATED', `agent ${agentId} is not attested (evicted?); it must attest again`);
      // Owners set on the entries this agent serves, by SPIFFE ID (the first by ID order, when several).
      const entryOwners = new Map<string, string>();
      if (reports.length > 0)
        for (const e of (await ctx.store.syncEntries(agentId, 0)).entries.sort((a, b) => (a.id < b.id ? -1 : 1)))
          if (e.owner && !entryOwners.has(e.spiffeId)) entryOwners.set(e.spiffeId, e.owner);
      const rules = ctx.owners ?? DEFAULT_OWNER_RULES;
      const r = await ctx.store.putAgentWorkloads(
        agentId,
        agent.nodeName || null,
        reports.map((w) => ({ ...w, owner: resolveOwner(rules, w, entryOwners) })),
        ctx.clock(),
      );
      return ok({ workloads: reports.length, started: r.started, ended: r.ended });
    },
    { limit: WORKLOAD_REPORT_LIMIT, fields: ['workloads'] },
  );

  add(
    'GET',
    '/v1/workloads',
    'viewer',
    'The workloads agents report: running now (`running=true`, the default: reported within the last minute and not ended) or every one still kept (`running=false`: ended ones too, for as long as decisions are kept); filters `image` (a manifest or index digest) and `spiffeId`; at most `limit` (default 1000), `truncated` when there were more.',
    async (req) => {
      const q = req.query;
      const running = q.get('running') ?? 'true';
      if (running !== 'true' && running !== 'false') throw new WritError('ERR_FIELD_INVALID', 'running must be true or false', { field: 'running' });
      const image = q.get('image');
      const spiffeId = q.get('spiffeId');
      const limit = Number(q.get('limit') ?? DEFAULT_LIMIT);
      const now = ctx.clock();
      const list = await ctx.store.listWorkloads({
        running: running === 'true',
        now,
        ...(image !== null ? { imageDigests: [checkImageDigest(image, 'image')] } : {}),
        ...(spiffeId !== null ? { spiffeId: withField('spiffeId', () => parseSpiffeId(spiffeId)).uri } : {}),
        limit: limit + 1,
      });
      return ok({ workloads: list.slice(0, limit).map((w) => workloadJson(w, now)), truncated: list.length > limit });
    },
    undefined,
    { running: stringParam(5), image: stringParam(200), spiffeId: stringParam(2048), limit: integerParam(1, MAX_LIMIT) },
  );
}
