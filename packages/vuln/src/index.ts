export { VULN_ERROR_CODES, type VulnErrorCode } from './errors.ts';
export { detectFormat, parseDocument, parseReport } from './parse.ts';
export { canonicalPurl, formatPurl, normalizeVulnId, parsePurl, type PackageUrl } from './purl.ts';
export { VEX_JUSTIFICATIONS } from './openvex.ts';
export { FIX_LOCATIONS, whereToFix, type FixAdvice, type FixImageRef, type FixLocation } from './fix.ts';
export {
  BASE_DIGEST_ANNOTATION,
  BASE_NAME_ANNOTATION,
  Lineage,
  lineageImageOf,
  repositoryOf,
  type BaseLink,
  type BaseSource,
  type LayerOrigin,
  type LineageImage,
} from './lineage.ts';
export {
  DEFAULT_LIMITS,
  FINDING_STATUSES,
  REPORT_FORMATS,
  SEVERITIES,
  VEX_STATUSES,
  type Finding,
  type FindingStatus,
  type ParseLimits,
  type Report,
  type ReportFormat,
  type ReportImage,
  type ReportPackage,
  type Severity,
  type VexProduct,
  type VexStatement,
  type VexStatus,
} from './types.ts';
