/**
 * The one error type of Writ. `code` is stable public API: callers `switch (err.code)`.
 * Messages are for humans and never contain a secret (token, key material).
 */
export const ERROR_CODES = {
  // SPIFFE ID and trust domain
  ERR_SPIFFE_ID_INVALID: 400,
  ERR_TRUST_DOMAIN_INVALID: 400,
  // X.509-SVID
  ERR_X509_MALFORMED: 400,
  ERR_X509_SVID_INVALID: 401,
  ERR_X509_CHAIN_INVALID: 401,
  ERR_X509_EXPIRED: 401,
  ERR_CSR_INVALID: 400,
  // JWT-SVID
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
  // bundles
  ERR_BUNDLE_INVALID: 400,
  ERR_BUNDLE_NOT_FOUND: 404,
  // configuration and input
  ERR_DURATION_INVALID: 400,
  ERR_CONFIG_INVALID: 400,
  ERR_KEY_INVALID: 400,
  ERR_SELECTOR_INVALID: 400,
  ERR_POLICY_INVALID: 400,
  ERR_ACTION_INVALID: 400,
  ERR_PATH_INVALID: 400,
  ERR_FIELD_INVALID: 400,
  ERR_FIELD_UNKNOWN: 400,
  ERR_FIELD_MISSING: 400,
  ERR_JSON_INVALID: 400,
  ERR_PROTOBUF_INVALID: 400,
  ERR_BODY_TOO_LARGE: 413,
  ERR_CONTENT_TYPE: 415,
  ERR_METHOD_NOT_ALLOWED: 405,
  ERR_NOT_FOUND: 404,
  ERR_ENTRY_NOT_FOUND: 404,
  // 400 rather than 409: the contract groups duplicates with other invalid input.
  ERR_ENTRY_EXISTS: 400,
  ERR_CONFLICT: 409,
  ERR_PAGE_TOKEN_INVALID: 400,
  // authentication
  ERR_UNAUTHENTICATED: 401,
  ERR_FORBIDDEN: 403,
  ERR_JOIN_TOKEN_INVALID: 401,
  ERR_JOIN_TOKEN_EXPIRED: 401,
  ERR_JOIN_TOKEN_USED: 401,
  // server side
  ERR_STORE_UNAVAILABLE: 503,
  ERR_STORE: 500,
  ERR_CA_UNAVAILABLE: 503,
  ERR_INTERNAL: 500,
  ERR_REQUEST_FAILED: 502,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class WritError extends Error {
  readonly code: ErrorCode;
  /** The request field the error is about, when there is one (`spiffeId`, `selectors[2]`). */
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, options?: { field?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WritError';
    this.code = code;
    this.field = options?.field;
  }

  /** The HTTP status this error maps to. */
  get status(): number {
    return ERROR_CODES[this.code];
  }

  toJSON(): { code: ErrorCode; message: string; field?: string } {
    return this.field === undefined ? { code: this.code, message: this.message } : { code: this.code, message: this.message, field: this.field };
  }
}

export function isWritError(err: unknown, code?: ErrorCode): err is WritError {
  return err instanceof WritError && (code === undefined || err.code === code);
}
