import { WritError } from '@writ/spiffe';

/** The codes the vulnerability-report library throws (in WritErrors). */
export const VULN_ERROR_CODES = [
  'ERR_VULN_REPORT_TOO_LARGE',
  'ERR_VULN_REPORT_INVALID',
  'ERR_VULN_FORMAT_UNKNOWN',
  'ERR_VULN_SCHEMA_UNSUPPORTED',
  'ERR_PURL_INVALID',
  'ERR_VULN_ID_INVALID',
] as const;

export type VulnErrorCode = (typeof VULN_ERROR_CODES)[number];

export function vulnError(code: VulnErrorCode, message: string, field?: string): WritError {
  return new WritError(code, message, field === undefined ? undefined : { field });
}
