/// <reference lib="dom" />
/**
 * The service graph: graphology holds it, sigma draws it with WebGL. The layout is computed in
 * one pass (identities grouped by trust domain and namespace, each group a sunflower spiral on a
 * ring of groups): a force layout of 5,000 nodes would cost seconds before the first frame.
 */
import { DirectedGraph } from 'graphology';
import Sigma from 'sigma';
import { EdgeLineProgram } from 'sigma/rendering';
import { fastGestures } from './gestures.ts';

export interface GraphEdge {
  readonly from: string;
  readonly to: string;
  readonly action: string;
  readonly allow: number;
  readonly deny: number;
  readonly auditWouldDeny: number;
  readonly rules: readonly string[];
  readonly lastSeen: string;
}

/**
 * `GET /v1/graph?shape=columns`: an array per field, entry i of each is edge i; `from`/`to` index
 * `nodes`, `action` indexes `actions`, edge i's rules are `rules[rulesEnd[i-1] ?? 0 .. rulesEnd[i]]`
 * (indexes into the answer's `rules`), `lastSeen` in epoch ms.
 */
export interface GraphAnswer {
  readonly nodes: readonly string[];
  readonly rules: readonly string[];
  readonly actions: readonly string[];
  readonly edges: {
    readonly from: readonly number[];
    readonly to: readonly number[];
    readonly action: readonly number[];
    readonly allow: readonly number[];
    readonly deny: readonly number[];
    readonly auditWouldDeny: readonly number[];
    readonly rules: readonly number[];
    readonly rulesEnd: readonly number[];
    readonly lastSeen: readonly number[];
  };
  readonly truncated: boolean;
}

export const COLORS = { allow: '#2e9e5b', deny: '#d23b3b', auditWouldDeny: '#e8a317', node: '#3b6fd2', unauthenticated: '#888888' } as const;

/** The colour of an edge: red when anything was denied, amber when audit mode would have, green otherwise. */
export function edgeColor(e: GraphEdge): string {
  return e.deny > 0 ? COLORS.deny : e.auditWouldDeny > 0 ? COLORS.auditWouldDeny : COLORS.allow;
}

/** `spiffe://td/ns/shop/sa/web` → `td/shop`: the group an identity is laid out in. */
export function groupOf(id: string): string {
  const m = /^spiffe:\/\/([^/]+)(?:\/ns\/([^/]+))?/.exec(id);
  return m ? `${m[1]}/${m[2] ?? ''}` : '';
}

/** A short label: the last two path segments. */
export function labelOf(id: string): string {
  if (id === '') return '(unauthenticated)';
  const parts = id.replace(/^spiffe:\/\//, '').split('/');
  return parts.length > 2 ? parts.slice(-2).join('/') : parts.join('/');
}

/** Positions for every node, in O(n). */
export function layout(ids: readonly string[]): Map<string, { x: number; y: number }> {
  const groups = new Map<string, string[]>();
  for (const id of ids) {
    const g = groupOf(id);
    let list = groups.get(g);
    if (!list) groups.set(g, (list = []));
    list.push(id);
  }
  const out = new Map<string, { x: number; y: number }>();
  const golden = Math.PI * (3 - Math.sqrt(5));
  const names = [...groups.keys()].sort();
  const ring = names.length > 1 ? Math.sqrt(ids.length) * 2 + 10 : 0;
  names.forEach((name, gi) => {
    const a = (2 * Math.PI * gi) / names.length;
    const cx = ring * Math.cos(a);
    const cy = ring * Math.sin(a);
    groups.get(name)!.forEach((id, i) => {
      const r = Math.sqrt(i + 0.5);
      out.set(id, { x: cx + r * Math.cos(i * golden), y: cy + r * Math.sin(i * golden) });
    });
  });
  return out;
}

/** The drawn edge of the answer's edges `list` (one per action of a caller and destination): counts summed, actions and rules listed. */
function summary(answer: GraphAnswer, list: readonly number[]): GraphEdge {
  const c = answer.edges;
  const rules = new Set<number>();
  let [allow, deny, auditWouldDeny, last] = [0, 0, 0, 0];
  for (const i of list) {
    allow += c.allow[i]!;
    deny += c.deny[i]!;
    auditWouldDeny += c.auditWouldDeny[i]!;
    last = Math.max(last, c.lastSeen[i]!);
    for (let r = i > 0 ? c.rulesEnd[i - 1]! : 0; r < c.rulesEnd[i]!; r++) rules.add(c.rules[r]!);
  }
  const first = list[0]!;
  return {
    from: answer.nodes[c.from[first]!]!,
    to: answer.nodes[c.to[first]!]!,
    action: list.map((i) => answer.actions[c.action[i]!]!).join('\n'),
    allow,
    deny,
    auditWouldDeny,
    rules: [...rules].map((r) => answer.rules[r]!),
    lastSeen: new Date(last).toISOString(),
  };
}

/** The `n` items with the largest `total`, largest first, without sorting them all. */
export function busiest<T>(items: Iterable<T>, n: number, total: (item: T) => number): T[] {
  const top: T[] = [];
  const totals: number[] = [];
  for (const e of items) {
    const t = total(e);
    if (top.length === n && t <= totals[n - 1]!) continue;
    let i = top.length === n ? n - 1 : top.length;
    while (i > 0 && totals[i - 1]! < t) {
      top[i] = top[i - 1]!;
      totals[i] = totals[i - 1]!;
      i--;
    }
    top[i] = e;
    totals[i] = t;
  }
  return top;
}

/** A cheap fingerprint of an answer: the page redraws only when it changes. */
export function fingerprint(answer: GraphAnswer): string {
  const c = answer.edges;
  let h = 0;
  for (let i = 0; i < c.from.length; i++)
    h = (Math.imul(h, 31) + c.from[i]! * 65_599 + c.to[i]! * 257 + c.allow[i]! * 7 + c.deny[i]! * 3 + c.auditWouldDeny[i]!) | 0;
  return `${answer.nodes.length}/${c.from.length}/${h >>> 0}`;
}

export interface DrawnGraph {
  readonly sigma: Sigma;
  /** The `n` drawn edges with the most decisions, busiest first. */
  busiest(n: number): GraphEdge[];
  /** True while the user drags or zooms it. */
  moving(): boolean;
  kill(): void;
}

/** Past this many edges they are drawn as plain 1-pixel lines (gl.LINES), without arrowheads. */
export const LINE_EDGES_ABOVE = 5000;

/**
 * Draws the answer into `container`; `onEdge` hears a click on an edge. Marks `writ:graph-drawn`
 * once the first frame is rendered (and the phases before it: writ:graph-layout, -built,
 * -rendered, -captured).
 */
export function drawGraph(container: HTMLElement, answer: GraphAnswer, onEdge: (e: GraphEdge) => void): DrawnGraph {
  const g = new DirectedGraph();
  const { nodes } = answer;
  const pos = layout(nodes);
  performance.mark('writ:graph-layout');
  const c = answer.edges;
  const degree = new Uint32Array(nodes.length);
  for (let i = 0; i < c.from.length; i++) {
    degree[c.from[i]!]! += 1;
    degree[c.to[i]!]! += 1;
  }
  nodes.forEach((id, i) => {
    const p = pos.get(id)!;
    g.addNode(id, {
      x: p.x,
      y: p.y,
      size: Math.min(12, 2 + Math.sqrt(degree[i]!)),
      label: labelOf(id),
      color: id === '' ? COLORS.unauthenticated : COLORS.node,
    });
  });
  // One drawn edge per (caller, destination), the answer's edges of its actions by index: the
  // actions are listed when it is clicked.
  const byPair = new Map<number, number[]>();
  for (let i = 0; i < c.from.length; i++) {
    if (c.from[i] === c.to[i]) continue;
    const key = c.from[i]! * nodes.length + c.to[i]!;
    const list = byPair.get(key);
    if (list) list.push(i);
    else byPair.set(key, [i]);
  }
  const lines = byPair.size > LINE_EDGES_ABOVE;
  const total = (list: readonly number[]): number => {
    let n = 0;
    for (const i of list) n += c.allow[i]! + c.deny[i]! + c.auditWouldDeny[i]!;
    return n;
  };
  const colorOf = (list: readonly number[]): string => {
    let deny = false;
    let would = false;
    for (const i of list) (deny ||= c.deny[i]! > 0), (would ||= c.auditWouldDeny[i]! > 0);
    return deny ? COLORS.deny : would ? COLORS.auditWouldDeny : COLORS.allow;
  };
  for (const [key, list] of byPair) {
    const first = list[0]!;
    // Keys by index (`from * nodes + to`): short strings to hash, 50,000 times. Lines have one width.
    g.addDirectedEdgeWithKey(
      key,
      nodes[c.from[first]!]!,
      nodes[c.to[first]!]!,
      lines ? { color: colorOf(list) } : { color: colorOf(list), size: 1 + Math.min(4, Math.log10(1 + total(list))) },
    );
  }
  performance.mark('writ:graph-built');
  // The summary of a drawn edge is made when it is asked for (a click, the busiest list), not for all 50,000 up front.
  const edgeOf = (key: string): GraphEdge | undefined => {
    const list = byPair.get(Number(key));
    return list ? summary(answer, list) : undefined;
  };
  const large = g.size > 20_000;
  // Past 2,000 edges they are not drawn while sigma animates the view (a double-click zoom, a touch
  // drag): a software WebGL renderer (no GPU) cannot redraw 50,000 lines per frame. Mouse drags
  // and the wheel do not redraw at all while they last (gestures.ts).
  const busy = g.size > 2000;
  // Sigma draws into a layer of its own, which a gesture moves; the frame clips it.
  const layer = document.createElement('div');
  layer.className = 'graph-layer';
  container.append(layer);
  const sigma = new Sigma(g, layer, {
    enableEdgeEvents: !large,
    hideEdgesOnMove: busy,
    hideLabelsOnMove: true,
    renderEdgeLabels: false,
    // A large graph's edges as 1-pixel lines: 2 vertices an edge instead of an arrow's 9 (a clamped
    // rectangle and a head) and no antialiasing per pixel; rasterising the arrows was most of what
    // a software renderer spent on the first frame (docs/benchmarks.md). Arrows come back below
    // the threshold (a namespace or trust-domain filter).
    ...(lines ? { defaultEdgeType: 'fast', edgeProgramClasses: { fast: EdgeLineProgram } } : { defaultEdgeType: 'arrow' }),
    labelRenderedSizeThreshold: g.order > 200 ? 8 : 0,
  });
  // Sigma renders the first frame inside its constructor: its picture is taken now (it lasts only
  // until shown), and the mark is set at the next animation frame, once it has been shown.
  performance.mark('writ:graph-rendered');
  const gestures = fastGestures(container, layer, sigma);
  performance.mark('writ:graph-captured');
  requestAnimationFrame(() => {
    performance.mark('writ:graph-drawn');
    container.dataset['drawn'] = String(g.size);
  });
  sigma.on('clickEdge', ({ edge }) => {
    const e = edgeOf(edge);
    if (e) onEdge(e);
  });
  // With edge events off (a large graph), a click on a node lists the node's busiest edge.
  sigma.on('clickNode', ({ node }) => {
    const [best] = busiest(
      g.edges(node).map((k) => byPair.get(Number(k))!),
      1,
      total,
    );
    if (best) onEdge(summary(answer, best));
  });
  return {
    sigma,
    busiest: (n) => busiest(byPair.values(), n, total).map((list) => summary(answer, list)),
    moving: () => gestures.active(),
    kill: () => {
      gestures.kill();
      sigma.kill();
      layer.remove();
    },
  };
}
