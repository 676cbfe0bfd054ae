/** OpenVEX (openvex.dev, v0.2.0 and the earlier v0.0.1 shape): statements about products. */
import { ReportBuilder, isDigest } from './builder.ts';
import { vulnError } from './errors.ts';
import { type Obj, idx, key, obj, optArr, optObj, optStr, optTime, str } from './json.ts';
import { canonicalPurl } from './purl.ts';
import { vulnId } from './builder.ts';
import type { ParseLimits, Report, VexProduct, VexStatement, VexStatus } from './types.ts';
import { VEX_STATUSES } from './types.ts';

const CONTEXT = /^https:\/\/openvex\.dev\/ns(?:\/(v\d+\.\d+\.\d+))?$/;
const SUPPORTED = new Set(['v0.0.1', 'v0.2.0']);
export const VEX_JUSTIFICATIONS = [
  'component_not_present',
  'vulnerable_code_not_present',
  'vulnerable_code_not_in_execute_path',
  'vulnerable_code_cannot_be_controlled_by_adversary',
  'inline_mitigations_already_exist',
] as const;

function purlAt(s: string, path: string): string {
  try {
    return canonicalPurl(s);
  } catch (err) {
    throw vulnError('ERR_PURL_INVALID', `${path}: ${(err as Error).message}`, path);
  }
}

function product(v: unknown, path: string): VexProduct {
  // v0.0.1 lists products as strings.
  const p: Obj = typeof v === 'string' ? { '@id': v } : obj(v, path);
  const ids = optObj(p.identifiers, key(path, 'identifiers'));
  const id = optStr(p['@id'], key(path, '@id')) ?? (ids === undefined ? undefined : optStr(ids.purl, key(key(path, 'identifiers'), 'purl')));
  if (id === undefined) throw vulnError('ERR_VULN_REPORT_INVALID', `${path}: a product needs an @id or identifiers.purl`, path);
  const out: VexProduct = { id, subcomponents: [] };
  const purl = ids === undefined ? undefined : optStr(ids.purl, key(key(path, 'identifiers'), 'purl'));
  if (purl !== undefined) out.purl = purlAt(purl, key(key(path, 'identifiers'), 'purl'));
  else if (id.startsWith('pkg:')) out.purl = purlAt(id, key(path, '@id'));
  const hashes = optObj(p.hashes, key(path, 'hashes'));
  const sha = hashes === undefined ? undefined : optStr(hashes['sha-256'], key(key(path, 'hashes'), 'sha-256'));
  if (isDigest(id)) out.digest = id;
  else if (sha !== undefined && isDigest(`sha256:${sha}`)) out.digest = `sha256:${sha}`;
  else if (out.purl?.startsWith('pkg:oci/')) {
    const at = out.purl.indexOf('@');
    const ver = at < 0 ? undefined : decodeURIComponent(out.purl.slice(at + 1).split(/[?#]/)[0]!);
    if (isDigest(ver)) out.digest = ver;
  }
  optArr(p.subcomponents, key(path, 'subcomponents')).forEach((s0, i) => {
    const sp = idx(key(path, 'subcomponents'), i);
    const s = product(s0, sp);
    out.subcomponents.push(s.purl === undefined ? { id: s.id } : { id: s.id, purl: s.purl });
  });
  return out;
}

export function parseOpenVex(doc: Obj, limits: ParseLimits): Report {
  const ctx = doc['@context'];
  const m = typeof ctx === 'string' ? CONTEXT.exec(ctx) : null;
  const version = m?.[1] ?? 'v0.0.1';
  if (m === null || !SUPPORTED.has(version))
    throw vulnError('ERR_VULN_SCHEMA_UNSUPPORTED', `OpenVEX @context ${JSON.stringify(ctx)} is not supported (v0.0.1, v0.2.0)`, '["@context"]');
  const b = new ReportBuilder(limits);
  const docTime = optTime(doc.timestamp, 'timestamp');
  optArr(doc.statements, 'statements', limits).forEach((s0, si) => {
    const sp = idx('statements', si);
    const s = obj(s0, sp);
    const vp = key(sp, 'vulnerability');
    const vuln: Obj = typeof s.vulnerability === 'string' ? { name: s.vulnerability } : obj(s.vulnerability, vp);
    const name = optStr(vuln.name, key(vp, 'name')) ?? str(vuln['@id'], key(vp, 'name'));
    const status = str(s.status, key(sp, 'status'));
    if (!(VEX_STATUSES as readonly string[]).includes(status))
      throw vulnError('ERR_VULN_REPORT_INVALID', `${key(sp, 'status')}: ${JSON.stringify(status)} is not one of ${VEX_STATUSES.join(', ')}`, key(sp, 'status'));
    const justification = optStr(s.justification, key(sp, 'justification'));
    if (justification !== undefined && !(VEX_JUSTIFICATIONS as readonly string[]).includes(justification))
      throw vulnError(
        'ERR_VULN_REPORT_INVALID',
        `${key(sp, 'justification')}: ${JSON.stringify(justification)} is not an OpenVEX justification`,
        key(sp, 'justification'),
      );
    const impact = optStr(s.impact_statement, key(sp, 'impact_statement'));
    // The spec: a not_affected statement must say why.
    if (status === 'not_affected' && justification === undefined && impact === undefined)
      throw vulnError('ERR_VULN_REPORT_INVALID', `${sp}: a not_affected statement needs a justification or an impact_statement`, key(sp, 'justification'));
    const products = optArr(s.products, key(sp, 'products'), limits).map((p, i) => product(p, idx(key(sp, 'products'), i)));
    const st: VexStatement = {
      vulnerability: vulnId(name, key(vp, 'name')),
      aliases: optArr(vuln.aliases, key(vp, 'aliases')).map((a, i) => vulnId(str(a, idx(key(vp, 'aliases'), i)), idx(key(vp, 'aliases'), i))),
      products,
      status: status as VexStatus,
    };
    if (justification !== undefined) st.justification = justification;
    if (impact !== undefined) st.impactStatement = impact;
    const action = optStr(s.action_statement, key(sp, 'action_statement'));
    if (action !== undefined) st.actionStatement = action;
    const t = optTime(s.timestamp, key(sp, 'timestamp')) ?? docTime;
    if (t !== undefined) st.timestamp = t;
    b.addVex(st, sp);
  });
  const author = optStr(doc.author, 'author') ?? optStr(doc.tooling, 'tooling') ?? 'unknown';
  return b.build('openvex', { name: author }, { formatVersion: version, scannedAt: docTime });
}
