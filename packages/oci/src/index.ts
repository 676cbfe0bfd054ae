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
export { parseImageRef, parseDigest, pinnedRef, formatImageRef, MAX_NAME_LENGTH, MAX_REFERENCE_LENGTH } from './reference.ts';
