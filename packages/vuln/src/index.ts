export { VULN_ERROR_CODES, type VulnErrorCode } from './errors.ts';
export { detectFormat, parseDocument, parseReport } from './parse.ts';
export { canonicalPurl, formatPurl, normalizeVulnId, parsePurl, type PackageUrl } from './purl.ts';
export { VEX_JUSTIFICATIONS } from './openvex.ts';
export { FIX_LOCATIONS, whereToFix, type FixAdvice, type FixImageRef, type FixLocation } from './fix.ts';
export {
  DEFAULT_MAX_EXCEPTION_MS,
  VULN_EXCEPTION_KIND,
  VULN_EXCEPTION_SCOPES,
  expiryTime,
  isVulnExceptionKey,
  parseVulnExceptions,
  vulnExceptionKey,
  vulnExceptionsOf,
  type ParseVulnExceptionOptions,
  type VulnException,
  type VulnExceptionScopeKind,
} from './exceptions.ts';
export { openVexDocument, openVexStatement, vexDocumentOf, type VexDocument } from './vex-document.ts';
export { purlCovers, suppressionSet, type FindingContext, type Suppression, type SuppressionSet, type VexInput } from './suppress.ts';
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
