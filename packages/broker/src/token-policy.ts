/**
 * `kind: TokenPolicy` (apiVersion writ.dev/v1): who may obtain which scopes for which audiences,
 * on behalf of which subjects, how deep a delegation chain may go, for how long, and when.
 * Validated with line:column like the other policy documents (the same YamlReader) and stored in
 * the revisioned policy set under `TokenPolicy/NAME`.
 *
 *   kind: TokenPolicy
 *   metadata: { name: web-to-orders }
 *   spec:
 *     clients: [spiffe://example.org/ns/web/**]      # who asks (the authenticated client)
 *     subjects: [spiffe://example.org/**]            # on whose behalf
 *     audiences: [spiffe://example.org/ns/orders/api]
 *     scopes: [orders:read, orders:write]            # `orders:*` covers every scope starting with "orders:"
 *     requestedTokenTypes: [jwt, txn_token]          # default [jwt]
 *     maxDepth: 2                                    # actors in the act chain; default 3, at most 5
 *     maxTtl: 2m                                     # default and at most 5m
 *     checkChain: true                               # every earlier actor must be a client too
 *     when: { days: [mon, tue, wed, thu, fri], hours: "08:00-18:00", timezone: Europe/Berlin }
 */
import { parseDuration } from '@writ/spiffe';
import { matchSegments, parseIdPattern, type Pattern } from '@writ/policy';
import { YamlReader } from '@writ/policy/internal';
import { TOKEN_TYPE_JWT, TOKEN_TYPE_TXN, type IssuedTokenType } from './request.ts';
import { DEFAULT_MAX_DEPTH, MAX_DEPTH_LIMIT, MAX_TTL_MS } from './limits.ts';

export const TOKEN_POLICY_KIND = 'TokenPolicy';
export { DEFAULT_MAX_DEPTH, MAX_DEPTH_LIMIT, MAX_TTL_MS };
export const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
export type Day = (typeof DAYS)[number];

export interface TimeWindow {
  readonly days?: readonly Day[];
  /** Minutes after local midnight: [start, end), end may be below start (a window across midnight). */
  readonly hours?: readonly (readonly [number, number])[];
  readonly timezone: string;
  readonly notBefore?: number;
  readonly notAfter?: number;
}

export interface TokenPolicy {
  readonly name: string;
  readonly clients: readonly Pattern[];
  readonly subjects: readonly Pattern[];
  readonly audiences: readonly Pattern[];
  /** Exact scope tokens, or prefixes written `prefix*`. */
  readonly scopes: readonly string[];
  readonly requestedTokenTypes: readonly IssuedTokenType[];
  readonly maxDepth: number;
  readonly maxTtlMs: number;
  readonly checkChain: boolean;
  readonly when?: TimeWindow;
  readonly line: number;
  readonly source: string;
}

const SCOPE = /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/;
const HOURS = /^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$/;
const TYPE_NAMES: Record<string, IssuedTokenType> = {
  jwt: TOKEN_TYPE_JWT,
  txn_token: TOKEN_TYPE_TXN,
  [TOKEN_TYPE_JWT]: TOKEN_TYPE_JWT,
  [TOKEN_TYPE_TXN]: TOKEN_TYPE_TXN,
};

export function isTokenPolicyKey(key: string): boolean {
  return key.startsWith(`${TOKEN_POLICY_KIND}/`);
}

export function tokenPolicyKey(name: string): string {
  return `${TOKEN_POLICY_KIND}/${name}`;
}

function validTimezone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses and validates the TokenPolicy documents of a YAML text; other kinds are skipped. Throws a
 * PolicyError listing every problem with its line:column.
 * @example parseTokenPolicies(readFileSync('token-policy.yaml', 'utf8'), { file: 'token-policy.yaml' })
 */
export function parseTokenPolicies(text: string, opts: { readonly file?: string } = {}): TokenPolicy[] {
  const y = new YamlReader(text, opts.file ?? 'policy', ['apiVersion', 'kind', 'metadata', 'spec', 'cases']);
  const seen = new Map<string, number>();
  const out: TokenPolicy[] = [];
  for (const doc of y.documents) {
    if (doc.kind !== TOKEN_POLICY_KIND) continue;
    if (doc.fields.has('cases')) y.issue(doc.node, 'unknown field "cases" in a TokenPolicy');
    const api = doc.fields.get('apiVersion');
    const av = api ? y.str(api, 'apiVersion') : undefined;
    if (!api || (av !== undefined && av !== 'writ.dev/v1')) y.issue(api ?? doc.node, 'apiVersion must be writ.dev/v1');
    const meta = y.fields(doc.fields.get('metadata'), 'metadata', ['name', 'labels', 'description'], ['name']);
    const name = y.name(meta, TOKEN_POLICY_KIND, seen, doc.line);
    const spec = y.fields(
      doc.fields.get('spec'),
      'spec',
      ['clients', 'subjects', 'audiences', 'scopes', 'requestedTokenTypes', 'maxDepth', 'maxTtl', 'checkChain', 'when'],
      ['clients', 'subjects', 'audiences', 'scopes'],
    );
    if (!spec) continue;
    let ok = true;
    const patterns = (field: string): Pattern[] => {
      const out: Pattern[] = [];
      const n = spec.get(field);
      if (!n) return out;
      const before = y.issues.length;
      for (const s of y.strings(n, `spec.${field}`, (s) => {
        try {
          out.push(parseIdPattern(s));
          return undefined;
        } catch (err) {
          return (err as Error).message;
        }
      }))
        void s;
      if (y.issues.length > before || out.length === 0) ok = false;
      return out;
    };
    const clients = patterns('clients');
    const subjects = patterns('subjects');
    const audiences = patterns('audiences');
    const before = y.issues.length;
    const scopes = spec.has('scopes')
      ? y.strings(spec.get('scopes'), 'spec.scopes', (s) =>
          SCOPE.test(s) && !s.slice(0, -1).includes('*') ? undefined : 'a scope is printable ASCII without space, " or \\ (a "*" only at the end)',
        )
      : [];
    if (y.issues.length > before || scopes.length === 0) ok = false;

    let requestedTokenTypes: IssuedTokenType[] = [TOKEN_TYPE_JWT];
    if (spec.has('requestedTokenTypes')) {
      const b = y.issues.length;
      const list = y.strings(spec.get('requestedTokenTypes'), 'spec.requestedTokenTypes', (s) =>
        Object.hasOwn(TYPE_NAMES, s) ? undefined : 'must be jwt or txn_token (or their token type URNs)',
      );
      if (y.issues.length > b) ok = false;
      requestedTokenTypes = [...new Set(list.map((s) => TYPE_NAMES[s]!))];
    }

    let maxDepth = DEFAULT_MAX_DEPTH;
    const dn = spec.get('maxDepth');
    if (dn) {
      const v = (dn as { value?: unknown }).value;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_DEPTH_LIMIT) {
        y.issue(dn, `spec.maxDepth must be a whole number from 0 to ${MAX_DEPTH_LIMIT}`);
        ok = false;
      } else maxDepth = v;
    }

    let maxTtlMs = MAX_TTL_MS;
    const tn = spec.get('maxTtl');
    if (tn) {
      const v = (tn as { value?: unknown }).value;
      try {
        if (typeof v !== 'string' && typeof v !== 'number') throw new Error('a duration like 2m or 90s');
        maxTtlMs = parseDuration(v, 'spec.maxTtl', MAX_TTL_MS, 1000);
      } catch (err) {
        y.issue(tn, (err as Error).message.startsWith('spec.maxTtl') ? (err as Error).message : `spec.maxTtl: ${(err as Error).message}`);
        ok = false;
      }
    }

    let checkChain = false;
    if (spec.has('checkChain')) {
      const b = y.bool(spec.get('checkChain'), 'spec.checkChain');
      if (b === undefined) ok = false;
      else checkChain = b;
    }

    let when: TimeWindow | undefined;
    if (spec.has('when')) {
      const wn = spec.get('when');
      const w = y.fields(wn, 'spec.when', ['days', 'hours', 'timezone', 'notBefore', 'notAfter']);
      if (!w || w.size === 0) {
        if (w) y.issue(wn, 'spec.when needs at least one of days, hours, notBefore, notAfter');
        ok = false;
      } else {
        const b = y.issues.length;
        const days = w.has('days')
          ? y.strings(w.get('days'), 'spec.when.days', (s) =>
              (DAYS as readonly string[]).includes(s.toLowerCase()) ? undefined : `must be one of ${DAYS.join(', ')}`,
            )
          : undefined;
        const hours = w.has('hours')
          ? y
              .strings(w.get('hours'), 'spec.when.hours', (s) => {
                const m = HOURS.exec(s);
                if (!m) return 'must be HH:MM-HH:MM (24-hour clock, e.g. 08:00-18:00)';
                return Number(m[3]) === 24 && m[4] !== '00' ? 'the end may be at most 24:00' : m[1]! + m[2]! === m[3]! + m[4]! ? 'an empty window' : undefined;
              })
              .map((s) => {
                const m = HOURS.exec(s)!;
                return [Number(m[1]) * 60 + Number(m[2]), Number(m[3]) * 60 + Number(m[4])] as const;
              })
          : undefined;
        const tz = w.has('timezone') ? y.str(w.get('timezone'), 'spec.when.timezone') : 'UTC';
        if (tz !== undefined && !validTimezone(tz))
          y.issue(w.get('timezone'), `spec.when.timezone ${JSON.stringify(tz.slice(0, 60))} is not an IANA time zone`);
        const notBefore = w.has('notBefore') ? y.time(w.get('notBefore'), 'spec.when.notBefore') : undefined;
        const notAfter = w.has('notAfter') ? y.time(w.get('notAfter'), 'spec.when.notAfter') : undefined;
        if (notBefore !== undefined && notAfter !== undefined && notAfter <= notBefore)
          y.issue(w.get('notAfter'), 'spec.when.notAfter must be after notBefore');
        if (y.issues.length > b) ok = false;
        else
          when = {
            timezone: tz ?? 'UTC',
            ...(days ? { days: days.map((d) => d.toLowerCase() as Day) } : {}),
            ...(hours ? { hours } : {}),
            ...(notBefore !== undefined ? { notBefore } : {}),
            ...(notAfter !== undefined ? { notAfter } : {}),
          };
      }
    }
    if (name !== undefined && ok)
      out.push({
        name,
        clients,
        subjects,
        audiences,
        scopes,
        requestedTokenTypes,
        maxDepth,
        maxTtlMs,
        checkChain,
        ...(when ? { when } : {}),
        line: doc.line,
        source: doc.source,
      });
  }
  y.finish();
  return out;
}

/** The TokenPolicies of a stored policy set (key -> YAML). Cache the result per revision. */
export function tokenPoliciesOf(policies: Readonly<Record<string, string>>): TokenPolicy[] {
  const out: TokenPolicy[] = [];
  for (const [key, text] of Object.entries(policies)) if (isTokenPolicyKey(key)) out.push(...parseTokenPolicies(text, { file: key }));
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export function matchesAny(patterns: readonly Pattern[], id: string): boolean {
  const segs = id.slice(9).split('/');
  return patterns.some((p) => matchSegments(p.segments, segs));
}

/** Whether a policy's scope list covers one scope (`orders:*` covers `orders:read`). */
export function scopeAllowed(allowed: readonly string[], scope: string): boolean {
  return allowed.some((a) => (a.endsWith('*') ? scope.startsWith(a.slice(0, -1)) : a === scope));
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Whether `now` (epoch ms) is inside the window; a reason when it is not. */
export function outsideWindow(w: TimeWindow, now: number): string | undefined {
  if (w.notBefore !== undefined && now < w.notBefore) return `not before ${new Date(w.notBefore).toISOString()}`;
  if (w.notAfter !== undefined && now >= w.notAfter) return `not after ${new Date(w.notAfter).toISOString()}`;
  if (!w.days && !w.hours) return undefined;
  let f = formatters.get(w.timezone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: w.timezone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formatters.set(w.timezone, f);
  }
  const parts = Object.fromEntries(f.formatToParts(new Date(now)).map((p) => [p.type, p.value]));
  const day = String(parts['weekday']).toLowerCase().slice(0, 3) as Day;
  const minute = Number(parts['hour']) * 60 + Number(parts['minute']);
  const hhmm = `${String(parts['hour']).padStart(2, '0')}:${String(parts['minute']).padStart(2, '0')}`;
  if (w.hours) {
    // A window across midnight belongs to the day it starts on.
    for (const [start, end] of w.hours) {
      if (start < end ? minute >= start && minute < end : minute >= start) {
        if (!w.days || w.days.includes(day)) return undefined;
      } else if (start > end && minute < end) {
        const prev = DAYS[(DAYS.indexOf(day) + 6) % 7]!;
        if (!w.days || w.days.includes(prev)) return undefined;
      }
    }
    return `outside the time window (${day} ${hhmm} ${w.timezone})`;
  }
  return w.days!.includes(day) ? undefined : `outside the time window (${day} ${hhmm} ${w.timezone})`;
}
