export type { PodLike, PssFinding, PssLevel, Violation } from './types.ts';
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
