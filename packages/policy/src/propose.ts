/**
 * Proposing an AccessPolicy from observed calls (learning mode): the (caller, action) edges seen
 * into one destination become allow rules, generalised two ways and no further:
 *
 * - Callers: two or more observed callers that are siblings (the same ID but for the last
 *   segment, under a parent with at least one path segment of its own) become one pattern
 *   `parent/*`. It matches any caller exactly one segment below that parent — the sibling level
 *   — and nothing deeper or higher: never `**`, never a grandparent, never a bare trust domain,
 *   and a lone caller stays exact. The group's rule allows the union of its callers' actions.
 * - Actions: path segments that look like IDs (numbers, UUIDs, hex ids of 8+ digits with a digit,
 *   opaque tokens of 16+ characters with a digit) or that a pattern cannot hold become `*`.
 *
 * Rare edges can be left out (`minCount`, `minShare`, counted after the action generalisation).
 * The YAML is parsed back with `parsePolicies` and every observed edge replayed through the
 * `PolicyEngine`: the coverage reported is what the engine decides, not what the builder meant.
 */
import { stringify } from 'yaml';
import { PolicyEngine, parseAction, type ActionRequest } from './engine.ts';
import { LIMITS, parsePolicies, type Policy } from './model.ts';
import { parseIdPattern } from './pattern.ts';

/** One observed edge into the destination, with how often it was seen. */
export interface ObservedEdge {
  /** The caller's SPIFFE ID ('' for none: never allowed by a proposal). */
  readonly from: string;
  /** The concrete destination the call went to. */
  readonly to: string;
  /** As the decision log writes it: `GET /v1/orders/42`, `grpc /pkg.Svc/Method`, `tcp 5432`. */
  readonly action: string;
  readonly seen: number;
}

export interface ProposeOptions {
  /** spec.to of the proposal: the destination ID or pattern that was learned. */
  readonly to: string;
  /** metadata.name of the proposal. */
  readonly name: string;
  readonly mode?: 'enforce' | 'audit';
  /** Leave out a (caller, generalised action) seen fewer times than this. */
  readonly minCount?: number;
  /** Leave out a (caller, generalised action) with a smaller share of all requests (0..1). */
  readonly minShare?: number;
  /** How many of the edges the proposal would deny to list (default 100). */
  readonly listDenied?: number;
}

export interface CallerGroup {
  /** The `from` pattern of the rule: an exact ID, or `parent/*`. */
  readonly pattern: string;
  /** The observed callers it stands for. */
  readonly callers: readonly string[];
}

export interface Coverage {
  /** Every request observed (the sum of the edges' counts). */
  readonly requests: number;
  /** The requests the proposal allows, replayed through the engine. */
  readonly allowed: number;
  /** allowed / requests (1 when nothing was observed). */
  readonly share: number;
  readonly edges: number;
  readonly allowedEdges: number;
  readonly deniedEdges: number;
  /** The edges the proposal would deny, most seen first (at most `listDenied`). */
  readonly denied: readonly ObservedEdge[];
}

export interface Proposal {
  readonly yaml: string;
  /** The proposal as `parsePolicies` reads it back (undefined when nothing could be proposed). */
  readonly policy: Policy | undefined;
  readonly groups: readonly CallerGroup[];
  readonly coverage: Coverage;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const HEX_ID = /^(?=[^\d]*\d)[0-9a-f]{8,}$/i;
const OPAQUE_ID = /^(?=[^\d]*\d)[A-Za-z0-9_-]{16,}$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;
/** The methods a policy names (an observed call with another method cannot be written down). */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'CONNECT', 'TRACE']);

/** Whether a path segment is taken for an ID (and generalised to `*`). */
export function isIdLikeSegment(s: string): boolean {
  return /^\d+$/.test(s) || UUID.test(s) || HEX_ID.test(s) || OPAQUE_ID.test(s);
}

/** A concrete path as a pattern: ID-like segments, and those a pattern cannot hold, as `*`. */
export function generalisePath(path: string): string {
  if (path === '/') return '/';
  return `/${path
    .slice(1)
    .split('/')
    .map((s, i, all) => (s === '' && i === all.length - 1 ? '' : !SEGMENT.test(s) || s === '.' || s === '..' || isIdLikeSegment(s) ? '*' : s))
    .join('/')}`;
}

type GenAction = { kind: 'http'; method: string; path: string } | { kind: 'grpc'; method: string } | { kind: 'tcp'; port: number };

function generaliseAction(a: ActionRequest): GenAction {
  if (a.kind === 'tcp') return { kind: 'tcp', port: a.port };
  if (a.kind === 'grpc') return { kind: 'grpc', method: generalisePath(a.method) };
  return { kind: 'http', method: a.method, path: generalisePath(a.path) };
}

const actionKey = (g: GenAction): string => (g.kind === 'tcp' ? `tcp ${g.port}` : g.kind === 'grpc' ? `grpc ${g.method}` : `${g.method} ${g.path}`);

/** The parent of a SPIFFE ID when its siblings may be grouped under it (a path segment of its own), else undefined. */
export function siblingParent(id: string): string | undefined {
  const segs = id.slice(9).split('/');
  // trust domain, at least one parent segment, the caller's own last segment
  if (segs.length < 3) return undefined;
  return `spiffe://${segs.slice(0, -1).join('/')}`;
}

function validCaller(id: string): boolean {
  if (!id) return false;
  try {
    const p = parseIdPattern(id);
    return !p.segments.slice(1).some((s) => s === '*' || s === '**');
  } catch {
    return false;
  }
}

/** The YAML `actions` of a set of generalised actions: HTTP paths grouped by their methods, gRPC methods, ports. */
function actionsYaml(actions: readonly GenAction[]): Array<Record<string, unknown>> {
  const methodsByPath = new Map<string, Set<string>>();
  const grpc = new Set<string>();
  const ports = new Set<number>();
  for (const a of actions) {
    if (a.kind === 'http') {
      let m = methodsByPath.get(a.path);
      if (!m) methodsByPath.set(a.path, (m = new Set()));
      m.add(a.method);
    } else if (a.kind === 'grpc') grpc.add(a.method);
    else ports.add(a.port);
  }
  const pathsByMethods = new Map<string, string[]>();
  for (const [path, methods] of [...methodsByPath].sort((x, y) => x[0].localeCompare(y[0]))) {
    const k = [...methods].sort().join(',');
    let l = pathsByMethods.get(k);
    if (!l) pathsByMethods.set(k, (l = []));
    l.push(path);
  }
  const out: Array<Record<string, unknown>> = [];
  const chunks = <T>(l: readonly T[]): T[][] =>
    Array.from({ length: Math.ceil(l.length / LIMITS.listItems) }, (_, i) => l.slice(i * LIMITS.listItems, (i + 1) * LIMITS.listItems));
  for (const [k, paths] of [...pathsByMethods].sort((x, y) => x[0].localeCompare(y[0])))
    for (const c of chunks(paths)) out.push({ methods: k.split(','), paths: c });
  for (const c of chunks([...grpc].sort())) out.push({ grpc: c });
  for (const c of chunks([...ports].sort((x, y) => x - y))) out.push({ ports: c });
  return out.slice(0, LIMITS.listItems);
}

/** A rule name from its caller pattern: the ID without `spiffe://`, or `rule-N` when that is too long. */
const ruleName = (pattern: string, i: number): string => {
  const n = pattern.slice(9);
  return n.length <= 200 ? n : `rule-${i + 1}`;
};

/**
 * An AccessPolicy for `o.to` allowing what `edges` show, and its coverage of them.
 *
 *   proposePolicy([{ from: 'spiffe://td/ns/shop/sa/a', to: API, action: 'GET /v1/orders/42', seen: 10 },
 *                  { from: 'spiffe://td/ns/shop/sa/b', to: API, action: 'GET /v1/orders/7', seen: 3 }],
 *                 { to: API, name: 'orders-api' })
 *   // one rule: from spiffe://td/ns/shop/sa/*, GET /v1/orders/*; allows 13 of 13 requests
 */
export function proposePolicy(edges: readonly ObservedEdge[], o: ProposeOptions): Proposal {
  const minCount = o.minCount ?? 0;
  const minShare = o.minShare ?? 0;
  let requests = 0;
  for (const e of edges) requests += e.seen;
  // (caller, generalised action) -> count
  const byCaller = new Map<string, Map<string, { action: GenAction; seen: number }>>();
  for (const e of edges) {
    if (!validCaller(e.from)) continue;
    let a: ActionRequest;
    try {
      a = parseAction(e.action);
    } catch {
      continue; // cut short in the log, or not an action at all: not expressible, so not allowed
    }
    const g = generaliseAction(a);
    if (g.kind === 'http' && (!METHODS.has(g.method) || g.path.length > 1024)) continue;
    const k = actionKey(g);
    let m = byCaller.get(e.from);
    if (!m) byCaller.set(e.from, (m = new Map()));
    const x = m.get(k);
    if (x) x.seen += e.seen;
    else m.set(k, { action: g, seen: e.seen });
  }
  // Rare ones left out.
  const kept = new Map<string, GenAction[]>();
  const weight = new Map<string, number>();
  for (const [caller, m] of byCaller) {
    const acts = [...m.values()].filter((x) => x.seen >= minCount && (requests === 0 || x.seen / requests >= minShare));
    if (acts.length)
      kept.set(
        caller,
        acts.map((x) => x.action),
      ),
        weight.set(
          caller,
          acts.reduce((n, x) => n + x.seen, 0),
        );
  }
  // Siblings grouped under their parent, one level only.
  const byParent = new Map<string, string[]>();
  for (const caller of kept.keys()) {
    const p = siblingParent(caller);
    if (p === undefined) continue;
    let l = byParent.get(p);
    if (!l) byParent.set(p, (l = []));
    l.push(caller);
  }
  const groups: Array<{ pattern: string; callers: string[]; actions: GenAction[]; seen: number }> = [];
  const grouped = new Set<string>();
  for (const [parent, callers] of byParent) {
    if (callers.length < 2) continue;
    callers.sort();
    for (const c of callers) grouped.add(c);
    const actions = new Map<string, GenAction>();
    for (const c of callers) for (const a of kept.get(c)!) actions.set(actionKey(a), a);
    groups.push({ pattern: `${parent}/*`, callers, actions: [...actions.values()], seen: callers.reduce((n, c) => n + weight.get(c)!, 0) });
  }
  for (const [caller, actions] of kept) if (!grouped.has(caller)) groups.push({ pattern: caller, callers: [caller], actions, seen: weight.get(caller)! });
  // The most used first when there are more than a policy holds; then in a stable order.
  groups.sort((a, b) => b.seen - a.seen || a.pattern.localeCompare(b.pattern));
  let rules = groups.slice(0, LIMITS.rulesPerPolicy).sort((a, b) => a.pattern.localeCompare(b.pattern));
  const render = (): string =>
    stringify(
      {
        apiVersion: 'writ.dev/v1',
        kind: 'AccessPolicy',
        metadata: { name: o.name, description: `proposed from ${requests} observed request(s)` },
        spec: {
          to: o.to,
          mode: o.mode ?? 'enforce',
          rules: rules.map((g, i) => ({ name: ruleName(g.pattern, i), effect: 'allow', from: [g.pattern], actions: actionsYaml(g.actions) })),
        },
      },
      { lineWidth: 0 },
    );
  let yaml = rules.length ? render() : '';
  // Over the size a policy file may have: the least used rules go (the coverage shows what that costs).
  while (rules.length > 1 && Buffer.byteLength(yaml) > LIMITS.bytes * 0.9) {
    const keep = new Set(groups.slice(0, Math.floor(rules.length / 2)));
    rules = rules.filter((g) => keep.has(g));
    yaml = render();
  }
  const policy = rules.length ? parsePolicies(yaml, { file: 'proposal' }).policies[0] : undefined;
  // What the engine decides, edge by edge.
  const engine = new PolicyEngine(policy ? [policy] : []);
  let allowed = 0;
  let allowedEdges = 0;
  const denied: ObservedEdge[] = [];
  for (const e of edges) {
    let ok = false;
    if (e.from)
      try {
        ok = engine.decide({ from: e.from, to: e.to, action: parseAction(e.action) }).decision === 'allow';
      } catch {
        ok = false;
      }
    if (ok) (allowed += e.seen), allowedEdges++;
    else denied.push(e);
  }
  denied.sort((a, b) => b.seen - a.seen || a.from.localeCompare(b.from) || a.action.localeCompare(b.action));
  return {
    yaml,
    policy,
    groups: rules.map((g) => ({ pattern: g.pattern, callers: g.callers })),
    coverage: {
      requests,
      allowed,
      share: requests === 0 ? 1 : allowed / requests,
      edges: edges.length,
      allowedEdges,
      deniedEdges: denied.length,
      denied: denied.slice(0, o.listDenied ?? 100),
    },
  };
}
