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

/** Strings numbered in the order first seen, then renumbered in sorted order. */
class Names {
  readonly #index = new Map<string, number>();
  readonly list: string[] = [];
  id(s: string): number {
    let i = this.#index.get(s);
    if (i === undefined) this.#index.set(s, (i = this.list.push(s) - 1));
    return i;
  }
  /** The names sorted, and each first-seen number's place among them. */
  sorted(): { names: string[]; place: Int32Array } {
    const order = this.list.map((_, i) => i).sort((a, b) => (this.list[a]! < this.list[b]! ? -1 : 1));
    const place = new Int32Array(order.length);
    for (const [at, i] of order.entries()) place[i] = at;
    return { names: order.map((i) => this.list[i]!), place };
  }
}

/** The edges of the rows, their ends and rules numbered in sorted `nodes` and `rules`. */
interface Folded {
  readonly nodes: string[];
  readonly rules: string[];
  readonly edges: {
    from: number;
    to: number;
    action: string;
    allow: number;
    deny: number;
    auditWouldDeny: number;
    rules: number[];
    last: number;
  }[];
  readonly truncated: boolean;
}

/**
 * Folds the store's rows (one per edge and rule) into edges, keeping the store's order.
 * Edges are found by nested maps (caller, destination, action): no key string is built per row.
 */
function fold(rows: readonly GraphEdgeRow[], limit: number): Folded {
  type Edge = Folded['edges'][number];
  const nodes = new Names();
  const rules = new Names();
  const byFrom = new Map<string, Map<string, Map<string, Edge>>>();
  const folded: Edge[] = [];
  let truncated = false;
  for (const r of rows) {
    let byTo = byFrom.get(r.from);
    if (!byTo) byFrom.set(r.from, (byTo = new Map()));
    let byAction = byTo.get(r.to);
    if (!byAction) byTo.set(r.to, (byAction = new Map()));
    let e = byAction.get(r.action);
    if (!e) {
      if (folded.length >= limit) {
        truncated = true;
        continue;
      }
      e = { from: nodes.id(r.from), to: nodes.id(r.to), action: r.action, allow: 0, deny: 0, auditWouldDeny: 0, rules: [], last: 0 };
      byAction.set(r.action, e);
      folded.push(e);
    }
    e.allow += r.allow;
    e.deny += r.deny;
    e.auditWouldDeny += r.auditWouldDeny;
    const rule = rules.id(r.rule);
    if (!e.rules.includes(rule)) e.rules.push(rule);
    if (r.lastSeen > e.last) e.last = r.lastSeen;
  }
  const n = nodes.sorted();
  const ru = rules.sorted();
  for (const e of folded) {
    e.from = n.place[e.from]!;
    e.to = n.place[e.to]!;
    for (let i = 0; i < e.rules.length; i++) e.rules[i] = ru.place[e.rules[i]!]!;
  }
  return { nodes: n.names, rules: ru.names, edges: folded, truncated };
}

/** The answer's default shape: an object per edge. */
export function foldGraph(rows: readonly GraphEdgeRow[], limit: number): Graph {
  const f = fold(rows, limit);
  const edges = f.edges.map((e) => ({
    from: e.from,
    to: e.to,
    action: e.action,
    allow: e.allow,
    deny: e.deny,
    auditWouldDeny: e.auditWouldDeny,
    rules: e.rules,
    lastSeen: new Date(e.last).toISOString(),
  }));
  return { nodes: f.nodes, rules: f.rules, edges, truncated: f.truncated };
}

/**
 * The answer with `shape=columns` (what the dashboard asks for): one array per field, the i-th
 * entry of each is edge i; actions listed once like nodes and rules; edge i's rules are
 * `rules[rulesEnd[i-1] ?? 0 .. rulesEnd[i]]`; `lastSeen` in epoch milliseconds. A browser parses
 * nine arrays of numbers instead of 50,000 objects.
 */
export interface GraphColumns {
  nodes: string[];
  rules: string[];
  actions: string[];
  edges: {
    from: number[];
    to: number[];
    action: number[];
    allow: number[];
    deny: number[];
    auditWouldDeny: number[];
    rules: number[];
    rulesEnd: number[];
    lastSeen: number[];
  };
  truncated: boolean;
}

export function foldGraphColumns(rows: readonly GraphEdgeRow[], limit: number): GraphColumns {
  const f = fold(rows, limit);
  const actions = new Names();
  const ids = f.edges.map((e) => actions.id(e.action));
  const a = actions.sorted();
  const c: GraphColumns['edges'] = { from: [], to: [], action: [], allow: [], deny: [], auditWouldDeny: [], rules: [], rulesEnd: [], lastSeen: [] };
  f.edges.forEach((e, i) => {
    c.from.push(e.from);
    c.to.push(e.to);
    c.action.push(a.place[ids[i]!]!);
    c.allow.push(e.allow);
    c.deny.push(e.deny);
    c.auditWouldDeny.push(e.auditWouldDeny);
    c.rules.push(...e.rules);
    c.rulesEnd.push(c.rules.length);
    c.lastSeen.push(e.last);
  });
  return { nodes: f.nodes, rules: f.rules, actions: a.names, edges: c, truncated: f.truncated };
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
      const shape = q.get('shape');
      if (shape !== null && shape !== 'rows' && shape !== 'columns')
        throw new WritError('ERR_FIELD_INVALID', 'shape must be rows (an object per edge, the default) or columns (an array per field)', { field: 'shape' });
      const ns = q.get('namespace') || undefined;
      if (ns !== undefined && !NAMESPACE.test(ns))
        throw new WritError('ERR_FIELD_INVALID', 'namespace must be a Kubernetes namespace name (a-z 0-9 . -, at most 253 characters)', { field: 'namespace' });
      const limit = q.has('limit') ? Number(q.get('limit')) : MAX_GRAPH_EDGES;
      const now = ctx.clock();
      // The store counts decisions per minute: the window starts at the minute.
      const since = now - windowMs - ((now - windowMs) % 60_000);
      const t0 = performance.now();
      // Rows are per (edge, rule): a few rules per edge are plenty to fill `limit` edges; an edge
      // cut off past them is reported as truncation.
      const rows = await ctx.store.graphEdges({
        since,
        ...(td !== undefined ? { prefix: `spiffe://${td}/` } : {}),
        ...(ns !== undefined ? { contains: `/ns/${ns}/` } : {}),
        limit: limit * 4 + 1,
      });
      const t1 = performance.now();
      const window = { from: new Date(since).toISOString(), to: new Date(now).toISOString() };
      const more = rows.length > limit * 4;
      let answer: unknown;
      if (q.get('shape') === 'columns') {
        const g = foldGraphColumns(rows, limit);
        answer = { window, nodes: g.nodes, rules: g.rules, actions: g.actions, edges: g.edges, truncated: g.truncated || more };
      } else {
        const g = foldGraph(rows, limit);
        answer = { window, nodes: g.nodes, rules: g.rules, edges: g.edges, truncated: g.truncated || more };
      }
      const t2 = performance.now();
      const body = `${JSON.stringify(answer)}\n`;
      const t3 = performance.now();
      // Where the server's time went, for the browser's own timing (PerformanceResourceTiming.serverTiming).
      const timing = `store;dur=${(t1 - t0).toFixed(1)}, fold;dur=${(t2 - t1).toFixed(1)}, encode;dur=${(t3 - t2).toFixed(1)}`;
      return { status: 200, body, contentType: 'application/json', headers: { 'server-timing': timing } };
    },
    undefined,
    {
      window: stringParam(32),
      trustDomain: stringParam(255),
      namespace: stringParam(253),
      limit: integerParam(1, MAX_GRAPH_EDGES),
      shape: stringParam(8),
    },
  );
}
