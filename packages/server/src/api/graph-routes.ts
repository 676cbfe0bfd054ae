/**
 * The service graph (issue 15, section 4): identities as nodes, (caller, destination, action)
 * edges with their allow / deny / audit-would-deny counts and the rules behind them, from the
 * decision log over a bounded window. The dashboard draws it; `writ` users can read it too.
 */
import { WritError, parseDuration, parseTrustDomain } from '@writ/spiffe';
import type { GraphEdgeRow } from '../store/types.ts';
import type { ApiContext } from './context.ts';
import { integerParam, ok, stringParam, withField, type AddRoute } from './http.ts';

/** The longest window a graph is drawn over: a week of decisions (a year is refused, not clamped). */
export const MAX_GRAPH_WINDOW_MS = 7 * 86_400_000;
/** The most edges in one answer (the most used first); `truncated` says when there were more. */
export const MAX_GRAPH_EDGES = 100_000;
const DEFAULT_WINDOW_MS = 3_600_000;
const NAMESPACE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

export interface GraphEdge {
  from: string;
  to: string;
  action: string;
  allow: number;
  deny: number;
  auditWouldDeny: number;
  /** The rules that decided on this edge, most decisions first ('' when none matched). */
  rules: string[];
  lastSeen: string;
}

/** Folds the store's rows (one per edge, decision and rule) into edges, keeping the store's order. */
export function foldGraph(rows: readonly GraphEdgeRow[], limit: number): { nodes: string[]; edges: GraphEdge[]; truncated: boolean } {
  const byKey = new Map<string, GraphEdge & { last: number }>();
  let truncated = false;
  for (const r of rows) {
    const key = `${r.from}\n${r.to}\n${r.action}`;
    let e = byKey.get(key);
    if (!e) {
      if (byKey.size >= limit) {
        truncated = true;
        continue;
      }
      e = { from: r.from, to: r.to, action: r.action, allow: 0, deny: 0, auditWouldDeny: 0, rules: [], lastSeen: '', last: 0 };
      byKey.set(key, e);
    }
    if (r.decision === 'allow') e.allow += r.count;
    else if (r.decision === 'deny') e.deny += r.count;
    else e.auditWouldDeny += r.count;
    if (!e.rules.includes(r.rule)) e.rules.push(r.rule);
    e.last = Math.max(e.last, r.lastSeen);
  }
  const nodes = new Set<string>();
  const edges = [...byKey.values()].map(({ last, ...e }) => {
    nodes.add(e.from).add(e.to);
    return { ...e, lastSeen: new Date(last).toISOString() };
  });
  return { nodes: [...nodes].sort(), edges, truncated };
}

export function graphRoutes(ctx: ApiContext, add: AddRoute): void {
  add(
    'GET',
    '/v1/graph',
    'viewer',
    `The service graph from the decision log: nodes and edges with allow/deny/audit-would-deny counts and rules (window up to 7d, default 1h; trustDomain, namespace filters; at most ${MAX_GRAPH_EDGES} edges).`,
    async (req) => {
      const q = req.query;
      const w = q.get('window');
      const windowMs = w === null ? DEFAULT_WINDOW_MS : parseDuration(w, 'window', 100 * 366 * 86_400_000);
      if (windowMs > MAX_GRAPH_WINDOW_MS)
        throw new WritError('ERR_GRAPH_WINDOW_TOO_LONG', `window ${w} is longer than 7d: the graph is drawn over a week of decisions at most`, {
          field: 'window',
        });
      const td = q.get('trustDomain') || undefined;
      if (td !== undefined) withField('trustDomain', () => parseTrustDomain(td));
      const ns = q.get('namespace') || undefined;
      if (ns !== undefined && !NAMESPACE.test(ns))
        throw new WritError('ERR_FIELD_INVALID', 'namespace must be a Kubernetes namespace name (a-z 0-9 . -, at most 253 characters)', { field: 'namespace' });
      const limit = q.has('limit') ? Number(q.get('limit')) : MAX_GRAPH_EDGES;
      const now = ctx.clock();
      // Rows are per (edge, decision, rule): three decisions and a few rules per edge are plenty
      // to fill `limit` edges; an edge cut off past them is reported as truncation.
      const rows = await ctx.store.graphEdges({
        since: now - windowMs,
        ...(td !== undefined ? { prefix: `spiffe://${td}/` } : {}),
        ...(ns !== undefined ? { contains: `/ns/${ns}/` } : {}),
        limit: limit * 4 + 1,
      });
      const graph = foldGraph(rows, limit);
      return ok({
        window: { from: new Date(now - windowMs).toISOString(), to: new Date(now).toISOString() },
        nodes: graph.nodes.map((id) => ({ id })),
        edges: graph.edges,
        truncated: graph.truncated || rows.length > limit * 4,
      });
    },
    undefined,
    { window: stringParam(32), trustDomain: stringParam(255), namespace: stringParam(253), limit: integerParam(1, MAX_GRAPH_EDGES) },
  );
}
