/**
 * The codes @writ/oci throws (in WritErrors from @writ/spiffe). Stable public API; each is listed
 * in docs/api.md with what it means.
 */
export const OCI_ERROR_CODES = [
  /** An image reference that the distribution reference grammar refuses. */
  'ERR_IMAGE_REF_INVALID',
  /** The registry settings file (`--registry-config`) is malformed. */
  'ERR_REGISTRY_CONFIG_INVALID',
  /** No answer from the registry: connection refused, DNS, TLS, or a 5xx/429 status. */
  'ERR_REGISTRY_UNREACHABLE',
  /** The registry did not answer within the request timeout or the caller's budget. */
  'ERR_REGISTRY_TIMEOUT',
  /** The registry refused the credentials (or asked for some and none are configured). */
  'ERR_REGISTRY_AUTH',
  /** The tag, digest or blob does not exist in that repository. */
  'ERR_IMAGE_NOT_FOUND',
  /** The registry answered something that is not a valid answer: garbage, wrong media type, redirect loop, unexpected status. */
  'ERR_REGISTRY_RESPONSE_INVALID',
  /** The bytes the registry sent do not hash to the digest asked for or announced. */
  'ERR_DIGEST_MISMATCH',
  /** A manifest, index or referrers list larger than 4 MiB. */
  'ERR_MANIFEST_TOO_LARGE',
  /** A blob larger than the caller's limit. */
  'ERR_BLOB_TOO_LARGE',
] as const;

export type OciErrorCode = (typeof OCI_ERROR_CODES)[number];
