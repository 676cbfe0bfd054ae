/**
 * `kind: VulnException` (apiVersion writ.dev/v1): an accepted risk for one vulnerability in a
 * scope, with an owner and an expiry. Validated with line:column like the other policy documents
 * (the same YamlReader) and stored in the revisioned policy set under `VulnException/NAME`.
 *
 *   kind: VulnException
 *   metadata: { name: openssl-web }
 *   spec:
 *     vulnerability: CVE-2024-1234            # a CVE or GHSA ID, any spelling normalizeVulnId reads
 *     scope: { repository: [registry.example.com/team/web] }   # exactly one of digest | repository | package
 *     reason: "TICKET-123: not reachable, fix in the next base"
 *     owner: team-web
 *     expires: 2027-03-01                     # RFC 3339, or a date (00:00:00Z of that day); required
 */
import { YamlReader } from '@writ/policy/internal';
import { repositoryOf } from './lineage.ts';
import { canonicalPurl, normalizeVulnId } from './purl.ts';

export const VULN_EXCEPTION_KIND = 'VulnException';
export const VULN_EXCEPTION_SCOPES = ['digest', 'repository', 'package'] as const;
export type VulnExceptionScopeKind = (typeof VULN_EXCEPTION_SCOPES)[number];

/** The longest an exception may run unless the server is configured otherwise. */
export const DEFAULT_MAX_EXCEPTION_MS = 90 * 86_400_000;

export interface VulnException {
  readonly name: string;
  /** Normalized (`CVE-2024-1234`, `GHSA-xxxx-xxxx-xxxx`); a finding matches by its ID or an alias. */
  readonly vulnerability: string;
  /**
   * What it covers: manifest digests (`sha256:...`), repositories (`docker.io/library/alpine`,
   * normalized like image names; a trailing `/*` covers every repository under a prefix), or
   * packages (a name, or a purl matched the way OpenVEX matches: no version means any version,
   * qualifiers given must be present).
   */
  readonly scope: { readonly kind: VulnExceptionScopeKind; readonly values: readonly string[] };
  readonly reason: string;
  readonly owner?: string;
  /** Epoch ms; at or after it the exception has no effect anywhere. */
  readonly expires: number;
  readonly line: number;
  /** The document as written (what the policy store keeps). */
  readonly source: string;
}

export interface ParseVulnExceptionOptions {
  readonly file?: string;
  readonly now?: number;
  /** Refuse an `expires` further than this from `now` (ms). Default DEFAULT_MAX_EXCEPTION_MS; Infinity: no limit. */
  readonly maxLifetimeMs?: number;
  /** Keep exceptions already expired (reading a stored set), and skip the lifetime check. */
  readonly stored?: boolean;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const RFC3339 = /^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)$/;
const DATE = /^\d{4}-\d\d-\d\d$/;
const REPOSITORY = /^[a-z0-9][a-z0-9._:/-]*(\/\*)?$/i;

/** `expires` as epoch ms: RFC 3339, or a date meaning 00:00:00Z of that day; NaN when neither. */
export function expiryTime(s: string): number {
  if (DATE.test(s)) {
    const t = Date.parse(`${s}T00:00:00Z`);
    return new Date(t).toISOString().slice(0, 10) === s ? t : NaN;
  }
  return RFC3339.test(s) ? Date.parse(s) : NaN;
}

function days(ms: number): string {
  return Number.isFinite(ms) ? `${Math.round((ms / 86_400_000) * 100) / 100} days` : 'no limit';
}

/** Whether a policy-store key holds a VulnException. */
export function isVulnExceptionKey(key: string): boolean {
  return key.startsWith(`${VULN_EXCEPTION_KIND}/`);
}

/** The store key of a VulnException. */
export function vulnExceptionKey(name: string): string {
  return `${VULN_EXCEPTION_KIND}/${name}`;
}

/**
 * Parses and validates the VulnException documents of a YAML text; documents of other kinds are
 * skipped (their own parsers read them). Throws a PolicyError listing every problem with its
 * line:column. An `expires` already past, or further away than `maxLifetimeMs`, is refused unless
 * `stored`.
 * @example parseVulnExceptions(readFileSync('exceptions.yaml', 'utf8'), { file: 'exceptions.yaml' })
 */
export function parseVulnExceptions(text: string, opts: ParseVulnExceptionOptions = {}): VulnException[] {
  const y = new YamlReader(text, opts.file ?? 'policy', ['apiVersion', 'kind', 'metadata', 'spec', 'cases']);
  const now = opts.now ?? Date.now();
  const max = opts.maxLifetimeMs ?? DEFAULT_MAX_EXCEPTION_MS;
  const seen = new Map<string, number>();
  const out: VulnException[] = [];
  for (const doc of y.documents) {
    if (doc.kind !== VULN_EXCEPTION_KIND) continue;
    if (doc.fields.has('cases')) y.issue(doc.node, 'unknown field "cases" in a VulnException');
    const api = doc.fields.get('apiVersion');
    if (!api) y.issue(doc.node, 'apiVersion must be writ.dev/v1');
    else {
      const av = y.str(api, 'apiVersion');
      if (av !== undefined && av !== 'writ.dev/v1') y.issue(api, 'apiVersion must be writ.dev/v1');
    }
    const meta = y.fields(doc.fields.get('metadata'), 'metadata', ['name', 'labels', 'description'], ['name']);
    const name = y.name(meta, VULN_EXCEPTION_KIND, seen, doc.line);
    const spec = y.fields(
      doc.fields.get('spec'),
      'spec',
      ['vulnerability', 'scope', 'reason', 'owner', 'expires'],
      ['vulnerability', 'scope', 'reason', 'expires'],
    );
    if (!spec) continue;

    let vulnerability: string | undefined;
    const vn = spec.get('vulnerability');
    const vs = vn ? y.str(vn, 'spec.vulnerability') : undefined;
    if (vs !== undefined) {
      try {
        vulnerability = normalizeVulnId(vs);
        if (!/^(CVE|GHSA)-/.test(vulnerability)) {
          y.issue(vn, `spec.vulnerability must be a CVE (CVE-2024-1234) or GHSA (GHSA-xxxx-xxxx-xxxx) ID, not ${JSON.stringify(vs.slice(0, 60))}`);
          vulnerability = undefined;
        }
      } catch (err) {
        y.issue(vn, `spec.vulnerability: ${(err as Error).message}`);
      }
    }

    let scope: VulnException['scope'] | undefined;
    const sn = spec.get('scope');
    const sm = sn ? y.fields(sn, 'spec.scope', VULN_EXCEPTION_SCOPES) : undefined;
    if (sm && sm.size !== 1) y.issue(sn, `spec.scope takes exactly one of ${VULN_EXCEPTION_SCOPES.join(', ')} (found ${sm.size})`);
    else if (sm) {
      const [kind, node] = [...sm][0]! as [VulnExceptionScopeKind, Parameters<typeof y.strings>[0]];
      const where = `spec.scope.${kind}`;
      const values: string[] = [];
      for (const s of y.strings(node, where)) {
        if (kind === 'digest') {
          const d = s.slice(s.indexOf('@') + 1);
          if (DIGEST.test(d)) values.push(d);
          else y.issue(node, `${where}: ${JSON.stringify(s.slice(0, 80))} is not an image digest (sha256: and 64 lowercase hex, or NAME@sha256:...)`);
        } else if (kind === 'repository') {
          if (!REPOSITORY.test(s) || s.includes('@'))
            y.issue(node, `${where}: ${JSON.stringify(s.slice(0, 80))} is not a repository name (registry.example.com/team/app, or a prefix ending in /*)`);
          else values.push(s.endsWith('/*') ? `${repositoryOf(`${s.slice(0, -2)}/x`).slice(0, -1)}*` : repositoryOf(s));
        } else if (s.startsWith('pkg:')) {
          try {
            values.push(canonicalPurl(s));
          } catch (err) {
            y.issue(node, `${where}: ${(err as Error).message}`);
          }
        } else values.push(s);
      }
      if (values.length) scope = { kind, values: [...new Set(values)] };
    }

    const reason = spec.has('reason') ? y.str(spec.get('reason'), 'spec.reason') : undefined;
    const owner = spec.has('owner') ? y.str(spec.get('owner'), 'spec.owner') : undefined;
    let expires: number | undefined;
    const en = spec.get('expires');
    const es = en ? y.str(en, 'spec.expires') : undefined;
    if (es !== undefined) {
      const t = expiryTime(es);
      if (!Number.isFinite(t)) y.issue(en, 'spec.expires must be an RFC 3339 time like 2027-03-01T00:00:00Z or a date like 2027-03-01');
      else if (opts.stored) expires = t;
      else if (t <= now) y.issue(en, `spec.expires is in the past (${new Date(t).toISOString()}): the exception would never apply`);
      else if (t - now > max)
        y.issue(
          en,
          `spec.expires is ${days(t - now)} away; an exception may last at most ${days(max)} (until ${new Date(now + max).toISOString()}): renew it when it ends instead`,
        );
      else expires = t;
    }
    if (name !== undefined && vulnerability !== undefined && scope !== undefined && reason !== undefined && expires !== undefined)
      out.push({ name, vulnerability, scope, reason, ...(owner !== undefined ? { owner } : {}), expires, line: doc.line, source: doc.source });
  }
  y.finish();
  return out;
}

/**
 * The VulnExceptions of a stored policy set (key -> YAML), expired ones kept: whoever matches
 * decides at its own `now` (SuppressionSet.match). Cache the result per revision.
 */
export function vulnExceptionsOf(policies: Readonly<Record<string, string>>): VulnException[] {
  const out: VulnException[] = [];
  for (const [key, text] of Object.entries(policies)) if (isVulnExceptionKey(key)) out.push(...parseVulnExceptions(text, { file: key, stored: true }));
  return out;
}
