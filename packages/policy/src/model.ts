/**
 * The policy language: YAML documents of `kind: AccessPolicy`, validated with line numbers.
 *
 *   apiVersion: writ.dev/v1
 *   kind: AccessPolicy
 *   metadata: { name: orders-api }
 *   spec:
 *     to: spiffe://prod.example/ns/orders/sa/api   # identity or pattern
 *     mode: enforce                                # or audit, or learn (allow everything, record it)
 *     protocol: any                                # any | http | grpc | tcp
 *     rules:
 *       - effect: allow                            # allow | deny
 *         from: [spiffe://prod.example/ns/web/**]
 *         actions:                                 # absent: any action
 *           - { methods: [GET], paths: ["/v1/orders/*"] }
 *           - { grpc: ["/orders.v1.Orders/*"] }
 *           - { ports: [5432] }
 *         when: [{ header: x-env, equals: prod }]  # HTTP request conditions, all must hold
 *         # or a Writ token (verified by the enforcement point; see docs/token-receiver.md):
 *         # when: [{ token: { scope: orders:read, type: jwt, subject: "spiffe://prod.example/users/*", maxDepth: 2 } }]
 *         mode: audit                              # optional, overrides spec.mode
 *         expires: 2026-12-31T00:00:00Z
 *
 * And `kind: LearningWindow` (what `writ learn start` stores): calls to `spec.to` are allowed and
 * decided with reason LEARNING until `spec.until`, then the destination's own policies decide again.
 *
 *   apiVersion: writ.dev/v1
 *   kind: LearningWindow
 *   metadata: { name: learn-orders }
 *   spec: { to: "spiffe://prod.example/ns/orders/**", since: 2026-12-02T18:00:00Z, until: 2026-12-03T18:00:00Z }
 */
import { isMap, isScalar, isSeq, type Node } from 'yaml';
import { LIMITS } from './policy-error.ts';
import { YamlReader } from './yaml-reader.ts';
import { parseIdPattern, parsePathPattern, type Pattern } from './pattern.ts';

/** A policy's modes; `learn` only for a whole policy (spec.mode), a rule takes enforce or audit. */
export const MODES = ['enforce', 'audit', 'learn'] as const;
export type Mode = (typeof MODES)[number];
const RULE_MODES: readonly Mode[] = ['enforce', 'audit'];
/** The kind of the document `writ learn start` stores; its policy's name is `LearningWindow/NAME`. */
export const LEARNING_WINDOW_KIND = 'LearningWindow';
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

/** The token types a `token` condition names: `jwt` (a Writ access token) or `txn_token` (a transaction token). */
export const TOKEN_TYPES = ['jwt', 'txn_token'] as const;
export type TokenType = (typeof TOKEN_TYPES)[number];

/**
 * A `token` condition: the request must carry a verified Writ token (the enforcement point checks
 * signature, `aud` = the callee, expiry) that has every scope in `scopes`, and, when given, whose
 * subject and some audience match the patterns, of the given type, with at most `maxDepth` actors.
 */
export interface TokenCondition {
  readonly scopes: readonly string[];
  readonly audience?: Pattern;
  readonly subject?: Pattern;
  readonly type?: TokenType;
  readonly maxDepth?: number;
}

/** The largest `maxDepth` a token condition takes (the broker's limit on actors). */
export const TOKEN_MAX_DEPTH = 5;
const SCOPE_RE = /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/;

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
  /** A `token` entry of `when`, or null. */
  readonly token: TokenCondition | null;
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
  /** A LearningWindow's end (epoch ms): learning until then, after it the window has no effect. */
  readonly until?: number;
  /** A LearningWindow's start (epoch ms), when it says. */
  readonly since?: number;
}

export { LIMITS, PolicyError, type PolicyIssue } from './policy-error.ts';

/**
 * Parses and validates policy YAML (one or many documents). Documents of other kinds are returned
 * in `others` for callers (policy tests) to interpret. `now` decides whether rules have expired.
 */
export function parsePolicies(
  text: string,
  opts: { file?: string; now?: number; allowExpired?: boolean } = {},
): { policies: Policy[]; others: Array<{ kind: string; value: unknown; line: number }> } {
  const file = opts.file ?? 'policy';
  const y = new YamlReader(text, file, ['apiVersion', 'kind', 'metadata', 'spec', 'cases']);
  const issue = y.issue.bind(y);
  const fieldsOf = y.fields.bind(y);
  const str = y.str.bind(y);
  const list = y.list.bind(y);
  const pos = y.pos.bind(y);
  const now = opts.now ?? Date.now();
  const policies: Policy[] = [];
  const others: Array<{ kind: string; value: unknown; line: number }> = [];
  const names = new Map<string, number>();
  const pattern = (n: Node, where: string, parse: (s: string) => Pattern): Pattern | undefined => {
    const s = str(n, where);
    if (s === undefined) return undefined;
    try {
      return parse(s);
    } catch (err) {
      return void issue(n, `${where}: ${(err as Error).message}`);
    }
  };
  let protocolNow: Protocol = 'any';
  /** `{ token: { scope, audience?, subject?, type?, maxDepth? } }` */
  const readToken = (cn: Node, cw: string): TokenCondition | undefined => {
    const outer = fieldsOf(cn, cw, ['token'], ['token']);
    const tw = `${cw}.token`;
    const t = fieldsOf(outer?.get('token'), tw, ['scope', 'audience', 'subject', 'type', 'maxDepth'], ['scope']);
    if (!outer || !t) return undefined;
    if (protocolNow === 'tcp') issue(cn, `${cw}: token conditions need HTTP, but spec.protocol is tcp`);
    const scopes: string[] = [];
    for (const [j, sn] of (t.has('scope') ? (list(t.get('scope'), `${tw}.scope`) ?? []) : []).entries()) {
      const v = isScalar(sn) && typeof sn.value === 'string' ? sn.value : undefined;
      if (v === undefined || !SCOPE_RE.test(v)) issue(sn, `${tw}.scope[${j}] must be a scope: 1 to 128 printable characters, no space, " or \\`);
      else if (!scopes.includes(v)) scopes.push(v);
    }
    const audience = t.get('audience') ? pattern(t.get('audience')!, `${tw}.audience`, parseIdPattern) : undefined;
    const subject = t.get('subject') ? pattern(t.get('subject')!, `${tw}.subject`, parseIdPattern) : undefined;
    const typeNode = t.get('type');
    const type = typeNode ? str(typeNode, `${tw}.type`) : undefined;
    if (type !== undefined && !(TOKEN_TYPES as readonly string[]).includes(type)) issue(typeNode, `${tw}.type must be jwt or txn_token`);
    const depthNode = t.get('maxDepth');
    const depth = depthNode && isScalar(depthNode) ? depthNode.value : undefined;
    if (depthNode && (typeof depth !== 'number' || !Number.isInteger(depth) || depth < 0 || depth > TOKEN_MAX_DEPTH))
      issue(depthNode, `${tw}.maxDepth must be a whole number from 0 to ${TOKEN_MAX_DEPTH}`);
    return {
      scopes,
      ...(audience ? { audience } : {}),
      ...(subject ? { subject } : {}),
      ...(type && (TOKEN_TYPES as readonly string[]).includes(type) ? { type: type as TokenType } : {}),
      ...(typeof depth === 'number' && Number.isInteger(depth) && depth >= 0 && depth <= TOKEN_MAX_DEPTH ? { maxDepth: depth } : {}),
    };
  };

  const windowNames = new Map<string, number>();
  const time = (n: Node | undefined, where: string): number | undefined => {
    const v = n && isScalar(n) ? n.value : undefined;
    const t = v instanceof Date ? v.getTime() : typeof v === 'string' && /^\d{4}-\d\d-\d\dT/.test(v) ? Date.parse(v) : NaN;
    if (!Number.isFinite(t)) return void issue(n, `${where} must be an RFC 3339 time like 2026-12-31T00:00:00Z`);
    return t;
  };
  for (const doc of y.documents) {
    const top = doc.fields;
    const kind = doc.kind;
    if (kind === LEARNING_WINDOW_KIND) {
      if (top.has('cases')) issue(doc.node, `unknown field "cases" in a ${LEARNING_WINDOW_KIND}`);
      const api = top.get('apiVersion');
      if (!isScalar(api) || api.value !== 'writ.dev/v1') issue(api ?? doc.node, 'apiVersion must be writ.dev/v1');
      const meta = fieldsOf(top.get('metadata'), 'metadata', ['name', 'labels', 'description'], ['name']);
      const name = y.name(meta, LEARNING_WINDOW_KIND, windowNames, doc.line);
      const spec = fieldsOf(top.get('spec'), 'spec', ['to', 'since', 'until'], ['to', 'until']);
      if (!spec) continue;
      const to = spec.get('to') ? pattern(spec.get('to')!, 'spec.to', parseIdPattern) : undefined;
      const until = time(spec.get('until'), 'spec.until');
      const since = spec.get('since') ? time(spec.get('since'), 'spec.since') : undefined;
      if (until !== undefined && until <= now && !opts.allowExpired)
        issue(spec.get('until'), `spec.until is in the past (${new Date(until).toISOString()}): the window would never apply`);
      if (until !== undefined && since !== undefined && since >= until) issue(spec.get('since'), 'spec.since must be before spec.until');
      if (name !== undefined && to && until !== undefined)
        policies.push({
          name: `${LEARNING_WINDOW_KIND}/${name}`,
          to,
          mode: 'learn',
          protocol: 'any',
          rules: [],
          line: doc.line,
          until,
          ...(since !== undefined ? { since } : {}),
        });
      continue;
    }
    if (kind !== 'AccessPolicy') {
      if (!kind) issue(doc.node, 'the document needs "kind" (AccessPolicy)');
      else {
        try {
          others.push({ kind, value: doc.toJS(), line: doc.line });
        } catch (err) {
          // yaml refuses aliases here (maxAliasCount 0): a bomb is an invalid document, not a crash.
          issue(doc.node, `cannot read the ${kind.slice(0, 60)} document: ${(err as Error).message.split('\n')[0]!.slice(0, 200)}`);
        }
      }
      continue;
    }
    if (top.has('cases')) issue(doc.node, 'unknown field "cases" in an AccessPolicy');
    const api = top.get('apiVersion');
    if (!isScalar(api) || api.value !== 'writ.dev/v1') issue(api ?? doc.node, 'apiVersion must be writ.dev/v1');
    const meta = fieldsOf(top.get('metadata'), 'metadata', ['name', 'labels', 'description'], ['name']);
    const name = y.name(meta, 'policy', names, doc.line);
    const spec = fieldsOf(top.get('spec'), 'spec', ['to', 'mode', 'protocol', 'rules'], ['to', 'rules']);
    if (!spec) continue;
    const to = spec.get('to') ? pattern(spec.get('to')!, 'spec.to', parseIdPattern) : undefined;
    const modeNode = spec.get('mode');
    const mode = (modeNode ? str(modeNode, 'spec.mode') : 'enforce') as Mode;
    if (modeNode && !MODES.includes(mode)) issue(modeNode, 'spec.mode must be enforce, audit or learn');
    const protoNode = spec.get('protocol');
    const protocol = (protoNode ? str(protoNode, 'spec.protocol') : 'any') as Protocol;
    if (protoNode && !PROTOCOLS.includes(protocol)) issue(protoNode, `spec.protocol must be one of ${PROTOCOLS.join(', ')}`);
    protocolNow = protocol;
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
        let token: TokenCondition | null = null;
        if (r.get('when')) {
          for (const [i, cn] of (list(r.get('when'), `${w}.when`) ?? []).entries()) {
            const cw = `${w}.when[${i}]`;
            if (isMap(cn) && cn.items.some((p) => isScalar(p.key) && p.key.value === 'token')) {
              const t = readToken(cn, cw);
              if (t && token) issue(cn, `${cw}: one token condition per rule (put every scope in one)`);
              else if (t) token = t;
              continue;
            }
            const c = fieldsOf(cn, cw, ['header', 'equals', 'present'], ['header']);
            if (!c) continue;
            const header = str(c.get('header'), `${cw}.header`);
            if (header !== undefined && !/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$/.test(header)) issue(c.get('header'), `${cw}.header is not a header name`);
            const eq = c.get('equals');
            const present = c.get('present');
            if (eq && present) issue(cn, `${cw} takes "equals" or "present", not both`);
            if (present && (!isScalar(present) || typeof present.value !== 'boolean')) issue(present, `${cw}.present must be true or false`);
            if (protocol === 'tcp') issue(cn, `${cw}: header conditions need HTTP, but spec.protocol is ${protocol}`);
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
        if (ruleModeNode && !RULE_MODES.includes(ruleMode)) issue(ruleModeNode, `${w}.mode must be enforce or audit (learn is for a whole policy: spec.mode)`);
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
            token,
            mode: ruleModeNode ? (RULE_MODES.includes(ruleMode) ? ruleMode : 'enforce') : MODES.includes(mode) ? mode : 'enforce',
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
        line: doc.line,
      });
  }
  y.finish();
  return { policies, others };
}
