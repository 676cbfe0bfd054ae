/**
 * The service graph (issue 15, section 4): identities as nodes, (caller, destination, action)
 * edges with their allow / deny / audit-would-deny counts and the rules behind them, from the
 * decision log over a bounded window. The dashboard draws it; `writ` users can read it too.
 */
import { WritError, parseDuration, parseTrustDomain } from '@writ/spiffe';
import type { GraphEdgeRow } from '../store/types.ts';
import type { ApiContext } from './context.ts';
import { integerParam, stringParam, withField, type AddRoute } from './http.ts';

/** The longest window a graph is drawn over: a week of decisions (a year is refused, not clamped). */
export const MAX_GRAPH_WINDOW_MS = 7 * 86_400_000;
/** The most edges in one answer (the most used first); `truncated` says when there were more. */
export const MAX_GRAPH_EDGES = 100_000;
const DEFAULT_WINDOW_MS = 3_600_000;
const NAMESPACE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

/**
 * One edge of the answer. The answer is compact (a 50,000-edge graph repeated both full SPIFFE
 * IDs per edge: 12 MB): `from` and `to` are indexes into the answer's `nodes`, `rules` indexes
 * into its `rules`.
 */
export interface GraphEdge {
  from: number;
  to: number;
  action: string;
  allow: number;
  deny: number;
  auditWouldDeny: number;
  /** The rules that decided on this edge, most decisions first (the index of '' when none matched). */
  rules: number[];
  lastSeen: string;
}

export interface Graph {
  /** Every identity at an end of an edge, sorted ('' for unauthenticated callers). */
  nodes: string[];
  /** Every rule named by an edge, sorted. */
  rules: string[];
  edges: GraphEdge[];
  truncated: boolean;
}

/** Index of each string of a sorted list. */
function indexOf(sorted: readonly string[]): Map<string, number> {
  return new Map(sorted.map((s, i) => [s, i]));
}

/** Folds the store's rows (one per edge, decision and rule) into edges, keeping the store's order. */
export function foldGraph(rows: readonly GraphEdgeRow[], limit: number): Graph {
  interface Folded {
    from: string;
    to: string;
    action: string;
    allow: number;
    deny: number;
    auditWouldDeny: number;
    rules: string[];
    last: number;
  }
  const byKey = new Map<string, Folded>();
  let truncated = false;
  for (const r of rows) {
    const key = `${r.from}\n${r.to}\n${r.action}`;
    let e = byKey.get(key);
    if (!e) {
      if (byKey.size >= limit) {
        truncated = true;
        continue;
      }
      e = { from: r.from, to: r.to, action: r.action, allow: 0, deny: 0, auditWouldDeny: 0, rules: [], last: 0 };
      byKey.set(key, e);
    }
    if (r.decision === 'allow') e.allow += r.count;
    else if (r.decision === 'deny') e.deny += r.count;
    else e.auditWouldDeny += r.count;
    if (!e.rules.includes(r.rule)) e.rules.push(r.rule);
    if (r.lastSeen > e.last) e.last = r.lastSeen;
  }
  const nodeSet = new Set<string>();
  const ruleSet = new Set<string>();
  for (const e of byKey.values()) {
    nodeSet.add(e.from).add(e.to);
    for (const r of e.rules) ruleSet.add(r);
  }
  const nodes = [...nodeSet].sort();
  const rules = [...ruleSet].sort();
  const node = indexOf(nodes);
  const rule = indexOf(rules);
  const edges = [...byKey.values()].map((e) => ({
    from: node.get(e.from)!,
    to: node.get(e.to)!,
    action: e.action,
    allow: e.allow,
    deny: e.deny,
    auditWouldDeny: e.auditWouldDeny,
    rules: e.rules.map((r) => rule.get(r)!),
    lastSeen: new Date(e.last).toISOString(),
  }));
  return { nodes, rules, edges, truncated };
}

export function graphRoutes(ctx: ApiContext, add: AddRoute): void {
  add(
    'GET',
    '/v1/graph',
    'viewer',
    `The service graph from the decision log: nodes (SPIFFE IDs) and rules listed once, edges naming them by index, with allow/deny/audit-would-deny counts (window up to 7d, default 1h; trustDomain, namespace filters; at most ${MAX_GRAPH_EDGES} edges).`,
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
      const t0 = performance.now();
      // Rows are per (edge, decision, rule): three decisions and a few rules per edge are plenty
      // to fill `limit` edges; an edge cut off past them is reported as truncation.
      const rows = await ctx.store.graphEdges({
        since: now - windowMs,
        ...(td !== undefined ? { prefix: `spiffe://${td}/` } : {}),
        ...(ns !== undefined ? { contains: `/ns/${ns}/` } : {}),
        limit: limit * 4 + 1,
      });
      const t1 = performance.now();
      const graph = foldGraph(rows, limit);
      const t2 = performance.now();
      const body = `${JSON.stringify({
        window: { from: new Date(now - windowMs).toISOString(), to: new Date(now).toISOString() },
        nodes: graph.nodes,
        rules: graph.rules,
        edges: graph.edges,
        truncated: graph.truncated || rows.length > limit * 4,
      })}\n`;
      const t3 = performance.now();
      // Where the server's time went, for the browser's own timing (PerformanceResourceTiming.serverTiming).
      const timing = `store;dur=${(t1 - t0).toFixed(1)}, fold;dur=${(t2 - t1).toFixed(1)}, encode;dur=${(t3 - t2).toFixed(1)}`;
      return { status: 200, body, contentType: 'application/json', headers: { 'server-timing': timing } };
    },
    undefined,
    { window: stringParam(32), trustDomain: stringParam(255), namespace: stringParam(253), limit: integerParam(1, MAX_GRAPH_EDGES) },
  );
}
