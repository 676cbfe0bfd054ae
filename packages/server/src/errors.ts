/**
 * The server's error registry (public API, like fastify's errors.js): the codes the server owns,
 * and the HTTP status of every code it can answer with, its libraries' included. A code missing
 * here answers 500, and the registry test fails first.
 */
import type { ErrorCode as SpiffeErrorCode } from '@writ/spiffe';
import type { POLICY_ERROR_CODES } from '@writ/policy';
import type { OciErrorCode } from '@writ/oci';
import type { VulnErrorCode } from '@writ/vuln';
import type { BrokerErrorCode } from '@writ/broker';
import type { TransparencyErrorCode } from '@writ/transparency';

export const SERVER_ERROR_CODES = {
  // input
  ERR_SELECTOR_INVALID: 400,
  ERR_FIELD_INVALID: 400,
  ERR_FIELD_UNKNOWN: 400,
  ERR_FIELD_MISSING: 400,
  ERR_JSON_INVALID: 400,
  ERR_PROTOBUF_INVALID: 400,
  ERR_CONFIG_INVALID: 400,
  ERR_PAGE_TOKEN_INVALID: 400,
  // 400 rather than 409: the contract groups duplicates with other invalid input.
  ERR_ENTRY_EXISTS: 400,
  ERR_ENTRY_RESERVED_ID: 400,
  ERR_POLICY_TEST_FAILED: 400,
  // admission webhook (engineer E)
  ERR_ADMISSION_REVIEW_INVALID: 400,
  // the decision budget ran out (an abort reason inside a verdict, never an HTTP answer of its own)
  ERR_ADMISSION_BUDGET: 503,
  ERR_BODY_TOO_LARGE: 413,
  ERR_URI_TOO_LONG: 414,
  ERR_CONTENT_TYPE: 415,
  ERR_HEADERS_TOO_LARGE: 431,
  ERR_BAD_REQUEST: 400,
  ERR_METHOD_NOT_ALLOWED: 405,
  ERR_NOT_FOUND: 404,
  ERR_ENTRY_NOT_FOUND: 404,
  ERR_CONFLICT: 409,
  // OpenVEX ingest (issue 13): a document version older than, or equal with other content to, the one stored
  ERR_VEX_VERSION_CONFLICT: 409,
  // federation relationships (issue 14); a peer's bundle endpoint failing is upstream trouble (502/504)
  ERR_FEDERATION_EXISTS: 409,
  ERR_FEDERATION_NOT_FOUND: 404,
  ERR_BUNDLE_ENDPOINT_UNREACHABLE: 502,
  ERR_BUNDLE_ENDPOINT_AUTH: 502,
  ERR_BUNDLE_ENDPOINT_REDIRECT: 502,
  ERR_BUNDLE_ENDPOINT_STATUS: 502,
  ERR_BUNDLE_ENDPOINT_TOO_LARGE: 502,
  ERR_BUNDLE_ENDPOINT_INVALID: 502,
  ERR_BUNDLE_TRUST_DOMAIN_MISMATCH: 502,
  ERR_BUNDLE_SEQUENCE_STALE: 502,
  ERR_BUNDLE_ENDPOINT_TIMEOUT: 504,
  // learning mode (issue 15): a window to stop that is not there, a proposal with nothing observed, a promote without a shadow
  ERR_LEARNING_NOT_FOUND: 404,
  ERR_NOTHING_LEARNED: 409,
  ERR_NO_SHADOW_POLICY: 409,
  // `writ server backup` / `restore` (command-line only, never an HTTP answer)
  ERR_BACKUP_CORRUPT: 400,
  ERR_BACKUP_UNSUPPORTED: 400,
  ERR_BACKUP_KEK_REQUIRED: 400,
  ERR_RESTORE_TARGET_NOT_EMPTY: 409,
  // alerts (issue 15, section 3): undo of an alert whose rule did nothing
  ERR_ALERT_NO_RESPONSE: 409,
  // the dashboard (issue 15): a graph over more than a week, a forged, signed-out or expired session,
  // a write with a session but not from the dashboard's page, the bundle not built
  ERR_GRAPH_WINDOW_TOO_LONG: 400,
  ERR_SESSION_INVALID: 401,
  ERR_CSRF_ORIGIN: 403,
  ERR_CSRF_TOKEN: 403,
  ERR_UI_NOT_BUILT: 503,
  // the audit log (issue 15): no checkpoint signed yet (a log that has never had a leaf)
  ERR_AUDIT_NO_CHECKPOINT: 404,
  // authentication
  ERR_UNAUTHENTICATED: 401,
  ERR_FORBIDDEN: 403,
  ERR_JOIN_TOKEN_INVALID: 401,
  ERR_JOIN_TOKEN_EXPIRED: 401,
  ERR_JOIN_TOKEN_USED: 401,
  // the server's side
  ERR_STORE_UNAVAILABLE: 503,
  ERR_CA_UNAVAILABLE: 503,
  ERR_SERVER_DRAINING: 503,
  ERR_INTERNAL: 500,
} as const;

const SPIFFE_STATUS: Record<SpiffeErrorCode, number> = {
  ERR_SPIFFE_ID_INVALID: 400,
  ERR_TRUST_DOMAIN_INVALID: 400,
  ERR_X509_MALFORMED: 400,
  ERR_X509_SVID_INVALID: 401,
  ERR_X509_CHAIN_INVALID: 401,
  ERR_X509_EXPIRED: 401,
  ERR_CSR_INVALID: 400,
  ERR_JWT_MALFORMED: 401,
  ERR_JWT_TOO_LARGE: 401,
  ERR_JWT_ALG_UNSUPPORTED: 401,
  ERR_JWT_HEADER_INVALID: 401,
  ERR_JWT_CLAIM_INVALID: 401,
  ERR_JWT_AUDIENCE_MISMATCH: 401,
  ERR_JWT_EXPIRED: 401,
  ERR_JWT_NOT_YET_VALID: 401,
  ERR_JWT_KEY_NOT_FOUND: 401,
  ERR_JWT_SIGNATURE_INVALID: 401,
  ERR_BUNDLE_INVALID: 400,
  ERR_BUNDLE_NOT_FOUND: 404,
  ERR_DURATION_INVALID: 400,
  ERR_KEY_INVALID: 400,
};

const POLICY_STATUS: Record<(typeof POLICY_ERROR_CODES)[number], number> = {
  ERR_POLICY_INVALID: 400,
  ERR_ACTION_INVALID: 400,
  ERR_PATH_INVALID: 400,
  ERR_FIELD_INVALID: 400,
};

/** Registry trouble is the server's upstream failing (502/504), not the caller's fault; a bad reference is. */
const OCI_STATUS: Record<OciErrorCode, number> = {
  ERR_IMAGE_REF_INVALID: 400,
  ERR_REGISTRY_CONFIG_INVALID: 400,
  ERR_IMAGE_NOT_FOUND: 404,
  ERR_REGISTRY_UNREACHABLE: 502,
  ERR_REGISTRY_AUTH: 502,
  ERR_REGISTRY_RESPONSE_INVALID: 502,
  ERR_DIGEST_MISMATCH: 502,
  ERR_MANIFEST_TOO_LARGE: 502,
  ERR_BLOB_TOO_LARGE: 502,
  ERR_REGISTRY_TIMEOUT: 504,
};

/** A report that cannot be read is the caller's: 400, and 413 for one over the limits. */
const VULN_STATUS: Record<VulnErrorCode, number> = {
  ERR_VULN_REPORT_TOO_LARGE: 413,
  ERR_VULN_REPORT_INVALID: 400,
  ERR_VULN_FORMAT_UNKNOWN: 400,
  ERR_VULN_SCHEMA_UNSUPPORTED: 400,
  ERR_PURL_INVALID: 400,
  ERR_VULN_ID_INVALID: 400,
};

/** RFC 6749 section 5.2: invalid_client is a 401, every other token endpoint error a 400; a token a receiver refuses is its 401/403. */
const BROKER_STATUS: Record<BrokerErrorCode, number> = {
  ERR_TOKEN_REQUEST_INVALID: 400,
  ERR_TOKEN_CLIENT_INVALID: 401,
  ERR_TOKEN_GRANT_INVALID: 400,
  ERR_TOKEN_CLIENT_UNAUTHORIZED: 400,
  ERR_TOKEN_GRANT_TYPE_UNSUPPORTED: 400,
  ERR_TOKEN_SCOPE_INVALID: 400,
  ERR_TOKEN_TARGET_INVALID: 400,
  ERR_TOKEN_INVALID: 401,
  ERR_TOKEN_SCOPE_INSUFFICIENT: 403,
  ERR_TOKEN_DEPTH_EXCEEDED: 403,
};

/** A range, size or proof request the audit log cannot answer is the caller's: 400. */
const TRANSPARENCY_STATUS: Record<TransparencyErrorCode, number> = {
  ERR_AUDIT_PROOF_INVALID: 400,
  ERR_AUDIT_RANGE: 400,
  ERR_AUDIT_INCONSISTENT: 400,
  ERR_AUDIT_CHECKPOINT_MALFORMED: 400,
  ERR_AUDIT_SIGNATURE_INVALID: 400,
  ERR_AUDIT_KEY_INVALID: 400,
  ERR_AUDIT_ENTRY_MALFORMED: 400,
  // Only the server encodes pages (a stored body past the format's limit): never the caller's fault.
  ERR_AUDIT_PAGE_MALFORMED: 500,
};

/** The HTTP status of every code the server answers with. */
export const HTTP_STATUS: Readonly<Record<string, number>> = {
  ...SPIFFE_STATUS,
  ...POLICY_STATUS,
  ...OCI_STATUS,
  ...VULN_STATUS,
  ...BROKER_STATUS,
  ...TRANSPARENCY_STATUS,
  ...SERVER_ERROR_CODES,
};

export function httpStatusOf(code: string): number {
  return Object.hasOwn(HTTP_STATUS, code) ? HTTP_STATUS[code]! : 500;
}
