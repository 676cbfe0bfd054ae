export { ERROR_CODES, WritError, isWritError, type ErrorCode } from './errors.ts';
export { parseSpiffeId, parseTrustDomain, formatSpiffeId, isSpiffeId, trustDomainId, MAX_SPIFFE_ID_BYTES, MAX_TRUST_DOMAIN_BYTES, type SpiffeId } from './id.ts';
export { toPem, fromPem } from './pem.ts';
export {
  parseCertificate, parseCertificatesPem, certificatesToPem, publicKeyOf, isSignedBy, verifyX509Svid, leafSpiffeId,
  issueCertificate, buildName, extension, keyUsageBits, keyIdentifier, keyTypeOf, parseCsr, createCsr, OID, KU, KEY_TYPES,
  type Certificate, type CertificateTemplate, type Issuer, type KeyType, type Signer, type VerifiedX509Svid, type X509BundleSource,
} from './x509.ts';
export {
  signJwtSvid, validateJwtSvid, verifyJws, JwtSvidValidator, jwtAlgorithmFor, JWT_ALGORITHMS, MAX_JWT_BYTES, DEFAULT_LEEWAY_SECONDS,
  type JwtAlgorithm, type JwtClaims, type JwtBundleSource, type ValidatedJwtSvid, type JwtValidationOptions,
} from './jwt.ts';
export { parseBundleJson, formatBundleJson, bundleToPem, parseBundlePem, jwkOf, MAX_BUNDLE_BYTES, type TrustBundle, type BundleJson } from './bundle.ts';
export { parseDuration, formatDuration } from './duration.ts';
