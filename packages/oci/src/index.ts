export type {
  Descriptor,
  ImageChecker,
  ImageProblem,
  ImageRef,
  ImageRequirements,
  ImageVerdict,
  Manifest,
  RegistryReader,
  SignatureRequirement,
} from './types.ts';
export { OCI_ERROR_CODES, type OciErrorCode } from './errors.ts';
export { parseImageRef, parseDigest, pinnedRef, formatImageRef, isRegistryHost, isRepositoryPath, MAX_NAME_LENGTH, MAX_REFERENCE_LENGTH } from './reference.ts';
export {
  RegistryClient,
  parseWwwAuthenticate,
  MANIFEST_MEDIA_TYPES,
  MAX_MANIFEST_BYTES,
  MAX_REDIRECTS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type Platform,
  type ResolveOptions,
  type ResolvedImage,
  type RegistryClientOptions,
} from './registry.ts';
export {
  RegistryConfig,
  RegistrySettings,
  registryConfig,
  parseRegistryConfig,
  loadRegistryConfig,
  MAX_REGISTRY_CONFIG_BYTES,
  type RegistryConfigOptions,
} from './registry-config.ts';
export {
  BUNDLE_ARTIFACT_TYPE,
  COSIGN_SIG_ARTIFACT_TYPE,
  type CosignFailure,
  type CosignLayout,
  type CosignResult,
  parseCosignKey,
  SIGNATURE_ANNOTATION,
  SIMPLE_SIGNING_MEDIA_TYPE,
  signatureRequirement,
  verifyCosign,
  verifySignature,
} from './cosign.ts';
export { ImageVerifier, registryAllowed, type ImageSource, type ImageVerifierOptions } from './images.ts';
export { readImage, parsePlatform, formatPlatform, MAX_CONFIG_BYTES, MAX_INDEX_PLATFORMS, type ImageFacts, type ReadImageOptions } from './inventory.ts';
