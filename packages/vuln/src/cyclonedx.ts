/** CycloneDX JSON 1.4–1.7: components (Syft's and Trivy's layer properties), the image, vulnerabilities. */
import { ReportBuilder, imageNameVersion, isDigest, repoName, severityOf } from './builder.ts';
import { vulnError } from './errors.ts';
import { type Obj, idx, key, obj, optArr, optObj, optStr, optTime, str } from './json.ts';
import { parsePurl } from './purl.ts';
import type { FindingStatus, ParseLimits, Report, Severity } from './types.ts';
import { SEVERITIES } from './types.ts';

const VERSIONS = new Set(['1.4', '1.5', '1.6', '1.7']);

function properties(v: unknown, path: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  optArr(v, path).forEach((p0, i) => {
    const p = obj(p0, idx(path, i));
    const name = optStr(p.name, key(idx(path, i), 'name'));
    const value = optStr(p.value, key(idx(path, i), 'value'));
    if (name !== undefined && value !== undefined) out.set(name, [...(out.get(name) ?? []), value]);
  });
  return out;
}

function licenses(v: unknown, path: string): string[] {
  const out: string[] = [];
  optArr(v, path).forEach((l0, i) => {
    const lp = idx(path, i);
    const l = obj(l0, lp);
    const expr = optStr(l.expression, key(lp, 'expression'));
    if (expr !== undefined) out.push(expr);
    const lic = optObj(l.license, key(lp, 'license'));
    if (lic !== undefined) {
      const s = optStr(lic.id, key(key(lp, 'license'), 'id')) ?? optStr(lic.name, key(key(lp, 'license'), 'name'));
      if (s !== undefined) out.push(s);
    }
  });
  return out;
}

/** analysis.state (the VEX part of CycloneDX). */
function statusOf(s: string | undefined): FindingStatus {
  switch (s) {
    case 'resolved':
    case 'resolved_with_pedigree':
      return 'fixed';
    case 'not_affected':
    case 'false_positive':
      return 'not_affected';
    case 'in_triage':
      return 'under_investigation';
    default:
      return 'affected';
  }
}

function layerOf(props: Map<string, string[]>): string | undefined {
  return props.get('aquasecurity:trivy:LayerDiffID')?.[0] ?? props.get('syft:location:0:layerID')?.[0];
}

export function parseCycloneDx(doc: Obj, limits: ParseLimits): Report {
  const spec = doc.specVersion;
  if (typeof spec !== 'string' || !VERSIONS.has(spec))
    throw vulnError('ERR_VULN_SCHEMA_UNSUPPORTED', `CycloneDX specVersion ${JSON.stringify(spec)} is not supported (1.4 to 1.7)`, 'specVersion');
  const b = new ReportBuilder(limits);
  const meta = optObj(doc.metadata, 'metadata') ?? {};
  const byRef = new Map<string, string>();
  const root = optObj(meta.component, 'metadata.component');
  if (root !== undefined) readImage(b, root, 'metadata.component');

  // Components nest (an image holds its packages in some tools' output); walk them without recursion.
  const stack: { v: unknown; path: string }[] = [];
  const push = (list: unknown, path: string) => {
    const items = optArr(list, path, limits);
    for (let i = items.length - 1; i >= 0; i--) stack.push({ v: items[i], path: idx(path, i) });
  };
  push(doc.components, 'components');
  let seen = 0;
  while (stack.length > 0) {
    const { v, path } = stack.pop()!;
    if (++seen > limits.maxItems) throw vulnError('ERR_VULN_REPORT_TOO_LARGE', `${path}: more than ${limits.maxItems} components`, path);
    const c = obj(v, path);
    push(c.components, key(path, 'components'));
    const type = optStr(c.type, key(path, 'type'));
    const props = properties(c.properties, key(path, 'properties'));
    const bomRef = optStr(c['bom-ref'], key(path, 'bom-ref'));
    if (type === 'container' || type === 'operating-system' || type === 'file') {
      if (type === 'container' && root === undefined) readImage(b, c, path);
      continue;
    }
    // Trivy's targets (a lockfile, a jar) are application components holding packages, not packages.
    const purl = optStr(c.purl, key(path, 'purl'));
    if (props.has('aquasecurity:trivy:Class') || (type === 'application' && purl === undefined)) continue;
    const ptype = props.get('aquasecurity:trivy:PkgType')?.[0] ?? props.get('syft:package:type')?.[0];
    const id = b.addPackage(
      {
        name: str(c.name, key(path, 'name')),
        version: optStr(c.version, key(path, 'version')) ?? '',
        type: ptype,
        purl,
        layer: layerOf(props),
        licenses: licenses(c.licenses, key(path, 'licenses')),
      },
      path,
    );
    if (bomRef !== undefined) byRef.set(bomRef, id);
  }

  optArr(doc.vulnerabilities, 'vulnerabilities', limits).forEach((v0, vi) => {
    const vp = idx('vulnerabilities', vi);
    const v = obj(v0, vp);
    const vsource = optStr(optObj(v.source, key(vp, 'source'))?.name, key(key(vp, 'source'), 'name'));
    let severity: Severity = 'unknown';
    let fromSource: Severity | undefined;
    optArr(v.ratings, key(vp, 'ratings')).forEach((r0, ri) => {
      const rp = idx(key(vp, 'ratings'), ri);
      const r = obj(r0, rp);
      const s = severityOf(optStr(r.severity, key(rp, 'severity')));
      if (SEVERITIES.indexOf(s) < SEVERITIES.indexOf(severity)) severity = s;
      const rs = optStr(optObj(r.source, key(rp, 'source'))?.name, key(key(rp, 'source'), 'name'));
      if (rs !== undefined && rs === vsource && s !== 'unknown') fromSource = s;
    });
    const aliases = optArr(v.references, key(vp, 'references')).map((r, i) =>
      str(obj(r, idx(key(vp, 'references'), i)).id, key(idx(key(vp, 'references'), i), 'id')),
    );
    const analysis = optObj(v.analysis, key(vp, 'analysis'));
    const status = statusOf(analysis === undefined ? undefined : optStr(analysis.state, key(key(vp, 'analysis'), 'state')));
    const recommendation = optStr(v.recommendation, key(vp, 'recommendation'));
    optArr(v.affects, key(vp, 'affects')).forEach((a0, ai) => {
      const ap = idx(key(vp, 'affects'), ai);
      const a = obj(a0, ap);
      const ref = str(a.ref, key(ap, 'ref'));
      let pkg = byRef.get(ref);
      if (pkg === undefined) {
        // A VEX-only BOM points at packages by purl.
        if (!ref.startsWith('pkg:')) return;
        const p = parsePurlAt(ref, key(ap, 'ref'));
        pkg = b.addPackage({ name: p.name, version: p.version ?? '', purl: ref }, key(ap, 'ref'));
      }
      let installed: string | undefined;
      let fixed: string | undefined;
      optArr(a.versions, key(ap, 'versions')).forEach((x0, xi) => {
        const xp = idx(key(ap, 'versions'), xi);
        const x = obj(x0, xp);
        const ver = optStr(x.version, key(xp, 'version'));
        const st = optStr(x.status, key(xp, 'status'));
        if (st === 'unaffected' && fixed === undefined) fixed = ver;
        if (st === 'affected' && installed === undefined) installed = ver;
      });
      // Trivy writes the fixed version only in its recommendation.
      const rec = recommendation === undefined ? undefined : /to version (.+?)\.?$/.exec(recommendation)?.[1];
      b.addFinding(
        {
          id: str(v.id, key(vp, 'id')),
          aliases,
          severity: fromSource ?? severity,
          installed,
          fixed: fixed ?? rec,
          status,
          description: optStr(v.description, key(vp, 'description')),
        },
        pkg,
        vp,
      );
    });
  });
  return b.build('cyclonedx', toolOf(meta.tools), {
    formatVersion: spec,
    scannedAt: optTime(meta.timestamp, 'metadata.timestamp'),
    vulnerabilityData: Array.isArray(doc.vulnerabilities),
  });
}

function parsePurlAt(text: string, path: string) {
  try {
    return parsePurl(text);
  } catch (err) {
    throw vulnError('ERR_PURL_INVALID', `${path}: ${(err as Error).message}`, path);
  }
}

function readImage(b: ReportBuilder, c: Obj, path: string): void {
  const img = b.image;
  const props = properties(c.properties, key(path, 'properties'));
  const name = optStr(c.name, key(path, 'name'));
  const version = optStr(c.version, key(path, 'version'));
  const purl = optStr(c.purl, key(path, 'purl'));
  img.diffIds = props.get('aquasecurity:trivy:DiffID') ?? img.diffIds;
  const imageId = props.get('aquasecurity:trivy:ImageID')?.[0];
  if (imageId !== undefined) img.configDigest = imageId;
  img.repoDigests.push(...(props.get('aquasecurity:trivy:RepoDigest') ?? []));
  img.repoTags.push(...(props.get('aquasecurity:trivy:RepoTag') ?? []));
  for (const [k, vs] of props) if (k.startsWith('org.opencontainers.image.')) img.annotations[k] = vs[0]!;
  if (purl !== undefined) {
    const p = parsePurlAt(purl, key(path, 'purl'));
    if (p.type === 'oci' && isDigest(p.version)) img.digest = p.version;
    const repo = p.qualifiers.repository_url;
    if (repo !== undefined) img.names.push(repoName(repo));
  }
  // Syft: name is the repository, version the tag, or the manifest digest when there is no tag
  // (or it is `latest`); Trivy: name is the reference as given.
  imageNameVersion(img, name, version);
}

function toolOf(v: unknown): Report['scanner'] {
  // 1.4: an array of tools; 1.5+: { components: [...] } (the array form is deprecated, still accepted).
  const list = Array.isArray(v) ? v : (optObj(v, 'metadata.tools')?.components ?? []);
  const first = Array.isArray(list) ? list.find((t) => typeof t === 'object' && t !== null && typeof (t as Obj).name === 'string') : undefined;
  if (first === undefined) return { name: 'unknown' };
  const t = first as Obj;
  return typeof t.version === 'string' ? { name: t.name as string, version: t.version } : { name: t.name as string };
}
