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
