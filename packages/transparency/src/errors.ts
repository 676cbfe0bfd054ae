import { WritError } from '@writ/spiffe';

/**
 * The codes @writ/transparency throws. Stable public API; each is listed in docs/api.md. Misuse by
 * the caller (a hash that is not 32 bytes, a size that is not an integer) throws these as well,
 * because sizes and hashes usually arrive from a client or a file, not from code.
 */
export const TRANSPARENCY_ERROR_CODES = [
  /** An inclusion or consistency proof that does not lead to the root it is checked against, or has the wrong length. */
  'ERR_AUDIT_PROOF_INVALID',
  /** A tree size, leaf index or range that does not exist: index >= size, from > to, a negative or non-integer number. */
  'ERR_AUDIT_RANGE',
  /** Two tree heads that cannot both be true: the same size with different roots, or a failed consistency proof. */
  'ERR_AUDIT_INCONSISTENT',
  /** A checkpoint text that is not a C2SP tlog-checkpoint: missing lines, bad size or hash, too large. */
  'ERR_AUDIT_CHECKPOINT_MALFORMED',
  /** A signed note that is malformed, carries no valid signature of a known key, or a known key's signature that fails. */
  'ERR_AUDIT_SIGNATURE_INVALID',
  /** A note signer or verifier key string that is not in the golang.org/x/mod/sumdb/note format, or a bad key name. */
  'ERR_AUDIT_KEY_INVALID',
  /** An audit leaf that does not decode (too short, unknown version). */
  'ERR_AUDIT_ENTRY_MALFORMED',
  /** A page of audit entries in the compact format (application/x-writ-audit-entries) that does not decode: truncated, bad lengths, trailing bytes, a bad range. */
  'ERR_AUDIT_PAGE_MALFORMED',
] as const;

export type TransparencyErrorCode = (typeof TRANSPARENCY_ERROR_CODES)[number];

/** The one error type of this package: a WritError whose code is one of TRANSPARENCY_ERROR_CODES. */
export class TransparencyError extends WritError {
  declare readonly code: TransparencyErrorCode;

  constructor(code: TransparencyErrorCode, message: string, options?: { field?: string; cause?: unknown }) {
    super(code, message, options);
    this.name = 'TransparencyError';
  }
}
