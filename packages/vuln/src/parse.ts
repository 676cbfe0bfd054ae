/** One entry point: limits, JSON, format detection, then the format's parser. */
import { parseCycloneDx } from './cyclonedx.ts';
import { vulnError } from './errors.ts';
import { parseGrype } from './grype.ts';
import { type Obj, isObj, readJson } from './json.ts';
import { parseOpenVex } from './openvex.ts';
import { parseSpdx } from './spdx.ts';
import { parseTrivy } from './trivy.ts';
import { DEFAULT_LIMITS, type ParseLimits, type Report, type ReportFormat } from './types.ts';

/** Which format a parsed document is in, or undefined. */
export function detectFormat(doc: unknown): ReportFormat | undefined {
  if (!isObj(doc)) return undefined;
  if ('SchemaVersion' in doc) return 'trivy';
  if (doc.bomFormat === 'CycloneDX') return 'cyclonedx';
  if (typeof doc.spdxVersion === 'string') return 'spdx';
  if (typeof doc['@context'] === 'string' && doc['@context'].startsWith('https://openvex.dev/')) return 'openvex';
  if (Array.isArray(doc.matches) && ('descriptor' in doc || 'source' in doc)) return 'grype';
  return undefined;
}

/**
 * Reads a Trivy, Grype, CycloneDX, SPDX or OpenVEX JSON document into a Report. Every refusal is a
 * WritError (`ERR_VULN_*`, `ERR_PURL_INVALID`) whose `field` names the JSON path.
 * @example parseReport(readFileSync('trivy.json'), { maxBytes: 64 << 20 }).findings
 */
export function parseReport(input: string | Uint8Array, limits: Partial<ParseLimits> = {}): Report {
  const l: ParseLimits = { ...DEFAULT_LIMITS, ...limits };
  return parseDocument(readJson(input, l), l);
}

/** Like parseReport, for a document already parsed (size and depth are the caller's concern). */
export function parseDocument(doc: unknown, limits: Partial<ParseLimits> = {}): Report {
  const l: ParseLimits = { ...DEFAULT_LIMITS, ...limits };
  const format = detectFormat(doc);
  if (format === undefined) throw vulnError('ERR_VULN_FORMAT_UNKNOWN', 'not a Trivy, Grype, CycloneDX, SPDX or OpenVEX JSON document');
  const d = doc as Obj;
  switch (format) {
    case 'trivy':
      return parseTrivy(d, l);
    case 'grype':
      return parseGrype(d, l);
    case 'cyclonedx':
      return parseCycloneDx(d, l);
    case 'spdx':
      return parseSpdx(d, l);
    case 'openvex':
      return parseOpenVex(d, l);
  }
}
