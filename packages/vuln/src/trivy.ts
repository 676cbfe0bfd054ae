/** Trivy JSON (`trivy image -f json`, SchemaVersion 2), image and SBOM results. */
import { ReportBuilder, severityOf } from './builder.ts';
import { vulnError } from './errors.ts';
import { type Obj, idx, key, obj, optArr, optObj, optStr, optStrs, optTime, str, strMap } from './json.ts';
import type { FindingStatus, ParseLimits, Report } from './types.ts';

/** Trivy's statuses say whether a fix exists; all but these leave the installed package affected. */
function statusOf(s: string | undefined): FindingStatus {
  if (s === 'not_affected') return 'not_affected';
  if (s === 'under_investigation') return 'under_investigation';
  return 'affected';
}

function layerOf(v: unknown, path: string): string | undefined {
  const l = optObj(v, path);
  return l === undefined ? undefined : optStr(l.DiffID, key(path, 'DiffID'));
}

export function parseTrivy(doc: Obj, limits: ParseLimits): Report {
  const version = doc.SchemaVersion;
  if (version !== 2)
    throw vulnError('ERR_VULN_SCHEMA_UNSUPPORTED', `Trivy SchemaVersion ${JSON.stringify(version)} is not supported (only 2)`, 'SchemaVersion');
  const b = new ReportBuilder(limits);
  const meta = optObj(doc.Metadata, 'Metadata') ?? {};
  const img = b.image;
  const imageId = optStr(meta.ImageID, 'Metadata.ImageID');
  if (imageId !== undefined) img.configDigest = imageId;
  img.diffIds = optStrs(meta.DiffIDs, 'Metadata.DiffIDs');
  img.repoTags = optStrs(meta.RepoTags, 'Metadata.RepoTags');
  img.repoDigests = optStrs(meta.RepoDigests, 'Metadata.RepoDigests');
  const cfg = optObj(meta.ImageConfig, 'Metadata.ImageConfig');
  const inner = cfg === undefined ? undefined : optObj(cfg.config, 'Metadata.ImageConfig.config');
  if (inner !== undefined) img.labels = strMap(inner.Labels, 'Metadata.ImageConfig.config.Labels');
  const artifact = optStr(doc.ArtifactName, 'ArtifactName');
  const artifactType = optStr(doc.ArtifactType, 'ArtifactType');
  if (artifact !== undefined && artifactType === 'container_image' && img.repoTags.length === 0 && img.repoDigests.length === 0)
    (artifact.includes('@') ? img.repoDigests : img.repoTags).push(artifact);

  const results = optArr(doc.Results, 'Results', limits);
  results.forEach((r0, ri) => {
    const rp = idx('Results', ri);
    const r = obj(r0, rp);
    const rtype = optStr(r.Type, key(rp, 'Type'));
    const byTrivyId = new Map<string, string>();
    optArr(r.Packages, key(rp, 'Packages'), limits).forEach((p0, pi) => {
      const pp = idx(key(rp, 'Packages'), pi);
      const p = obj(p0, pp);
      const ident = optObj(p.Identifier, key(pp, 'Identifier'));
      const id = b.addPackage(
        {
          name: str(p.Name, key(pp, 'Name')),
          version: optStr(p.Version, key(pp, 'Version')) ?? '',
          type: rtype,
          purl: ident === undefined ? undefined : optStr(ident.PURL, key(key(pp, 'Identifier'), 'PURL')),
          layer: layerOf(p.Layer, key(pp, 'Layer')),
          licenses: optStrs(p.Licenses, key(pp, 'Licenses')),
        },
        pp,
      );
      const tid = optStr(p.ID, key(pp, 'ID'));
      if (tid !== undefined) byTrivyId.set(tid, id);
    });
    optArr(r.Vulnerabilities, key(rp, 'Vulnerabilities'), limits).forEach((v0, vi) => {
      const vp = idx(key(rp, 'Vulnerabilities'), vi);
      const v = obj(v0, vp);
      const ident = optObj(v.PkgIdentifier, key(vp, 'PkgIdentifier'));
      const installed = optStr(v.InstalledVersion, key(vp, 'InstalledVersion')) ?? '';
      const pkgId = optStr(v.PkgID, key(vp, 'PkgID'));
      const name = str(v.PkgName, key(vp, 'PkgName'));
      const layer = layerOf(v.Layer, key(vp, 'Layer'));
      const purl = ident === undefined ? undefined : optStr(ident.PURL, key(key(vp, 'PkgIdentifier'), 'PURL'));
      // Without --list-all-pkgs the vulnerability is the only record of its package.
      const known = pkgId === undefined ? undefined : byTrivyId.get(pkgId);
      const ref =
        known !== undefined && (layer === undefined || b.packageRef(known)?.layer === layer)
          ? known
          : b.addPackage({ name, version: installed, type: rtype, purl, layer }, vp);
      b.addFinding(
        {
          id: str(v.VulnerabilityID, key(vp, 'VulnerabilityID')),
          aliases: optStrs(v.VendorIDs, key(vp, 'VendorIDs')),
          severity: severityOf(optStr(v.Severity, key(vp, 'Severity'))),
          installed,
          fixed: optStr(v.FixedVersion, key(vp, 'FixedVersion')),
          status: statusOf(optStr(v.Status, key(vp, 'Status'))),
          title: optStr(v.Title, key(vp, 'Title')),
          description: optStr(v.Description, key(vp, 'Description')),
        },
        ref,
        vp,
      );
    });
  });
  const trivy = optObj(doc.Trivy, 'Trivy');
  const scannerVersion = trivy === undefined ? undefined : optStr(trivy.Version, 'Trivy.Version');
  return b.build('trivy', scannerVersion === undefined ? { name: 'trivy' } : { name: 'trivy', version: scannerVersion }, {
    formatVersion: '2',
    scannedAt: optTime(doc.CreatedAt, 'CreatedAt'),
  });
}
