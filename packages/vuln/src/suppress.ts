/**
 * Whether a finding is suppressed, and why: by an unexpired VulnException, or by an OpenVEX
 * statement saying the product is `not_affected` or `fixed`. Every answer (affected, rollout, the
 * gate, events) asks `match(finding, now)`, so an exception stops counting everywhere the moment
 * it expires.
 *
 * Rules (docs/vulnerabilities.md, "Exceptions and VEX"):
 * - A VEX statement applies when its vulnerability (name or an alias) is the finding's ID or one
 *   of its aliases, and one of its products matches: the image (a digest, or `pkg:oci/NAME@DIGEST`;
 *   `pkg:oci/NAME` without a version matches every image of that repository), then narrowed by
 *   its subcomponents to the package when it lists any; or the package itself (a purl product).
 *   Purls match as OpenVEX's libraries match them: same type, namespace and name; a version, when
 *   the statement gives one, must be the package's; every qualifier the statement gives must be on
 *   the package's purl with the same value.
 * - Of the statements that apply, the latest (by timestamp, then document version, then order)
 *   speaks: VEX is a sequence of statements each overriding the earlier ones. `not_affected` and
 *   `fixed` suppress; `affected` and `under_investigation` do not.
 * - A VulnException applies while `now < expires`, when its vulnerability is the finding's ID or
 *   an alias and its scope (digest, repository, package) matches.
 * - Precedence: a suppressing VEX statement is named first (it does not expire, so the finding
 *   stays suppressed when an exception ends); otherwise the applying exception that expires last.
 *   An exception suppresses even where the latest VEX statement says `affected`: it is an accepted
 *   risk, not a claim about the product.
 */
import type { VulnException } from './exceptions.ts';
import { repositoryOf } from './lineage.ts';
import { type PackageUrl, parsePurl } from './purl.ts';
import type { VexProduct, VexStatement, VexStatus } from './types.ts';

export interface Suppression {
  readonly by: 'exception' | 'vex';
  /** The exception's name, or the VEX document's `@id` (the author when it has none). */
  readonly name: string;
  /** Human text: the exception's reason, or the VEX status with its justification and statements. */
  readonly reason: string;
  readonly owner?: string;
  /** ISO 8601, exceptions only. */
  readonly expires?: string;
  /** VEX only. */
  readonly status?: VexStatus;
}

export interface FindingContext {
  readonly vulnId: string;
  readonly aliases: readonly string[];
  /** The image's manifest digest. */
  readonly imageDigest: string;
  /** The image's repository names (any spelling repositoryOf reads: `alpine`, `docker.io/library/alpine`). */
  readonly repositories: readonly string[];
  readonly packageName: string;
  readonly purl?: string;
}

export interface SuppressionSet {
  /** The suppression in force for this finding at `now` (epoch ms), or undefined: the finding is active. */
  match(f: FindingContext, now: number): Suppression | undefined;
  /** Every vulnerability ID (and VEX alias) a suppression of the set is about: a finding filed under none of them is never suppressed. */
  ids(): readonly string[];
  /** The first instant after `now` at which an exception of the set stops applying (undefined: none does): answers may change then without a write. */
  nextExpiry(now: number): number | undefined;
}

/** A VEX statement with the document it came from (what the store keeps), for names and ordering. */
export type VexInput = VexStatement & {
  readonly document?: { readonly id: string; readonly author?: string; readonly version?: number };
};

/**
 * Whether `general` (a VEX statement's purl) covers `specific` (a package's), as OpenVEX's
 * libraries match: same type, namespace, name (and subpath when given); the version and every
 * qualifier `general` gives must be in `specific`. Either one unreadable: false.
 * @example purlCovers('pkg:apk/alpine/openssl', 'pkg:apk/alpine/openssl@3.1.4-r0?arch=x86_64') // true
 */
export function purlCovers(general: string | PackageUrl, specific: string | PackageUrl): boolean {
  const g = typeof general === 'string' ? tryPurl(general) : general;
  const s = typeof specific === 'string' ? tryPurl(specific) : specific;
  if (!g || !s) return false;
  if (g.type !== s.type || (g.namespace ?? '') !== (s.namespace ?? '') || g.name !== s.name) return false;
  if (g.version !== undefined && g.version !== s.version) return false;
  if (g.subpath !== undefined && g.subpath !== s.subpath) return false;
  for (const [k, v] of Object.entries(g.qualifiers)) if (s.qualifiers[k] !== v) return false;
  return true;
}

const PURLS = new Map<string, PackageUrl | null>();
function tryPurl(s: string): PackageUrl | undefined {
  let p = PURLS.get(s);
  if (p === undefined) {
    try {
      p = parsePurl(s);
    } catch {
      p = null;
    }
    // Purls come from stored statements and reports: bounded per call, but a long-lived server sees many.
    if (PURLS.size >= 50_000) PURLS.clear();
    PURLS.set(s, p);
  }
  return p ?? undefined;
}

const SUPPRESSING: ReadonlySet<VexStatus> = new Set(['not_affected', 'fixed']);

/** How a product names an image: by digest, or by repository (`pkg:oci/NAME[?repository_url=R]`). */
// Any of a product's identifiers may match (OpenVEX's libraries match @id, identifiers or hashes).
function imageOf(p: VexProduct): { digest?: string; repository?: string } | undefined {
  const u = p.purl === undefined ? undefined : tryPurl(p.purl);
  const base = u?.qualifiers.repository_url?.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
  const repository = u?.type !== 'oci' || u.version !== undefined ? undefined : base === undefined ? `*/${u.name}` : repositoryOf(`${base}/${u.name}`);
  if (p.digest === undefined && repository === undefined) return undefined;
  return { ...(p.digest !== undefined ? { digest: p.digest } : {}), ...(repository !== undefined ? { repository } : {}) };
}

function repositoryMatches(pattern: string, repos: readonly string[]): boolean {
  // `*/NAME`: a pkg:oci purl without repository_url names the repository by its last segment only.
  if (pattern.startsWith('*/')) return repos.some((r) => r.endsWith(pattern.slice(1)) || r === pattern.slice(2));
  if (pattern.endsWith('*')) return repos.some((r) => r.startsWith(pattern.slice(0, -1)));
  return repos.includes(pattern);
}

function productMatches(p: VexProduct, f: FindingContext, repos: readonly string[]): boolean {
  const img = imageOf(p);
  if (img) {
    const isImage = img.digest === f.imageDigest || (img.repository !== undefined && repositoryMatches(img.repository, repos));
    if (!isImage) return false;
    if (p.subcomponents.length === 0) return true;
    return p.subcomponents.some((s) => (s.purl !== undefined ? f.purl !== undefined && purlCovers(s.purl, f.purl) : s.id === f.packageName));
  }
  // A product that is not an image is the package itself.
  return p.purl !== undefined && f.purl !== undefined && purlCovers(p.purl, f.purl);
}

function vexReason(s: VexInput): string {
  const parts = [s.justification ? `${s.status} (${s.justification})` : s.status];
  if (s.impactStatement) parts.push(s.impactStatement);
  if (s.actionStatement) parts.push(s.actionStatement);
  const by = s.document?.author ? ` — VEX by ${s.document.author}` : ' — VEX';
  return `${parts.join(': ')}${by}`.slice(0, 1000);
}

function exceptionCovers(e: VulnException, f: FindingContext, repos: readonly string[]): boolean {
  const v = e.scope.values;
  switch (e.scope.kind) {
    case 'digest':
      return v.includes(f.imageDigest);
    case 'repository':
      return v.some((r) => repositoryMatches(r, repos));
    case 'package':
      return v.some((p) => (p.startsWith('pkg:') ? f.purl !== undefined && purlCovers(p, f.purl) : p === f.packageName));
  }
}

function index<T>(items: readonly T[], ids: (t: T) => readonly string[]): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const it of items)
    for (const id of new Set(ids(it))) {
      const l = m.get(id);
      if (l) l.push(it);
      else m.set(id, [it]);
    }
  return m;
}

function candidates<T>(m: Map<string, T[]>, f: FindingContext): T[] {
  const out = new Set<T>();
  for (const id of [f.vulnId, ...f.aliases]) for (const t of m.get(id) ?? []) out.add(t);
  return [...out];
}

/**
 * The suppressions of a set of exceptions (expired ones may be included: `match` ignores them at
 * its `now`) and VEX statements. Indexed by vulnerability ID: `match` costs only the entries about
 * the finding's vulnerability.
 * @example suppressionSet(vulnExceptionsOf(rev.policies), await store.listVexStatements()).match(finding, Date.now())
 */
export function suppressionSet(exceptions: readonly VulnException[], vex: readonly VexInput[]): SuppressionSet {
  const order = new Map(vex.map((s, i) => [s, i]));
  const byVuln = index(vex, (s) => [s.vulnerability, ...s.aliases]);
  const exByVuln = index(exceptions, (e) => [e.vulnerability]);
  const time = (s: VexInput) => (s.timestamp === undefined ? 0 : Date.parse(s.timestamp));
  return {
    ids: () => [...new Set([...byVuln.keys(), ...exByVuln.keys()])],
    nextExpiry: (now) =>
      exceptions.reduce<number | undefined>((next, e) => (e.expires > now && (next === undefined || e.expires < next) ? e.expires : next), undefined),
    match(f, now) {
      const repos = f.repositories.map(repositoryOf);
      const statements = candidates(byVuln, f).filter((s) => s.products.some((p) => productMatches(p, f, repos)));
      // The latest statement speaks; earlier ones about the same product are history.
      statements.sort((a, b) => time(b) - time(a) || (b.document?.version ?? 0) - (a.document?.version ?? 0) || order.get(b)! - order.get(a)!);
      const latest = statements[0];
      if (latest && SUPPRESSING.has(latest.status))
        return { by: 'vex', name: latest.document?.id ?? latest.document?.author ?? 'vex', reason: vexReason(latest), status: latest.status };
      const ex = candidates(exByVuln, f)
        .filter((e) => now < e.expires && exceptionCovers(e, f, repos))
        .sort((a, b) => b.expires - a.expires || (a.name < b.name ? -1 : 1))[0];
      if (ex)
        return {
          by: 'exception',
          name: ex.name,
          reason: ex.reason,
          ...(ex.owner !== undefined ? { owner: ex.owner } : {}),
          expires: new Date(ex.expires).toISOString(),
        };
      return undefined;
    },
  };
}
