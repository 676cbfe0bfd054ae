/** SPDX 2.2/2.3 JSON: packages with purls, the image package, Trivy's layer annotations. */
import { ReportBuilder, imageNameVersion, isDigest, repoName } from './builder.ts';
import { vulnError } from './errors.ts';
import { type Obj, idx, key, obj, optArr, optObj, optStr, optTime, str } from './json.ts';
import { parsePurl } from './purl.ts';
import type { ParseLimits, Report } from './types.ts';

const VERSIONS = new Set(['SPDX-2.2', 'SPDX-2.3']);

/** `Key: value` lines from attributionTexts and annotation comments (Trivy's way of adding fields). */
function notes(p: Obj, path: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const add = (s: string) => {
    const m = /^([A-Za-z]+):\s*(.+)$/.exec(s.trim());
    if (m !== null) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  };
  optArr(p.attributionTexts, key(path, 'attributionTexts')).forEach((t, i) => {
    const s = optStr(t, idx(key(path, 'attributionTexts'), i));
    if (s !== undefined) add(s);
  });
  optArr(p.annotations, key(path, 'annotations')).forEach((a, i) => {
    const s = optStr(obj(a, idx(key(path, 'annotations'), i)).comment, key(idx(key(path, 'annotations'), i), 'comment'));
    if (s !== undefined) add(s);
  });
  return out;
}

function purlOf(p: Obj, path: string): string | undefined {
  let found: string | undefined;
  optArr(p.externalRefs, key(path, 'externalRefs')).forEach((r0, i) => {
    const rp = idx(key(path, 'externalRefs'), i);
    const r = obj(r0, rp);
    if (found === undefined && r.referenceType === 'purl') found = str(r.referenceLocator, key(rp, 'referenceLocator'));
  });
  return found;
}

function license(v: unknown, path: string): string[] {
  const s = optStr(v, path);
  return s === undefined || s === 'NOASSERTION' || s === 'NONE' ? [] : [s];
}

export function parseSpdx(doc: Obj, limits: ParseLimits): Report {
  const version = doc.spdxVersion;
  if (typeof version !== 'string' || !VERSIONS.has(version))
    throw vulnError('ERR_VULN_SCHEMA_UNSUPPORTED', `spdxVersion ${JSON.stringify(version)} is not supported (SPDX-2.2, SPDX-2.3)`, 'spdxVersion');
  const b = new ReportBuilder(limits);
  const described = new Set<string>();
  for (const d of optArr(doc.documentDescribes, 'documentDescribes')) if (typeof d === 'string') described.add(d);
  optArr(doc.relationships, 'relationships', limits).forEach((r0, i) => {
    const r = obj(r0, idx('relationships', i));
    if (r.relationshipType === 'DESCRIBES' && typeof r.relatedSpdxElement === 'string') described.add(r.relatedSpdxElement);
  });
  optArr(doc.packages, 'packages', limits).forEach((p0, i) => {
    const pp = idx('packages', i);
    const p = obj(p0, pp);
    const purl = purlOf(p, pp);
    const n = notes(p, pp);
    const spdxId = optStr(p.SPDXID, key(pp, 'SPDXID'));
    const isImage =
      p.primaryPackagePurpose === 'CONTAINER' || (purl?.startsWith('pkg:oci/') ?? false) || (spdxId !== undefined && described.has(spdxId) && n.has('DiffID'));
    if (isImage) {
      readImage(b, p, pp, purl, n);
      return;
    }
    // Trivy's operating-system and target (lockfile) packages name what was scanned, not a package.
    if (p.primaryPackagePurpose === 'OPERATING-SYSTEM' || (p.primaryPackagePurpose === 'APPLICATION' && purl === undefined)) return;
    // Syft describes the scanned source itself as a package without a purl; it carries no content.
    if (spdxId !== undefined && described.has(spdxId) && purl === undefined) return;
    b.addPackage(
      {
        name: str(p.name, key(pp, 'name')),
        version: optStr(p.versionInfo, key(pp, 'versionInfo')) ?? '',
        type: n.get('PkgType')?.[0],
        purl,
        layer: n.get('LayerDiffID')?.[0],
        licenses: [...license(p.licenseConcluded, key(pp, 'licenseConcluded')), ...license(p.licenseDeclared, key(pp, 'licenseDeclared'))],
      },
      pp,
    );
  });
  const info = optObj(doc.creationInfo, 'creationInfo') ?? {};
  let scanner: Report['scanner'] = { name: 'unknown' };
  for (const c of optArr(info.creators, 'creationInfo.creators')) {
    const m = typeof c === 'string' ? /^Tool:\s*(.+?)(?:-v?(\d[\w.+-]*))?$/.exec(c) : null;
    if (m !== null) {
      scanner = m[2] === undefined ? { name: m[1]! } : { name: m[1]!, version: m[2] };
      break;
    }
  }
  return b.build('spdx', scanner, { formatVersion: version, scannedAt: optTime(info.created, 'creationInfo.created') });
}

function readImage(b: ReportBuilder, p: Obj, path: string, purl: string | undefined, n: Map<string, string[]>): void {
  const img = b.image;
  if (n.has('DiffID')) img.diffIds = n.get('DiffID')!;
  const imageId = n.get('ImageID')?.[0];
  if (imageId !== undefined) img.configDigest = imageId;
  img.repoDigests.push(...(n.get('RepoDigest') ?? []));
  img.repoTags.push(...(n.get('RepoTag') ?? []));
  if (purl !== undefined) {
    let parsed: ReturnType<typeof parsePurl>;
    try {
      parsed = parsePurl(purl);
    } catch (err) {
      throw vulnError('ERR_PURL_INVALID', `${key(path, 'externalRefs')}: ${(err as Error).message}`, key(path, 'externalRefs'));
    }
    if (parsed.type === 'oci' && isDigest(parsed.version)) img.digest = parsed.version;
    const repo = parsed.qualifiers.repository_url;
    if (repo !== undefined) img.names.push(repoName(repo));
  }
  imageNameVersion(img, optStr(p.name, key(path, 'name')), optStr(p.versionInfo, key(path, 'versionInfo')));
}
