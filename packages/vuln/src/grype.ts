/** Grype JSON (`grype -o json`): matches of vulnerability × artifact, and the scanned source. */
import { ReportBuilder, isDigest, severityOf } from './builder.ts';
import { type Obj, idx, key, obj, optArr, optObj, optStr, optStrs, optTime, str, strMap } from './json.ts';
import type { FindingStatus, ParseLimits, Report } from './types.ts';

function licenses(v: unknown, path: string): string[] {
  // Grype writes strings; Syft-shaped artifacts carry objects with `value`.
  const out: string[] = [];
  optArr(v, path).forEach((l, i) => {
    if (typeof l === 'string') out.push(l);
    else {
      const o = optObj(l, idx(path, i));
      const s = o === undefined ? undefined : (optStr(o.value, key(idx(path, i), 'value')) ?? optStr(o.spdxExpression, key(idx(path, i), 'spdxExpression')));
      if (s !== undefined) out.push(s);
    }
  });
  return out;
}

export function parseGrype(doc: Obj, limits: ParseLimits): Report {
  const b = new ReportBuilder(limits);
  const source = optObj(doc.source, 'source');
  if (
    source !== undefined &&
    (source.type === 'image' || source.type === 'image-archive' || optObj(source.target, 'source.target')?.manifestDigest !== undefined)
  ) {
    const t = obj(source.target, 'source.target');
    const img = b.image;
    const manifest = optStr(t.manifestDigest, 'source.target.manifestDigest');
    if (isDigest(manifest)) img.digest = manifest;
    const config = optStr(t.imageID, 'source.target.imageID');
    if (config !== undefined) img.configDigest = config;
    img.repoTags = optStrs(t.tags, 'source.target.tags');
    img.repoDigests = optStrs(t.repoDigests, 'source.target.repoDigests');
    // Syft's layer digests are diff IDs (uncompressed), the same IDs artifacts' locations use.
    img.diffIds = optArr(t.layers, 'source.target.layers', limits).map((l, i) =>
      str(obj(l, idx('source.target.layers', i)).digest, key(idx('source.target.layers', i), 'digest')),
    );
    img.labels = strMap(t.labels, 'source.target.labels');
    const user = optStr(t.userInput, 'source.target.userInput');
    if (user !== undefined && img.repoTags.length === 0 && !user.includes('@') && !user.startsWith('sha256:')) img.repoTags.push(user);
  }
  // Grype's own ignore rules are not Writ's exceptions: an ignored match is still a finding, unless
  // the rule came from a VEX document (`vex-status`), which says what the package's status is.
  const each = (list: string) =>
    optArr(doc[list], list, limits).forEach((m0, mi) => {
      const mp = idx(list, mi);
      const m = obj(m0, mp);
      let status: FindingStatus = 'affected';
      optArr(m.appliedIgnoreRules, key(mp, 'appliedIgnoreRules')).forEach((r0, ri) => {
        const r = obj(r0, idx(key(mp, 'appliedIgnoreRules'), ri));
        const vex = optStr(r['vex-status'], key(idx(key(mp, 'appliedIgnoreRules'), ri), 'vex-status'));
        if (vex === 'not_affected' || vex === 'fixed') status = vex;
      });
      const v = obj(m.vulnerability, key(mp, 'vulnerability'));
      const vp = key(mp, 'vulnerability');
      const a = obj(m.artifact, key(mp, 'artifact'));
      const ap = key(mp, 'artifact');
      const locations = optArr(a.locations, key(ap, 'locations'));
      const first = locations.length === 0 ? undefined : obj(locations[0], idx(key(ap, 'locations'), 0));
      const ref = b.addPackage(
        {
          name: str(a.name, key(ap, 'name')),
          version: optStr(a.version, key(ap, 'version')) ?? '',
          type: optStr(a.type, key(ap, 'type')),
          purl: optStr(a.purl, key(ap, 'purl')),
          layer: first === undefined ? undefined : optStr(first.layerID, key(idx(key(ap, 'locations'), 0), 'layerID')),
          licenses: licenses(a.licenses, key(ap, 'licenses')),
        },
        ap,
      );
      const fix = optObj(v.fix, key(vp, 'fix'));
      const fixed = fix === undefined ? [] : optStrs(fix.versions, key(key(vp, 'fix'), 'versions'));
      const related = optArr(m.relatedVulnerabilities, key(mp, 'relatedVulnerabilities')).map((r, i) =>
        str(obj(r, idx(key(mp, 'relatedVulnerabilities'), i)).id, key(idx(key(mp, 'relatedVulnerabilities'), i), 'id')),
      );
      b.addFinding(
        {
          id: str(v.id, key(vp, 'id')),
          aliases: related,
          severity: severityOf(optStr(v.severity, key(vp, 'severity'))),
          installed: optStr(a.version, key(ap, 'version')),
          fixed: fixed.length === 0 ? undefined : fixed.join(', '),
          status,
          description: optStr(v.description, key(vp, 'description')),
        },
        ref,
        mp,
      );
    });
  each('matches');
  each('ignoredMatches');
  const d = optObj(doc.descriptor, 'descriptor') ?? {};
  const name = optStr(d.name, 'descriptor.name') ?? 'grype';
  const version = optStr(d.version, 'descriptor.version');
  return b.build('grype', version === undefined ? { name } : { name, version }, { scannedAt: optTime(d.timestamp, 'descriptor.timestamp') });
}
