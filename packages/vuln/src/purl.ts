/** Package URLs (github.com/package-url/purl-spec) and vulnerability IDs. */
import { vulnError } from './errors.ts';

export interface PackageUrl {
  type: string;
  namespace?: string;
  name: string;
  version?: string;
  qualifiers: Record<string, string>;
  subpath?: string;
}

const MAX_PURL = 4096;
const TYPE = /^[a-z.+-][a-z0-9.+-]*$/;
const QUALIFIER_KEY = /^[a-z.\-_][a-z0-9.\-_]*$/;

function fail(text: string, why: string): never {
  throw vulnError('ERR_PURL_INVALID', `not a package URL (${why}): ${JSON.stringify(text.slice(0, 120))}`);
}

function decode(text: string, part: string): string {
  if (!part.includes('%')) return part;
  try {
    return decodeURIComponent(part);
  } catch {
    return fail(text, 'bad percent-encoding');
  }
}

/** The spec's encoding: everything but unreserved characters and ':' is percent-encoded. */
function encode(s: string): string {
  return encodeURIComponent(s).replace(/%3A/gi, ':');
}

/** Type-specific rules from the spec's PURL-TYPES: which parts are case-insensitive. */
// golang module paths are case-sensitive (so not here); deb and hackage names are kept as written.
const LOWER_NAMESPACE = new Set(['bitbucket', 'github', 'deb', 'rpm', 'apk', 'alpm', 'composer', 'hex', 'qpkg']);
const LOWER_NAME = new Set(['bitbucket', 'github', 'apk', 'alpm', 'composer', 'hex', 'pypi', 'oci', 'pub', 'bitnami']);

function normalize(p: PackageUrl): PackageUrl {
  const out: PackageUrl = { ...p, qualifiers: { ...p.qualifiers } };
  if (out.namespace !== undefined && LOWER_NAMESPACE.has(out.type)) out.namespace = out.namespace.toLowerCase();
  if (LOWER_NAME.has(out.type)) out.name = out.name.toLowerCase();
  if (out.type === 'pypi') out.name = out.name.replace(/_/g, '-');
  if (out.type === 'huggingface' && out.version !== undefined) out.version = out.version.toLowerCase();
  if (out.type === 'oci' && out.version !== undefined) out.version = out.version.toLowerCase();
  return out;
}

/**
 * Parses a package URL and applies the spec's normalisation.
 * @example parsePurl('pkg:npm/%40angular/core@17.0.0') // { type: 'npm', namespace: '@angular', name: 'core', version: '17.0.0', qualifiers: {} }
 */
export function parsePurl(text: string): PackageUrl {
  if (typeof text !== 'string') throw new TypeError('parsePurl: text must be a string');
  if (text.length > MAX_PURL) fail(text, `longer than ${MAX_PURL} characters`);
  let rest = text.trim();
  if (rest !== text || /[\s]/.test(rest)) fail(text, 'whitespace');
  let subpath: string | undefined;
  const hash = rest.indexOf('#');
  if (hash >= 0) {
    const segs = rest
      .slice(hash + 1)
      .split('/')
      .filter((s) => s !== '' && s !== '.' && s !== '..')
      .map((s) => decode(text, s));
    if (segs.some((s) => s.includes('/'))) fail(text, 'a subpath segment contains "/"');
    subpath = segs.length === 0 ? undefined : segs.join('/');
    rest = rest.slice(0, hash);
  }
  const qualifiers: Record<string, string> = {};
  const q = rest.indexOf('?');
  if (q >= 0) {
    for (const pair of rest.slice(q + 1).split('&')) {
      if (pair === '') continue;
      const eq = pair.indexOf('=');
      if (eq <= 0) fail(text, `qualifier ${JSON.stringify(pair)} has no key=value`);
      const k = pair.slice(0, eq).toLowerCase();
      if (!QUALIFIER_KEY.test(k) || k === '__proto__') fail(text, `qualifier key ${JSON.stringify(k)}`);
      if (Object.hasOwn(qualifiers, k)) fail(text, `qualifier ${k} repeated`);
      const v = decode(text, pair.slice(eq + 1));
      if (v !== '') qualifiers[k] = v;
    }
    rest = rest.slice(0, q);
  }
  const colon = rest.indexOf(':');
  if (colon < 0 || rest.slice(0, colon).toLowerCase() !== 'pkg') fail(text, 'no "pkg:" scheme');
  rest = rest.slice(colon + 1).replace(/^\/+/, '');
  const slash = rest.indexOf('/');
  if (slash <= 0) fail(text, 'no type');
  const type = rest.slice(0, slash).toLowerCase();
  if (!TYPE.test(type)) fail(text, `type ${JSON.stringify(type)}`);
  rest = rest.slice(slash + 1).replace(/\/+$/, '');
  let version: string | undefined;
  const at = rest.lastIndexOf('@');
  // An '@' before the last '/' belongs to the namespace (an unencoded npm scope), not the version.
  if (at >= 0 && at > rest.lastIndexOf('/')) {
    version = decode(text, rest.slice(at + 1));
    if (version === '') version = undefined;
    rest = rest.slice(0, at);
  }
  const segs = rest
    .split('/')
    .filter((s) => s !== '')
    .map((s) => decode(text, s));
  const name = segs.pop();
  if (name === undefined || name === '') fail(text, 'no name');
  // Only namespace segments may not hold "/": a decoded name may hold any character (Syft names an
  // image `pkg:oci/127.0.0.1%3A5000%2Fteam%2Fapp@sha256%3A...`).
  if (segs.some((s) => s.includes('/'))) fail(text, 'a namespace segment contains an encoded "/"');
  const p: PackageUrl = { type, name, qualifiers };
  if (segs.length > 0) p.namespace = segs.join('/');
  if (version !== undefined) p.version = version;
  if (subpath !== undefined) p.subpath = subpath;
  const n = normalize(p);
  // The few types whose spec makes a part required.
  if (n.type === 'swift' && (n.namespace === undefined || n.version === undefined)) fail(text, 'swift needs a namespace and a version');
  if (n.type === 'cran' && n.version === undefined) fail(text, 'cran needs a version');
  if (n.type === 'conan' && (n.namespace === undefined) !== (n.qualifiers.channel === undefined))
    fail(text, 'conan needs both a namespace and a channel, or neither');
  return n;
}

/** The canonical text: lowercase type, percent-encoded parts, qualifiers sorted by key. */
export function formatPurl(p: PackageUrl): string {
  return format(normalize(p));
}

function format(n: PackageUrl): string {
  let s = `pkg:${n.type}/`;
  if (n.namespace !== undefined && n.namespace !== '') s += `${n.namespace.split('/').filter(Boolean).map(encode).join('/')}/`;
  s += encode(n.name);
  if (n.version !== undefined && n.version !== '') s += `@${encode(n.version)}`;
  const keys = Object.keys(n.qualifiers)
    .filter((k) => n.qualifiers[k] !== '')
    .sort();
  if (keys.length > 0) s += `?${keys.map((k) => `${k.toLowerCase()}=${encode(n.qualifiers[k]!)}`).join('&')}`;
  if (n.subpath !== undefined && n.subpath !== '')
    s += `#${n.subpath
      .split('/')
      .filter((x) => x !== '' && x !== '.' && x !== '..')
      .map(encode)
      .join('/')}`;
  return s;
}

/** parsePurl then formatPurl: one spelling per package. */
export function canonicalPurl(text: string): string {
  return format(parsePurl(text));
}

const CVE = /^CVE-(\d{4})-(\d{4,19})$/i;
const GHSA = /^GHSA(-[23456789cfghjmpqrvwx]{4}){3}$/i;
const MAX_ID = 200;

/**
 * One spelling per vulnerability: `cve-2024-1234`, `CVE_2024_1234` and `CVE–2024–1234` (en dash)
 * are `CVE-2024-1234`; GHSA IDs are `GHSA-` and lowercase; other schemes (`DSA-5678-1`,
 * `GO-2024-2687`, `RUSTSEC-...`) are kept as written. A CVE-looking ID that is not one is refused.
 */
export function normalizeVulnId(text: string): string {
  if (typeof text !== 'string') throw new TypeError('normalizeVulnId: text must be a string');
  const s = text.trim();
  const d = s.replace(/[\u2010-\u2015\u2212_]/g, '-');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (s === '' || s.length > MAX_ID || /[\s\u0000-\u001f\u007f]/.test(s))
    throw vulnError('ERR_VULN_ID_INVALID', `not a vulnerability ID: ${JSON.stringify(text.slice(0, 60))}`);
  const cve = CVE.exec(d);
  if (cve !== null) return `CVE-${cve[1]}-${cve[2]}`;
  if (/^cve(?![a-z])/i.test(d)) throw vulnError('ERR_VULN_ID_INVALID', `not a CVE ID (CVE-YYYY-NNNN): ${JSON.stringify(text.slice(0, 60))}`);
  if (GHSA.test(d)) return `GHSA${d.slice(4).toLowerCase()}`;
  if (/^ghsa-/i.test(d)) throw vulnError('ERR_VULN_ID_INVALID', `not a GHSA ID (GHSA-xxxx-xxxx-xxxx): ${JSON.stringify(text.slice(0, 60))}`);
  return s;
}
