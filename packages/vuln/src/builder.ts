/** Collects one report's packages and findings, merging the duplicates every format can carry. */
import { vulnError } from './errors.ts';
import { normalizeVulnId, canonicalPurl } from './purl.ts';
import type { Finding, FindingStatus, ParseLimits, Report, ReportFormat, ReportImage, ReportPackage, Severity, VexStatement } from './types.ts';
import { SEVERITIES } from './types.ts';
import { tooMany } from './json.ts';

export interface PackageInput {
  name: string;
  version: string;
  type?: string | undefined;
  purl?: string | undefined;
  layer?: string | undefined;
  licenses?: string[] | undefined;
}

export interface FindingInput {
  id: string;
  aliases?: string[];
  severity: Severity;
  installed?: string | undefined;
  fixed?: string | undefined;
  status: FindingStatus;
  title?: string | undefined;
  description?: string | undefined;
}

const DIGEST = /^sha256:[0-9a-f]{64}$|^sha512:[0-9a-f]{128}$/;

export function isDigest(s: string | undefined): s is string {
  return s !== undefined && DIGEST.test(s);
}

/** The same test without narrowing (so a `false` still leaves a string a string). */
export function looksLikeDigest(s: string): boolean {
  return DIGEST.test(s);
}

/** Repository name of `registry/repo:tag` or `repo@sha256:...`. */
export function repoName(ref: string): string {
  const at = ref.indexOf('@');
  const noDigest = at >= 0 ? ref.slice(0, at) : ref;
  const colon = noDigest.lastIndexOf(':');
  return colon > noDigest.lastIndexOf('/') ? noDigest.slice(0, colon) : noDigest;
}

/**
 * The image's name and version as SBOM tools write them on the root component: Syft puts the
 * repository in `name` and the tag (or, for `latest` and untagged input, the manifest digest) in
 * `version`; Trivy puts the whole reference in `name`.
 */
export function imageNameVersion(img: ReportImage, name: string | undefined, version: string | undefined): void {
  if (isDigest(version) && img.digest === undefined) img.digest = version;
  if (name === undefined || looksLikeDigest(name)) return;
  if (name.includes('@')) img.repoDigests.push(name);
  else if (name.lastIndexOf(':') > name.lastIndexOf('/')) img.repoTags.push(name);
  else if (version !== undefined && !looksLikeDigest(version) && /^[\w][\w.-]{0,127}$/.test(version)) img.repoTags.push(`${name}:${version}`);
  else img.names.push(name);
}

export function emptyImage(): ReportImage {
  return { names: [], repoTags: [], repoDigests: [], diffIds: [], annotations: {}, labels: {} };
}

export function severityOf(s: string | undefined): Severity {
  const v = (s ?? '').trim().toLowerCase();
  if ((SEVERITIES as readonly string[]).includes(v)) return v as Severity;
  if (v === 'moderate') return 'medium';
  if (v === 'info' || v === 'none' || v === 'informational') return 'negligible';
  return 'unknown';
}

export class ReportBuilder {
  readonly image: ReportImage = emptyImage();
  #packages = new Map<string, ReportPackage>();
  #findings = new Map<string, Finding>();
  #vex: VexStatement[] = [];
  #limits: ParseLimits;

  constructor(limits: ParseLimits) {
    this.#limits = limits;
  }

  /** Adds (or merges into) a package; returns its id. `path` names it in errors. */
  addPackage(p: PackageInput, path: string): string {
    let purl: string | undefined;
    let type = p.type ?? '';
    if (p.purl !== undefined) {
      try {
        purl = canonicalPurl(p.purl);
      } catch (err) {
        throw vulnError('ERR_PURL_INVALID', `${path}: ${(err as Error).message}`, path);
      }
      type = purl.slice(4, purl.indexOf('/'));
    }
    const layer = isDigest(p.layer) ? p.layer : undefined;
    const base = purl ?? `${type || 'unknown'}:${p.name}@${p.version}`;
    const id = layer === undefined ? base : `${base} ${layer}`;
    const seen = this.#packages.get(id);
    if (seen !== undefined) {
      if (p.licenses !== undefined && p.licenses.length > 0) seen.licenses = [...new Set([...(seen.licenses ?? []), ...p.licenses])];
      return id;
    }
    if (this.#packages.size >= this.#limits.maxItems) tooMany(path, this.#limits);
    const pkg: ReportPackage = { id, name: p.name, version: p.version, type: type || 'unknown' };
    if (purl !== undefined) pkg.purl = purl;
    if (layer !== undefined) pkg.layer = layer;
    if (p.licenses !== undefined && p.licenses.length > 0) pkg.licenses = [...new Set(p.licenses)];
    this.#packages.set(id, pkg);
    return id;
  }

  /** The id of a package added earlier with this purl or name, when one exists. */
  packageRef(id: string): ReportPackage | undefined {
    return this.#packages.get(id);
  }

  addFinding(f: FindingInput, packageRef: string, path: string): void {
    const id = vulnId(f.id, path);
    const aliases = [...new Set((f.aliases ?? []).map((a, i) => vulnId(a, `${path}.aliases[${i}]`)))].filter((a) => a !== id);
    const pkg = this.#packages.get(packageRef);
    const installed = f.installed ?? pkg?.version ?? '';
    const k = `${id}\u0000${packageRef}\u0000${installed}`;
    const seen = this.#findings.get(k);
    if (seen !== undefined) {
      seen.aliases = [...new Set([...seen.aliases, ...aliases])];
      if (seen.fixed === undefined && f.fixed !== undefined) seen.fixed = f.fixed;
      if (SEVERITIES.indexOf(f.severity) < SEVERITIES.indexOf(seen.severity)) seen.severity = f.severity;
      return;
    }
    if (this.#findings.size >= this.#limits.maxItems) tooMany(path, this.#limits);
    const out: Finding = { id, aliases, severity: f.severity, packageRef, installed, status: f.status };
    if (f.fixed !== undefined && f.fixed !== '') out.fixed = f.fixed;
    if (f.title !== undefined) out.title = f.title;
    if (f.description !== undefined) out.description = f.description;
    this.#findings.set(k, out);
  }

  addVex(s: VexStatement, path: string): void {
    if (this.#vex.length >= this.#limits.maxItems) tooMany(path, this.#limits);
    this.#vex.push(s);
  }

  build(
    format: ReportFormat,
    scanner: Report['scanner'],
    extra: { formatVersion?: string | undefined; scannedAt?: string | undefined; vulnerabilityData?: boolean },
  ): Report {
    const img = this.image;
    img.names = [...new Set([...img.names, ...img.repoTags.map(repoName), ...img.repoDigests.map(repoName)])];
    img.repoTags = [...new Set(img.repoTags)];
    img.repoDigests = [...new Set(img.repoDigests)];
    // Scanners see the config's labels, not the manifest's annotations; build tools often write the
    // OCI keys (`org.opencontainers.image.base.name`, `.source`, `.revision`) as labels too.
    for (const [k, v] of Object.entries(img.labels)) if (k.startsWith('org.opencontainers.image.') && img.annotations[k] === undefined) img.annotations[k] = v;
    if (img.digest === undefined) {
      const d = img.repoDigests.map((r) => r.slice(r.indexOf('@') + 1)).find(isDigest);
      if (d !== undefined) img.digest = d;
    }
    const r: Report = {
      format,
      scanner,
      image: img,
      packages: [...this.#packages.values()],
      findings: [...this.#findings.values()],
      vex: this.#vex,
      vulnerabilityData: extra.vulnerabilityData ?? (format === 'trivy' || format === 'grype'),
    };
    if (extra.formatVersion !== undefined) r.formatVersion = extra.formatVersion;
    if (extra.scannedAt !== undefined) r.scannedAt = extra.scannedAt;
    return r;
  }
}

export function vulnId(v: string, path: string): string {
  try {
    return normalizeVulnId(v);
  } catch (err) {
    throw vulnError('ERR_VULN_ID_INVALID', `${path}: ${(err as Error).message}`, path);
  }
}
