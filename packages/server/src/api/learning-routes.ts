/**
 * Learning mode (issue 15, section 2): observe -> propose -> shadow -> enforce, one destination
 * at a time. A learning window is a `LearningWindow/NAME` document in the policy set, so it
 * reaches every agent, proxy and SDK as a policy revision does; what it observes is counted in
 * `learned_edges` as the decisions arrive. The proposal is built by @writ/policy's proposePolicy;
 * this file only reads, stores and wires. Nothing is promoted by itself.
 */
import { createHash } from 'node:crypto';
import { parseDocument, stringify } from 'yaml';
import { WritError } from '@writ/spiffe';
import { LEARNING_WINDOW_KIND, matchSegments, parseIdPattern, parsePolicies, proposePolicy, type Pattern, type Policy } from '@writ/policy';
import type { DecisionEdge, PolicyRevision } from '../store/types.ts';
import { ttlField } from './validate.ts';
import { lineDiff } from './policy-routes.ts';
import { DEFAULT_BODY_LIMIT, integerParam, object, ok, str, stringParam, withField, type AddRoute } from './http.ts';
import type { ApiContext } from './context.ts';

/** The longest learning window: a month (the decision log's retention bounds what is kept anyway). */
export const MAX_LEARNING_MS = 30 * 86_400_000;
const DEFAULT_LEARNING_MS = 86_400_000;
/** The most observed edges a proposal is built from (the most seen first). */
export const MAX_LEARNED_EDGES = 100_000;
const WINDOW_PREFIX = `${LEARNING_WINDOW_KIND}/`;

interface Window {
  readonly key: string;
  readonly to: string;
  readonly since: number | null;
  readonly until: number;
}

/** The destination a request names: an exact SPIFFE ID or a pattern, as a policy's spec.to takes it. */
function destination(v: string | undefined): Pattern {
  return withField('to', () => parseIdPattern(v ?? ''));
}

/** `learn-<the ID as a name>-<hash>`: readable, a valid metadata.name, and one per destination. */
export function windowName(to: string): string {
  const slug = to
    .slice(9)
    .toLowerCase()
    .replace(/\*\*/g, 'all')
    .replace(/\*/g, 'any')
    .replace(/[^a-z0-9.-]+/g, '-')
    .slice(0, 180);
  return `learn-${slug}-${createHash('sha256').update(to).digest('hex').slice(0, 8)}`;
}

function windowsOf(rev: PolicyRevision | undefined): Window[] {
  const out: Window[] = [];
  for (const [key, y] of Object.entries(rev?.policies ?? {})) {
    if (!key.startsWith(WINDOW_PREFIX)) continue;
    const p = parsePolicies(y, { file: key, allowExpired: true }).policies[0];
    if (p?.until !== undefined) out.push({ key, to: p.to.source, since: p.since ?? null, until: p.until });
  }
  return out.sort((a, b) => a.to.localeCompare(b.to));
}

/** The AccessPolicy of the set whose spec.to is exactly `to` (the destination's own policy). */
function policyOf(rev: PolicyRevision | undefined, to: string): { name: string; yaml: string; policy: Policy } | undefined {
  for (const [name, yaml] of Object.entries(rev?.policies ?? {})) {
    if (name.includes('/')) continue; // admission, exception, token and learning documents
    const policy = parsePolicies(yaml, { file: name, allowExpired: true }).policies[0];
    if (policy && policy.to.source === to) return { name, yaml, policy };
  }
  return undefined;
}

/** A share from a query or body value: a number from 0 to 1. */
function share(v: unknown, field: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^(0(\.\d{1,12})?|1(\.0{1,12})?|\.\d{1,12})$/.test(v) ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new WritError('ERR_FIELD_INVALID', `${field} must be a share from 0 to 1 (e.g. 0.0001)`, { field });
  return n;
}

function count(v: unknown, field: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,16}$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 0) throw new WritError('ERR_FIELD_INVALID', `${field} must be a whole number >= 0`, { field });
  return n;
}

export function learningRoutes(ctx: ApiContext, add: AddRoute): void {
  /** What was observed into `to` (an ID, or every destination a pattern matches), most seen first. */
  const observed = async (to: Pattern): Promise<DecisionEdge[]> => {
    const exact = !to.segments.some((s) => s === '*' || s === '**');
    if (exact) return ctx.store.listLearnedEdges({ to: to.source, limit: MAX_LEARNED_EDGES });
    return (await ctx.store.listLearnedEdges({ limit: MAX_LEARNED_EDGES })).filter((e) => matchSegments(to.segments, e.to.slice(9).split('/')));
  };
  const write = (current: PolicyRevision | undefined, policies: Record<string, string>, by: string, comment: string) =>
    ctx.store.appendPolicyRevision({ createdAt: ctx.clock(), createdBy: by, comment: comment.slice(0, 500), policies }, current?.revision ?? 0);
  const withoutWindows = (policies: Readonly<Record<string, string>>, to: string, windows: readonly Window[]): Record<string, string> => {
    const next = { ...policies };
    for (const w of windows) if (w.to === to) delete next[w.key];
    return next;
  };
  const windowJson = (w: Window, edges: readonly DecisionEdge[]) => ({
    name: w.key,
    to: w.to,
    since: w.since === null ? null : new Date(w.since).toISOString(),
    until: new Date(w.until).toISOString(),
    active: w.until > ctx.clock(),
    observed: { edges: edges.length, requests: edges.reduce((n, e) => n + e.seen, 0), callers: new Set(edges.map((e) => e.from)).size },
  });
  const propose = async (o: { to: Pattern; minCount?: number | undefined; minShare?: number | undefined; mode: 'enforce' | 'audit' }) => {
    const rev = await ctx.store.getPolicyRevision();
    const edges = await observed(o.to);
    if (edges.length === 0)
      throw new WritError(
        'ERR_NOTHING_LEARNED',
        `nothing was observed into ${o.to.source.slice(0, 300)}: start learning first (writ learn start --to ${o.to.source.slice(0, 300)} --for 24h), then let it see traffic`,
        { field: 'to' },
      );
    const current = policyOf(rev, o.to.source);
    const name = current?.name ?? windowName(o.to.source).replace(/^learn-/, 'learned-');
    const p = proposePolicy(
      edges.map((e) => ({ from: e.from, to: e.to, action: e.action, seen: e.seen })),
      {
        to: o.to.source,
        name,
        mode: o.mode,
        ...(o.minCount !== undefined ? { minCount: o.minCount } : {}),
        ...(o.minShare !== undefined ? { minShare: o.minShare } : {}),
      },
    );
    if (!p.policy)
      throw new WritError(
        'ERR_NOTHING_LEARNED',
        `no observed edge into ${o.to.source.slice(0, 300)} is left to allow (every one is below --min-count/--min-share, or has no caller identity)`,
        {
          field: 'to',
        },
      );
    return { rev, current, name, proposal: p };
  };
  const proposalJson = (r: Awaited<ReturnType<typeof propose>>, to: string) => ({
    to,
    name: r.name,
    current: r.current?.name ?? null,
    yaml: r.proposal.yaml,
    groups: r.proposal.groups,
    coverage: r.proposal.coverage,
    diff: lineDiff(r.current?.yaml ?? '', r.proposal.yaml),
    truncated: r.proposal.coverage.edges >= MAX_LEARNED_EDGES,
  });

  add(
    'POST',
    '/v1/learning',
    'operator',
    `Start learning a destination (an ID or pattern): {to, for (default 24h, at most 30 days), keep?}. Calls into it are allowed (quarantine still wins; a caller needs an identity) and counted as observed edges until the window ends, when its own policies decide again. A new policy revision with a LearningWindow document; what was learned about it before is forgotten unless keep.`,
    async (req) => {
      const o = object(req.body);
      const to = destination(str(o, 'to', { required: true, max: 2048 }));
      const forMs = ttlField(o, 'for', MAX_LEARNING_MS) ?? DEFAULT_LEARNING_MS;
      if (o['keep'] !== undefined && typeof o['keep'] !== 'boolean') throw new WritError('ERR_FIELD_INVALID', 'keep must be true or false', { field: 'keep' });
      const now = ctx.clock();
      const name = windowName(to.source);
      const yaml = stringify(
        {
          apiVersion: 'writ.dev/v1',
          kind: LEARNING_WINDOW_KIND,
          metadata: { name },
          spec: { to: to.source, since: new Date(now).toISOString(), until: new Date(now + forMs).toISOString() },
        },
        { lineWidth: 0 },
      );
      parsePolicies(yaml, { file: 'learning window', now }); // what agents will read
      const current = await ctx.store.getPolicyRevision();
      if (o['keep'] !== true) await ctx.store.deleteLearnedEdges([...new Set((await observed(to)).map((e) => e.to))]);
      const rev = await write(current, { ...(current?.policies ?? {}), [`${WINDOW_PREFIX}${name}`]: yaml }, req.role ?? 'operator', `learn ${to.source}`);
      return ok(
        {
          name: `${WINDOW_PREFIX}${name}`,
          to: to.source,
          since: new Date(now).toISOString(),
          until: new Date(now + forMs).toISOString(),
          revision: rev.revision,
        },
        201,
      );
    },
    { limit: 64 * 1024, fields: ['to', 'for', 'keep'] },
  );
  add(
    'GET',
    '/v1/learning',
    'viewer',
    'Learning windows of the current policy set: destination, start, end, whether active, and what each observed so far.',
    async () => {
      const windows = windowsOf(await ctx.store.getPolicyRevision());
      const out = [];
      for (const w of windows.slice(0, 1000)) out.push(windowJson(w, await observed(parseIdPattern(w.to))));
      return ok({ windows: out });
    },
  );
  add(
    'POST',
    '/v1/learning/stop',
    'operator',
    'End the learning window of a destination now: {to}, as given to start (a new revision without it). What it observed is kept for propose.',
    async (req) => {
      const o = object(req.body);
      const to = destination(str(o, 'to', { required: true, max: 2048 }));
      const current = await ctx.store.getPolicyRevision();
      const windows = windowsOf(current).filter((w) => w.to === to.source);
      if (!windows.length)
        throw new WritError('ERR_LEARNING_NOT_FOUND', `${to.source.slice(0, 300)} has no learning window (writ learn list)`, { field: 'to' });
      const rev = await write(current, withoutWindows(current!.policies, to.source, windows), req.role ?? 'operator', `stop learning ${to.source}`);
      return ok({ to: to.source, stopped: windows.map((w) => w.key), revision: rev.revision });
    },
    { limit: 64 * 1024, fields: ['to'] },
  );
  add(
    'GET',
    '/v1/learning/edges',
    'viewer',
    'The (caller, action) edges observed into a destination while it learned, most seen first (?to=ID|PATTERN&limit=, default 100).',
    async (req) => {
      const to = destination(req.query.get('to') ?? undefined);
      const limit = Number(req.query.get('limit') ?? 100);
      const edges = await observed(to);
      return ok({
        to: to.source,
        total: { edges: edges.length, requests: edges.reduce((n, e) => n + e.seen, 0) },
        edges: edges.slice(0, limit).map((e) => ({
          from: e.from || null,
          to: e.to,
          action: e.action,
          seen: e.seen,
          firstSeen: new Date(e.firstSeen).toISOString(),
          lastSeen: new Date(e.lastSeen).toISOString(),
        })),
      });
    },
    undefined,
    { to: stringParam(2048), limit: integerParam(1, 10_000) },
  );

  add(
    'GET',
    '/v1/policies/proposal',
    'viewer',
    'An AccessPolicy proposed from what a destination was observed doing while it learned (?to=&minCount=&minShare=): YAML, the caller groups, its coverage replayed through the engine (requests allowed, edges it would deny) and a diff against the current policy for that destination.',
    async (req) => {
      const q = req.query;
      const to = destination(q.get('to') ?? undefined);
      const r = await propose({ to, minCount: count(q.get('minCount'), 'minCount'), minShare: share(q.get('minShare'), 'minShare'), mode: 'enforce' });
      return ok(proposalJson(r, to.source));
    },
    undefined,
    { to: stringParam(2048), minCount: integerParam(0, Number.MAX_SAFE_INTEGER), minShare: stringParam(16) },
  );
  add(
    'POST',
    '/v1/policies/shadow',
    'operator',
    "Apply the proposal for a destination in audit mode (shadow): {to, minCount?, minShare?, comment?}. It replaces the destination's own policy (spec.to equal to `to`) and ends its learning window, in one revision; per-rule hits then show at GET /v1/policies/hits.",
    async (req) => {
      const o = object(req.body);
      const to = destination(str(o, 'to', { required: true, max: 2048 }));
      const r = await propose({ to, minCount: count(o['minCount'], 'minCount'), minShare: share(o['minShare'], 'minShare'), mode: 'audit' });
      const next = { ...withoutWindows(r.rev?.policies ?? {}, to.source, windowsOf(r.rev)), [r.name]: r.proposal.yaml };
      const rev = await write(r.rev, next, req.role ?? 'operator', str(o, 'comment', { max: 500 }) ?? `shadow the proposal for ${to.source}`);
      return ok({ ...proposalJson(r, to.source), mode: 'audit', revision: rev.revision }, 201);
    },
    { limit: 64 * 1024, fields: ['to', 'minCount', 'minShare', 'comment'] },
  );
  add(
    'GET',
    '/v1/policies/hits',
    'viewer',
    "Per-rule hit counts of a destination's policy since its current version was applied (?to=): for each rule the requests it allowed and would have denied (audit) or denied, and those no rule matched. From the decision log.",
    async (req) => {
      const to = destination(req.query.get('to') ?? undefined);
      const rev = await ctx.store.getPolicyRevision();
      const own = policyOf(rev, to.source);
      if (!own) throw new WritError('ERR_NOT_FOUND', `no AccessPolicy has spec.to ${to.source.slice(0, 300)}`, { field: 'to' });
      // The revision from which this document has been what it is now.
      let since = rev!;
      for (const r of await ctx.store.listPolicyRevisions(1000)) {
        if (r.policies[own.name] !== own.yaml) break;
        since = r;
      }
      const exact = !to.segments.some((s) => s === '*' || s === '**');
      const hits = (
        await ctx.store.decisionHits({ ...(exact ? { to: to.source } : {}), since: since.createdAt, minRevision: since.revision, limit: 100_000 })
      ).filter((h) => exact || matchSegments(to.segments, h.to.slice(9).split('/')));
      const empty = () => ({ allowed: 0, wouldDeny: 0, denied: 0 });
      const rules = new Map(own.policy.rules.map((r) => [r.name, { name: r.name, effect: r.effect, ...empty() }]));
      const unmatched = empty();
      let total = 0;
      for (const h of hits) {
        total += h.count;
        const c = rules.get(h.rule) ?? unmatched;
        if (h.decision === 'allow') c.allowed += h.count;
        else if (h.decision === 'audit-would-deny') c.wouldDeny += h.count;
        else c.denied += h.count;
      }
      return ok({
        to: to.source,
        policy: own.name,
        mode: own.policy.mode,
        revision: since.revision,
        since: new Date(since.createdAt).toISOString(),
        total,
        rules: [...rules.values()],
        unmatched,
      });
    },
    undefined,
    { to: stringParam(2048) },
  );
  add(
    'POST',
    '/v1/policies/promote',
    'operator',
    "Switch a destination's shadow policy (its AccessPolicy in audit mode) to enforce: {to, comment?}. A new revision; refused with ERR_NO_SHADOW_POLICY when the destination has no policy in audit mode.",
    async (req) => {
      const o = object(req.body);
      const to = destination(str(o, 'to', { required: true, max: 2048 }));
      const rev = await ctx.store.getPolicyRevision();
      const own = policyOf(rev, to.source);
      if (own?.policy.mode !== 'audit')
        throw new WritError(
          'ERR_NO_SHADOW_POLICY',
          own
            ? `the policy ${own.name} for ${to.source.slice(0, 300)} is in ${own.policy.mode} mode, not audit: there is no shadow policy to promote`
            : `${to.source.slice(0, 300)} has no shadow policy to promote (writ policy propose --to ${to.source.slice(0, 300)} --apply-shadow first)`,
          { field: 'to' },
        );
      const doc = parseDocument(own.yaml);
      doc.setIn(['spec', 'mode'], 'enforce');
      const yaml = doc.toString({ lineWidth: 0 });
      parsePolicies(yaml, { file: own.name, allowExpired: true });
      const next = { ...withoutWindows(rev!.policies, to.source, windowsOf(rev)), [own.name]: yaml };
      const written = await write(rev, next, req.role ?? 'operator', str(o, 'comment', { max: 500 }) ?? `promote ${own.name} to enforce`);
      return ok({ to: to.source, policy: own.name, mode: 'enforce', revision: written.revision }, 201);
    },
    { limit: DEFAULT_BODY_LIMIT, fields: ['to', 'comment'] },
  );
}
