/**
 * `kind: AlertRule` (apiVersion writ.dev/v1): what raises an alert, how repeats are counted, where
 * it is delivered and what is done about it. Validated with line:column like the other policy
 * documents and stored in the revisioned policy set under `AlertRule/NAME`.
 *
 *   kind: AlertRule
 *   metadata: { name: new-callers-of-db }
 *   spec:
 *     kind: new-edge                 # see ALERT_RULE_KINDS
 *     to: [spiffe://example.org/ns/shop/db]   # edge kinds only: which edges (default any)
 *     from: [spiffe://example.org/**]
 *     window: 1h                     # repeats of the same rule and key within it make one alert (default 1h)
 *     params: { alpha: 0.1, z: 4, minRequests: 20, interval: 1m }   # deny-spike
 *     # params: { within: 7d }       # key-expiry      params: { olderThan: 1h }   # federation-stale
 *     webhook: { url: https://hooks.example/writ, secretFile: /etc/writ/hook.key, caFile: /etc/writ/hook-ca.pem }
 *     respond: { quarantine: { ttl: 15m } }   # new-edge, new-identity, deny-spike, critical-cve-call
 */
import { parseDuration } from '@writ/spiffe';
import { matchSegments, parseIdPattern, type Pattern } from '@writ/policy';
import { YamlReader } from '@writ/policy/internal';
import type { Node } from 'yaml';

export const ALERT_RULE_KIND = 'AlertRule';

export const ALERT_RULE_KINDS = [
  'new-edge',
  'new-identity',
  'deny-spike',
  'critical-cve-call',
  'quarantine',
  'key-expiry',
  'federation-stale',
  'audit-verification-failed',
] as const;
export type AlertRuleKind = (typeof ALERT_RULE_KINDS)[number];

/** Kinds about a call between two identities: `from`/`to` filters apply. */
export const EDGE_KINDS: readonly AlertRuleKind[] = ['new-edge', 'deny-spike', 'critical-cve-call'];
/** Kinds with an offending identity, which `respond.quarantine` can quarantine. */
export const RESPONDING_KINDS: readonly AlertRuleKind[] = ['new-edge', 'new-identity', 'deny-spike', 'critical-cve-call'];

export interface DenySpikeParams {
  /** EWMA smoothing factor of the deny rate (0 < alpha <= 1). */
  readonly alpha: number;
  /** The z-score at or above which a bucket's deny rate is a spike. */
  readonly z: number;
  /** Requests a bucket needs before its rate counts. */
  readonly minRequests: number;
  /** Bucket length (ms). */
  readonly intervalMs: number;
  /** The standard deviation assumed at least (a deny rate steady at 0 would make any deny infinitely surprising). */
  readonly minStdDev: number;
}

export const DENY_SPIKE_DEFAULTS: DenySpikeParams = { alpha: 0.1, z: 4, minRequests: 20, intervalMs: 60_000, minStdDev: 0.05 };
export const KEY_EXPIRY_DEFAULT_MS = 7 * 86_400_000;
export const FEDERATION_STALE_DEFAULT_MS = 3_600_000;
export const DEFAULT_WINDOW_MS = 3_600_000;

/** A webhook as the rule names it; the server reads the files when it loads the rule. */
export interface AlertRuleWebhook {
  readonly url: string;
  readonly secretFile: string;
  readonly caFile?: string;
}

export interface AlertRule {
  readonly name: string;
  readonly kind: AlertRuleKind;
  /** Edge kinds: caller patterns (empty: any). */
  readonly from: readonly Pattern[];
  /** Edge kinds: destination patterns (empty: any). */
  readonly to: readonly Pattern[];
  readonly windowMs: number;
  readonly denySpike: DenySpikeParams;
  /** key-expiry: alert when a CA or JWT key expires within this. */
  readonly withinMs: number;
  /** federation-stale: alert when a peer's bundle was last fetched longer ago than this. */
  readonly olderThanMs: number;
  readonly webhook?: AlertRuleWebhook;
  /** Quarantine the offending identity for this long. */
  readonly respond?: { readonly quarantineTtlMs: number };
  readonly line: number;
  readonly source: string;
}

export function isAlertRuleKey(key: string): boolean {
  return key.startsWith(`${ALERT_RULE_KIND}/`);
}

export function alertRuleKey(name: string): string {
  return `${ALERT_RULE_KIND}/${name}`;
}

/** Whether an ID matches a rule's patterns (an empty list matches any). */
export function matchesPatterns(patterns: readonly Pattern[], id: string): boolean {
  if (patterns.length === 0) return true;
  const segs = id.slice(9).split('/');
  return patterns.some((p) => matchSegments(p.segments, segs));
}

const PARAMS: Record<AlertRuleKind, readonly string[]> = {
  'new-edge': [],
  'new-identity': [],
  'deny-spike': ['alpha', 'z', 'minRequests', 'interval', 'minStdDev'],
  'critical-cve-call': [],
  quarantine: [],
  'key-expiry': ['within'],
  'federation-stale': ['olderThan'],
  'audit-verification-failed': [],
};

/**
 * Parses and validates the AlertRule documents of a YAML text; other kinds are skipped. Throws a
 * PolicyError listing every problem with its line:column.
 * @example parseAlertRules(readFileSync('alerts.yaml', 'utf8'), { file: 'alerts.yaml' })
 */
export function parseAlertRules(text: string, opts: { readonly file?: string } = {}): AlertRule[] {
  const y = new YamlReader(text, opts.file ?? 'policy', ['apiVersion', 'kind', 'metadata', 'spec', 'cases']);
  const seen = new Map<string, number>();
  const out: AlertRule[] = [];
  const num = (n: Node | undefined, where: string, ok: (v: number) => boolean, what: string): number | undefined => {
    const v = (n as { value?: unknown } | undefined)?.value;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) return void y.issue(n, `${where} must be ${what}`);
    return v;
  };
  const duration = (n: Node | undefined, where: string, maxMs: number, minMs = 1000): number | undefined => {
    const v = (n as { value?: unknown } | undefined)?.value;
    try {
      if (typeof v !== 'string' && typeof v !== 'number') throw new Error('a duration like 15m or 1h');
      return parseDuration(v, where, maxMs, minMs);
    } catch (err) {
      const m = (err as Error).message;
      return void y.issue(n, m.startsWith(where) ? m : `${where}: ${m}`);
    }
  };
  for (const doc of y.documents) {
    if (doc.kind !== ALERT_RULE_KIND) continue;
    if (doc.fields.has('cases')) y.issue(doc.node, 'unknown field "cases" in an AlertRule');
    const api = doc.fields.get('apiVersion');
    const av = api ? y.str(api, 'apiVersion') : undefined;
    if (!api || (av !== undefined && av !== 'writ.dev/v1')) y.issue(api ?? doc.node, 'apiVersion must be writ.dev/v1');
    const meta = y.fields(doc.fields.get('metadata'), 'metadata', ['name', 'labels', 'description'], ['name']);
    const name = y.name(meta, ALERT_RULE_KIND, seen, doc.line);
    const spec = y.fields(doc.fields.get('spec'), 'spec', ['kind', 'from', 'to', 'window', 'params', 'webhook', 'respond'], ['kind']);
    if (!spec) continue;
    const before = y.issues.length;
    const kn = spec.get('kind');
    const k = kn ? y.str(kn, 'spec.kind') : undefined;
    if (k !== undefined && !(ALERT_RULE_KINDS as readonly string[]).includes(k)) y.issue(kn, `spec.kind must be one of ${ALERT_RULE_KINDS.join(', ')}`);
    const kind = (ALERT_RULE_KINDS as readonly string[]).includes(k ?? '') ? (k as AlertRuleKind) : undefined;
    const patterns = (field: 'from' | 'to'): Pattern[] => {
      const list: Pattern[] = [];
      const n = spec.get(field);
      if (!n) return list;
      if (kind && !EDGE_KINDS.includes(kind)) {
        y.issue(n, `spec.${field} applies to the kinds about calls (${EDGE_KINDS.join(', ')}), not ${kind}`);
        return list;
      }
      y.strings(n, `spec.${field}`, (s) => {
        try {
          list.push(parseIdPattern(s));
          return undefined;
        } catch (err) {
          return (err as Error).message;
        }
      });
      return list;
    };
    const from = patterns('from');
    const to = patterns('to');
    const windowMs = spec.has('window') ? duration(spec.get('window'), 'spec.window', 30 * 86_400_000) : DEFAULT_WINDOW_MS;

    let denySpike = DENY_SPIKE_DEFAULTS;
    let withinMs = KEY_EXPIRY_DEFAULT_MS;
    let olderThanMs = FEDERATION_STALE_DEFAULT_MS;
    if (spec.has('params') && kind) {
      const allowed = PARAMS[kind];
      const pn = spec.get('params');
      if (allowed.length === 0) y.issue(pn, `spec.params: ${kind} takes no parameters`);
      else {
        const p = y.fields(pn, 'spec.params', allowed);
        if (p) {
          const d = { ...DENY_SPIKE_DEFAULTS } as { -readonly [K in keyof DenySpikeParams]: DenySpikeParams[K] };
          if (p.has('alpha')) d.alpha = num(p.get('alpha'), 'spec.params.alpha', (v) => v > 0 && v <= 1, 'a number above 0 and at most 1') ?? d.alpha;
          if (p.has('z')) d.z = num(p.get('z'), 'spec.params.z', (v) => v > 0 && v <= 100, 'a number above 0 and at most 100') ?? d.z;
          if (p.has('minRequests'))
            d.minRequests =
              num(
                p.get('minRequests'),
                'spec.params.minRequests',
                (v) => Number.isInteger(v) && v >= 1 && v <= 1_000_000,
                'a whole number from 1 to 1000000',
              ) ?? d.minRequests;
          if (p.has('minStdDev'))
            d.minStdDev = num(p.get('minStdDev'), 'spec.params.minStdDev', (v) => v > 0 && v <= 1, 'a number above 0 and at most 1') ?? d.minStdDev;
          if (p.has('interval')) d.intervalMs = duration(p.get('interval'), 'spec.params.interval', 86_400_000) ?? d.intervalMs;
          denySpike = d;
          if (p.has('within')) withinMs = duration(p.get('within'), 'spec.params.within', 366 * 86_400_000, 60_000) ?? withinMs;
          if (p.has('olderThan')) olderThanMs = duration(p.get('olderThan'), 'spec.params.olderThan', 366 * 86_400_000, 1000) ?? olderThanMs;
        }
      }
    }

    let webhook: AlertRuleWebhook | undefined;
    if (spec.has('webhook')) {
      const w = y.fields(spec.get('webhook'), 'spec.webhook', ['url', 'secretFile', 'caFile'], ['url', 'secretFile']);
      if (w) {
        const url = w.has('url') ? y.str(w.get('url'), 'spec.webhook.url') : undefined;
        if (url !== undefined && (!/^https?:\/\//.test(url) || !URL.canParse(url)))
          y.issue(w.get('url'), 'spec.webhook.url must be an http:// or https:// URL');
        const secretFile = w.has('secretFile') ? y.str(w.get('secretFile'), 'spec.webhook.secretFile') : undefined;
        const caFile = w.has('caFile') ? y.str(w.get('caFile'), 'spec.webhook.caFile') : undefined;
        for (const [f, v] of [
          ['secretFile', secretFile],
          ['caFile', caFile],
        ] as const)
          if (v !== undefined && !v.startsWith('/')) y.issue(w.get(f), `spec.webhook.${f} must be an absolute path (the server reads it from its own disk)`);
        if (url && secretFile) webhook = { url, secretFile, ...(caFile ? { caFile } : {}) };
      }
    }

    let respond: AlertRule['respond'];
    if (spec.has('respond')) {
      const rn = spec.get('respond');
      if (kind && !RESPONDING_KINDS.includes(kind))
        y.issue(rn, `spec.respond: ${kind} names no identity to act on (respond applies to ${RESPONDING_KINDS.join(', ')})`);
      else {
        const r = y.fields(rn, 'spec.respond', ['quarantine'], ['quarantine']);
        const q = r?.get('quarantine') ? y.fields(r.get('quarantine'), 'spec.respond.quarantine', ['ttl'], ['ttl']) : undefined;
        const ttl = q?.has('ttl') ? duration(q.get('ttl'), 'spec.respond.quarantine.ttl', 30 * 86_400_000, 60_000) : undefined;
        if (ttl !== undefined) respond = { quarantineTtlMs: ttl };
      }
    }
    if (name !== undefined && kind && windowMs !== undefined && y.issues.length === before)
      out.push({
        name,
        kind,
        from,
        to,
        windowMs,
        denySpike,
        withinMs,
        olderThanMs,
        ...(webhook ? { webhook } : {}),
        ...(respond ? { respond } : {}),
        line: doc.line,
        source: doc.source,
      });
  }
  y.finish();
  return out;
}

/** The AlertRules of a stored policy set (key -> YAML), by name. */
export function alertRulesOf(policies: Readonly<Record<string, string>>): AlertRule[] {
  const out: AlertRule[] = [];
  for (const [key, text] of Object.entries(policies)) if (isAlertRuleKey(key)) out.push(...parseAlertRules(text, { file: key }));
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
