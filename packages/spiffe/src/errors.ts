/**
 * The one error type of Writ. `code` is stable public API: callers `switch (err.code)`. Each
 * package registers the codes it owns (this one: SPIFFE IDs, SVIDs, bundles); a process that
 * answers over HTTP maps codes to statuses in its own registry. Messages are for humans and
 * never contain a secret (token, key material).
 */
export const SPIFFE_ERROR_CODES = [
  'ERR_SPIFFE_ID_INVALID',
  'ERR_TRUST_DOMAIN_INVALID',
  'ERR_X509_MALFORMED',
  'ERR_X509_SVID_INVALID',
  'ERR_X509_CHAIN_INVALID',
  'ERR_X509_EXPIRED',
  'ERR_CSR_INVALID',
  'ERR_JWT_MALFORMED',
  'ERR_JWT_TOO_LARGE',
  'ERR_JWT_ALG_UNSUPPORTED',
  'ERR_JWT_HEADER_INVALID',
  'ERR_JWT_CLAIM_INVALID',
  'ERR_JWT_AUDIENCE_MISMATCH',
  'ERR_JWT_EXPIRED',
  'ERR_JWT_NOT_YET_VALID',
  'ERR_JWT_KEY_NOT_FOUND',
  'ERR_JWT_SIGNATURE_INVALID',
  'ERR_BUNDLE_INVALID',
  'ERR_BUNDLE_NOT_FOUND',
  'ERR_DURATION_INVALID',
  'ERR_KEY_INVALID',
] as const;

/** The codes this library throws. */
export type ErrorCode = (typeof SPIFFE_ERROR_CODES)[number];

/** What any Writ error code looks like; a client keeps a peer's code only when it has this form. */
export const ERROR_CODE_FORMAT = /^ERR_[A-Z0-9_]{1,60}$/;

export class WritError extends Error {
  /** A registered code (`ERR_SPIFFE_ID_INVALID`); see each package's registry. */
  readonly code: string;
  /** The request field the error is about, when there is one (`spiffeId`, `selectors[2]`). */
  readonly field: string | undefined;

  constructor(code: string, message: string, options?: { field?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WritError';
    this.code = code;
    this.field = options?.field;
  }

  toJSON(): { code: string; message: string; field?: string } {
    return this.field === undefined ? { code: this.code, message: this.message } : { code: this.code, message: this.message, field: this.field };
  }
}

export function isWritError(err: unknown, code?: string): err is WritError {
  return err instanceof WritError && (code === undefined || err.code === code);
}
