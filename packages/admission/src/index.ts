export type { ImageVulnerabilities, ImageVulnerability, PodLike, PssFinding, PssLevel, VulnerabilityChecker, Violation } from './types.ts';
export { ADMISSION_ERROR_CODES, type AdmissionErrorCode } from './errors.ts';
export { PSS_CONTROLS, PSS_VERSIONS, checkPodSecurity, podSecurityDetail, podSecurityMessage, resolvePssVersion, type PssVersion } from './pss.ts';
export {
  POD_SPEC_KINDS,
  isSignificantPodUpdate,
  ownerName,
  podOf,
  podSecurityApplies,
  podSecurityTarget,
  workloadNames,
  type PodOfResult,
  type PodSecurityRequest,
  type PodSecurityTarget,
} from './workload.ts';
export {
  parseAdmission,
  admissionSetOf,
  admissionKey,
  isAdmissionKey,
  signatureRequirements,
  publicKeyOf,
  controlCovers,
  globMatcher,
  ADMISSION_KINDS,
  ADMISSION_MODES,
  WRIT_CONTROLS,
  type AdmissionPolicy,
  type AdmissionException,
  type AdmissionSet,
  type AdmissionKind,
  type AdmissionMode,
  type ImagePolicy,
  type KeySource,
  type VulnerabilityPolicy,
} from './model.ts';
export {
  evaluate,
  vulnerabilityProblems,
  VULNERABILITIES_NAMED,
  type AdmissionInput,
  type AdmissionOperation,
  type AdmissionVerdict,
  type EvaluateDeps,
  type Finding,
  type JsonPatchOp,
} from './evaluate.ts';
export { readObjects, MAX_MANIFEST_BYTES, type ManifestObject } from './objects.ts';
