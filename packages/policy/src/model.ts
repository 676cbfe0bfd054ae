/**
 * The policy language: YAML documents of `kind: AccessPolicy`, validated with line numbers.
 *
 *   apiVersion: writ.dev/v1
 *   kind: AccessPolicy
 *   metadata: { name: orders-api }
 *   spec:
 *     to: spiffe://prod.example/ns/orders/sa/api   # identity or pattern
 *     mode: enforce                                # or audit
 *     protocol: any                                # any | http | grpc | tcp
 *     rules:
 *       - effect: allow                            # allow | deny
 *         from: [spiffe://prod.example/ns/web/**]
 *         actions:                                 # absent: any action
 *           - { methods: [GET], paths: ["/v1/orders/*"] }
 *           - { grpc: ["/orders.v1.Orders/*"] }
 *           - { ports: [5432] }
 *         when: [{ header: x-env, equals: prod }]  # HTTP request conditions, all must hold
 *         mode: audit                              # optional, overrides spec.mode
 *         expires: 2026-12-31T00:00:00Z
 */
import { LineCounter, isMap, isScalar, isSeq, parseAllDocuments, type Node, type Pair, type YAMLMap } from 'yaml';
import { WritError } from '@writ/spiffe';
import { parseIdPattern, parsePathPattern, type Pattern } from './pattern.ts';

export const MODES = ['enforce', 'audit'] as const;
export type Mode = (typeof MODES)[number];
export const PROTOCOLS = ['any', 'http', 'grpc', 'tcp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'CONNECT', 'TRACE', '*'];

export type Action =
  | { readonly kind: 'http'; readonly methods: readonly string[] | null; readonly paths: readonly Pattern[] | null }
  | { readonly kind: 'grpc'; readonly methods: readonly Pattern[] }
  | { readonly kind: 'tcp'; readonly ports: readonly number[] };

export interface Condition {
  /** Lowercase header name. */
  readonly header: string;
  readonly equals?: string;
  readonly present?: boolean;
}

export interface Rule {
  readonly policy: string;
  /** Position in the policy's rules, from 0. */
  readonly index: number;
  readonly name: string;
  readonly effect: 'allow' | 'deny';
  readonly from: readonly Pattern[];
  /** null: any action. */
  readonly actions: readonly Action[] | null;
  readonly when: readonly Condition[];
  readonly mode: Mode;
  /** Epoch ms, or null. */
  readonly expires: number | null;
  readonly line: number;
}

export interface Policy {
  readonly name: string;
  readonly to: Pattern;
  readonly mode: Mode;
  readonly protocol: Protocol;
  readonly rules: readonly Rule[];
  readonly line: number;
}

export const LIMITS = { bytes: 4 * 1024 * 1024, documents: 10_000, rulesPerPolicy: 20_000, listItems: 1000, depth: 64 } as const;

export interface PolicyIssue {
  readonly line: number;
  readonly column: number;
  readonly message: string;
}

/** Thrown with every problem found, each with its line; `toString()` lists them. */
export class PolicyError extends WritError {
  readonly issues: readonly PolicyIssue[];
  constructor(file: string, issues: readonly PolicyIssue[]) {
    super(
      'ERR_POLICY_INVALID',
      `${file}: ${issues.length} problem${issues.length === 1 ? '' : 's'}:\n${issues
        .slice(0, 50)
        .map((i) => `  ${file}:${i.line}:${i.column}: ${i.message}`)
        .join('\n')}`,
    );
    this.issues = issues;
  }
}

/** Rejects nesting deeper than LIMITS.depth before the YAML parser sees it (flow collections recurse). */
function nestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"') i++;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#') while (i < text.length && text[i] !== '\n') i++;
    else if (c === '[' || c === '{') max = Math.max(max, ++depth);
    else if (c === ']' || c === '}') depth = Math.max(0, depth - 1);
  }
  return max;
}

/**
 * Parses and validates policy YAML (one or many documents). Documents of other kinds are returned
 * in `others` for callers (policy tests) to interpret. `now` decides whether rules have expired.
 */
export function parsePolicies(
  text: string,
  opts: { file?: string; now?: number; allowExpired?: boolean } = {},
): { policies: Policy[]; others: Array<{ kind: string; value: unknown; line: number }> } {
  const file = opts.file ?? 'policy';
  if (typeof text !== 'string') throw new TypeError('policy text must be a string');
  if (Buffer.byteLength(text) > LIMITS.bytes) throw new PolicyError(file, [{ line: 1, column: 1, message: `larger than ${LIMITS.bytes} bytes` }]);
  if (nestingDepth(text) > LIMITS.depth) throw new PolicyError(file, [{ line: 1, column: 1, message: `nested deeper than ${LIMITS.depth} levels` }]);
  const lc = new LineCounter();
  let docs;
  try {
    docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true, strict: true });
  } catch (err) {
    throw new PolicyError(file, [{ line: 1, column: 1, message: `not YAML: ${(err as Error).message.split('\n')[0]}` }]);
  }
  const docList = Array.isArray(docs) ? docs : [docs];
  if (docList.length > LIMITS.documents) throw new PolicyError(file, [{ line: 1, column: 1, message: `more than ${LIMITS.documents} documents` }]);
  const issues: PolicyIssue[] = [];
  const pos = (n: Node | Pair | null | undefined): { line: number; column: number } => {
    const off = (n && 'range' in n && n.range ? n.range[0] : n && 'key' in n && (n.key as Node)?.range ? (n.key as Node).range![0] : 0) ?? 0;
    const p = lc.linePos(off);
    return { line: p.line, column: p.col };
  };
  const issue = (n: Node | Pair | null | undefined, message: string): void => void issues.push({ ...pos(n), message });
  const now = opts.now ?? Date.now();
  const policies: Policy[] = [];
  const others: Array<{ kind: string; value: unknown; line: number }> = [];
  const names = new Map<string, number>();

  const fieldsOf = (node: unknown, where: string, allowed: readonly string[], required: readonly string[] = []): Map<string, Node> | undefined => {
    if (!isMap(node)) return void issue(node as Node, `${where} must be a mapping`);
    const out = new Map<string, Node>();
    for (const pair of (node as YAMLMap).items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : '';
      if (!allowed.includes(key)) issue(pair as Pair, `unknown field "${key.slice(0, 60)}" in ${where}; allowed: ${allowed.join(', ')}`);
      else out.set(key, pair.value as Node);
    }
    for (const r of required) if (!out.has(r)) issue(node as Node, `${where} needs "${r}"`);
    return out;
  };
  const str = (n: Node | undefined, where: string): string | undefined => {
    if (!isScalar(n) || typeof n.value !== 'string' || n.value === '') return void issue(n, `${where} must be a non-empty string`);
    return n.value;
  };
  const list = (n: Node | undefined, where: string): Node[] | undefined => {
    if (isScalar(n) && typeof n.value === 'string') return [n];
    if (!isSeq(n) || n.items.length === 0) return void issue(n, `${where} must be a non-empty list`);
    if (n.items.length > LIMITS.listItems) return void issue(n, `${where} has more than ${LIMITS.listItems} items`);
    return n.items as Node[];
  };
  const pattern = (n: Node, where: string, parse: (s: string) => Pattern): Pattern | undefined => {
    const s = str(n, where);
    if (s === undefined) return undefined;
    try {
      return parse(s);
    } catch (err) {
      return void issue(n, `${where}: ${(err as Error).message}`);
    }
  };

  for (const doc of docList) {
    // linePos is only filled in with prettyErrors (which also rewrites the message): the offset is always there.
    for (const e of doc.errors) {
      const at = lc.linePos(e.pos[0]);
      issues.push({ line: at.line, column: at.col, message: e.message.split('\n')[0]! });
    }
    if (doc.errors.length || doc.contents === null) continue;
    const top = fieldsOf(doc.contents, 'the document', ['apiVersion', 'kind', 'metadata', 'spec', 'cases']);
    if (!top) continue;
    const kind = isScalar(top.get('kind')) ? String((top.get('kind') as { value: unknown }).value) : '';
    if (kind !== 'AccessPolicy') {
      if (!kind) issue(doc.contents, 'the document needs "kind" (AccessPolicy)');
      else others.push({ kind, value: doc.toJS({ maxAliasCount: 0 }), line: pos(doc.contents).line });
      continue;
    }
    if (top.has('cases')) issue(doc.contents, 'unknown field "cases" in an AccessPolicy');
    const api = top.get('apiVersion');
    if (!isScalar(api) || api.value !== 'writ.dev/v1') issue(api ?? doc.contents, 'apiVersion must be writ.dev/v1');
    const meta = fieldsOf(top.get('metadata'), 'metadata', ['name', 'labels', 'description'], ['name']);
    const name = meta?.get('name') ? str(meta.get('name'), 'metadata.name') : undefined;
    if (name !== undefined && !/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(name))
      issue(meta!.get('name'), 'metadata.name must be lowercase a-z 0-9 . - (like a Kubernetes name)');
    if (name !== undefined && names.has(name)) issue(meta!.get('name'), `policy "${name}" is defined twice (also line ${names.get(name)})`);
    if (name !== undefined) names.set(name, pos(doc.contents).line);
    const spec = fieldsOf(top.get('spec'), 'spec', ['to', 'mode', 'protocol', 'rules'], ['to', 'rules']);
    if (!spec) continue;
    const to = spec.get('to') ? pattern(spec.get('to')!, 'spec.to', parseIdPattern) : undefined;
    const modeNode = spec.get('mode');
    const mode = (modeNode ? str(modeNode, 'spec.mode') : 'enforce') as Mode;
    if (modeNode && !MODES.includes(mode)) issue(modeNode, 'spec.mode must be enforce or audit');
    const protoNode = spec.get('protocol');
    const protocol = (protoNode ? str(protoNode, 'spec.protocol') : 'any') as Protocol;
    if (protoNode && !PROTOCOLS.includes(protocol)) issue(protoNode, `spec.protocol must be one of ${PROTOCOLS.join(', ')}`);
    const rulesNode = spec.get('rules');
    const rules: Rule[] = [];
    if (rulesNode && !isSeq(rulesNode)) issue(rulesNode, 'spec.rules must be a list');
    else if (rulesNode && (rulesNode.items.length === 0 || rulesNode.items.length > LIMITS.rulesPerPolicy))
      issue(rulesNode, `spec.rules must hold 1 to ${LIMITS.rulesPerPolicy} rules`);
    else if (rulesNode) {
      (rulesNode.items as Node[]).forEach((rn, index) => {
        const w = `rules[${index}]`;
        const r = fieldsOf(rn, w, ['name', 'effect', 'from', 'actions', 'when', 'mode', 'expires'], ['effect', 'from']);
        if (!r) return;
        const effect = r.get('effect') ? str(r.get('effect'), `${w}.effect`) : undefined;
        if (effect !== undefined && effect !== 'allow' && effect !== 'deny') issue(r.get('effect'), `${w}.effect must be allow or deny`);
        const from = (r.get('from') ? (list(r.get('from'), `${w}.from`) ?? []) : [])
          .map((n, i) => pattern(n, `${w}.from[${i}]`, parseIdPattern))
          .filter((p): p is Pattern => !!p);
        let actions: Action[] | null = null;
        if (r.get('actions')) {
          actions = [];
          for (const [i, an] of (list(r.get('actions'), `${w}.actions`) ?? []).entries()) {
            const aw = `${w}.actions[${i}]`;
            const a = fieldsOf(an, aw, ['methods', 'paths', 'grpc', 'ports']);
            if (!a) continue;
            const kinds = [a.has('methods') || a.has('paths') ? 'http' : '', a.has('grpc') ? 'grpc' : '', a.has('ports') ? 'tcp' : ''].filter(Boolean);
            if (kinds.length !== 1) {
              issue(an, `${aw} must be one of {methods, paths} (HTTP), {grpc} or {ports} (TCP)`);
              continue;
            }
            if (protocol !== 'any' && kinds[0] !== protocol) issue(an, `${aw} is a ${kinds[0]!.toUpperCase()} action but spec.protocol is ${protocol}`);
            if (kinds[0] === 'http') {
              const methods = a.has('methods')
                ? (list(a.get('methods'), `${aw}.methods`) ?? []).map((n) => str(n, `${aw}.methods`)?.toUpperCase()).filter((m): m is string => !!m)
                : null;
              for (const m of methods ?? [])
                if (!METHODS.includes(m)) issue(a.get('methods'), `${aw}.methods: unknown HTTP method ${JSON.stringify(m.slice(0, 20))}`);
              const paths = a.has('paths')
                ? (list(a.get('paths'), `${aw}.paths`) ?? []).map((n, j) => pattern(n, `${aw}.paths[${j}]`, parsePathPattern)).filter((p): p is Pattern => !!p)
                : null;
              actions.push({ kind: 'http', methods: methods?.includes('*') ? null : methods, paths });
            } else if (kinds[0] === 'grpc') {
              const methods = (list(a.get('grpc'), `${aw}.grpc`) ?? [])
                .map((n, j) => pattern(n, `${aw}.grpc[${j}]`, parsePathPattern))
                .filter((p): p is Pattern => !!p);
              actions.push({ kind: 'grpc', methods });
            } else {
              const ports: number[] = [];
              for (const pn of list(a.get('ports'), `${aw}.ports`) ?? []) {
                const v = isScalar(pn) ? Number(pn.value) : NaN;
                if (!Number.isInteger(v) || v < 1 || v > 65535)
                  issue(pn, `${aw}.ports: ${JSON.stringify(isScalar(pn) ? pn.value : '?')} is not a port (1-65535)`);
                else ports.push(v);
              }
              actions.push({ kind: 'tcp', ports });
            }
          }
        }
        const when: Condition[] = [];
        if (r.get('when')) {
          for (const [i, cn] of (list(r.get('when'), `${w}.when`) ?? []).entries()) {
            const c = fieldsOf(cn, `${w}.when[${i}]`, ['header', 'equals', 'present'], ['header']);
            if (!c) continue;
            const header = str(c.get('header'), `${w}.when[${i}].header`);
            if (header !== undefined && !/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$/.test(header))
              issue(c.get('header'), `${w}.when[${i}].header is not a header name`);
            const eq = c.get('equals');
            const present = c.get('present');
            if (eq && present) issue(cn, `${w}.when[${i}] takes "equals" or "present", not both`);
            if (present && (!isScalar(present) || typeof present.value !== 'boolean')) issue(present, `${w}.when[${i}].present must be true or false`);
            if (protocol === 'tcp') issue(cn, `${w}.when[${i}]: header conditions need HTTP, but spec.protocol is ${protocol}`);
            if (header)
              when.push({
                header: header.toLowerCase(),
                ...(eq ? { equals: String((eq as { value: unknown }).value) } : {}),
                ...(present ? { present: (present as { value: boolean }).value } : {}),
              });
          }
        }
        const ruleModeNode = r.get('mode');
        const ruleMode = (ruleModeNode ? str(ruleModeNode, `${w}.mode`) : mode) as Mode;
        if (ruleModeNode && !MODES.includes(ruleMode)) issue(ruleModeNode, `${w}.mode must be enforce or audit`);
        let expires: number | null = null;
        const exp = r.get('expires');
        if (exp) {
          const v = isScalar(exp) ? exp.value : undefined;
          const t = v instanceof Date ? v.getTime() : typeof v === 'string' && /^\d{4}-\d\d-\d\dT/.test(v) ? Date.parse(v) : NaN;
          if (!Number.isFinite(t)) issue(exp, `${w}.expires must be an RFC 3339 time like 2026-12-31T00:00:00Z`);
          else if (t <= now && !opts.allowExpired) issue(exp, `${w}.expires is in the past (${new Date(t).toISOString()}): the rule would never apply`);
          else expires = t;
        }
        const ruleName = r.get('name') ? str(r.get('name'), `${w}.name`) : undefined;
        if (effect && from.length) {
          rules.push({
            policy: name ?? '',
            index,
            name: ruleName ?? `${name ?? 'policy'}#${index}`,
            effect: effect as 'allow' | 'deny',
            from,
            actions,
            when,
            mode: MODES.includes(ruleMode) ? ruleMode : mode,
            expires,
            line: pos(rn).line,
          });
        }
      });
    }
    if (name !== undefined && to)
      policies.push({
        name,
        to,
        mode: MODES.includes(mode) ? mode : 'enforce',
        protocol: PROTOCOLS.includes(protocol) ? protocol : 'any',
        rules,
        line: pos(doc.contents).line,
      });
  }
  if (issues.length)
    throw new PolicyError(
      file,
      issues.sort((a, b) => a.line - b.line || a.column - b.column),
    );
  return { policies, others };
}
